"""Attention-sink evaluation of any Hugging Face causal LM, or of several compared in one table, with the
metrics used for our own checkpoints (see pretrain/eval_sink_pretrain.py).

    python eval_sink_open_source.py --model path/to/hf_folder --json out/model.json --plots out/model
    python eval_sink_open_source.py --model gpt2_folder --model llama_folder --plots out/plots
    python eval_sink_open_source.py --models models.txt --add_bos true --json out/sinks.json

Key and value norms are reported for architectures with separate k_proj / v_proj (LLaMA, Mistral,
Qwen, Gemma, OPT, Phi, GPT-J, ...) and for GPT-2, Phi-3, GPT-NeoX and Bloom; `--add_bos auto` starts
the probe windows with BOS where the model's tokenizer adds one. Details: `lit_gpt/cli/eval_hf.py`.
"""

from lit_gpt.cli.eval_hf import main

if __name__ == "__main__":
    main()
