"""Sample from a training checkpoint with a KV cache: the quickest sanity check of a run.

    python pretrain/generate.py --load_from out/run/iter-020000-ckpt.pth --prompt "The meaning of" --top_k 50 \
        --temperature 0.8
"""

import sys
from pathlib import Path
from typing import Optional

import torch
from jsonargparse import CLI

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lit_gpt.errors import run_cli  # noqa: E402
from lit_gpt.evaluation import input_transforms, load_checkpoint, tokenizer_for, train_args  # noqa: E402
from lit_gpt.generate import generate  # noqa: E402


def main(
    load_from: Path,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    num_samples: int = 1,
    seed: int = 1234,
    tokenizer: Optional[str] = None,
    use_cache: bool = True,
) -> list[str]:
    """Print `num_samples` continuations of `prompt`.

    Args:
        load_from: Training checkpoint (.pth).
        prompt: Text to continue (no BOS is added, as in training).
        max_new_tokens: Tokens to generate (prompt + new tokens must fit the block size).
        temperature: 0 is greedy; otherwise sample from softmax(logits / temperature).
        top_k: Sample only among the k most likely tokens.
        num_samples: Number of continuations.
        seed: Random seed for sampling.
        tokenizer: Tokenizer file or folder (default: the run's own).
        use_cache: Decode with the KV cache (off: recompute the whole sequence per token).
    """
    model, ckpt = load_checkpoint(load_from)
    tok = tokenizer_for(train_args(ckpt), tokenizer)
    ids = torch.tensor(tok.encode(prompt), dtype=torch.long)
    fixed = input_transforms(train_args(ckpt))["fixed_token"]
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for _ in range(num_samples):
        out = generate(model, ids, max_new_tokens, temperature, top_k, use_cache, eos_id=tok.eos_id,
                       forced_tokens=dict([fixed]) if fixed else None, generator=generator)
        outputs.append(tok.decode(out.tolist()))
        print(outputs[-1])
        print("-" * 40)
    return outputs


if __name__ == "__main__":
    run_cli(lambda: CLI(main, as_positional=False))
