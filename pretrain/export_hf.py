"""Export a training checkpoint as a Hugging Face LLaMA or GPT-2 folder (the same as `sink-export-hf`).

python pretrain/export_hf.py --load_from checkpoints/run/iter-000700-ckpt.pth --out_dir out/hf_run
"""

from lit_gpt.cli.export_hf import main

if __name__ == "__main__":
    main()
