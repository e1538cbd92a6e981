"""Attention-sink evaluation of a Hugging Face causal LM (LLaMA family), with the metrics used for our
own checkpoints (see pretrain/eval_sink_pretrain.py).

    python eval_sink_open_source.py --model path/to/hf_folder --json out/llama.json --plots out/llama
"""

from lit_gpt.cli.eval_hf import main

if __name__ == "__main__":
    main()
