"""Sample from a training checkpoint with a KV cache: the quickest sanity check of a run.

    python pretrain/generate.py --load_from out/run/iter-020000-ckpt.pth --prompt "The meaning of" --top_k 50 \
        --temperature 0.8
"""

from pathlib import Path
from typing import Optional

from lit_gpt.core.errors import run_cli
from lit_gpt.core.flags import run_function

SEED_MAX = 2**64 - 1


def sample(
    load_from: Path,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    num_samples: int = 1,
    seed: int = 1234,
    tokenizer: Optional[str] = None,
    use_cache: bool = True,
    attn_backend: str = "auto",
) -> list[str]:
    """Print `num_samples` continuations of `prompt`.

    A run trained with a fixed token at position p (e.g. BOS at 0) gets that token inserted at p, as in
    training; the printed text leaves it out, so it starts with the prompt as typed.

    Args:
        load_from: Training checkpoint (.pth).
        prompt: Text to continue (no BOS is added, as in training).
        max_new_tokens: Tokens to generate, >= 0 (prompt + new tokens must fit the block size).
        temperature: 0 is greedy; otherwise (a finite number > 0) sample from softmax(logits / temperature);
            a tiny temperature samples as greedy does, never overflowing.
        top_k: Sample only among the k >= 1 most likely tokens (unset, or k at or beyond the vocabulary: all).
        num_samples: Number of continuations (>= 1).
        seed: Random seed for sampling, 0..2**64-1 (what torch's generator takes).
        tokenizer: Tokenizer file or folder (default: the run's own).
        use_cache: Decode with the KV cache (off: recompute the whole sequence per token).
        attn_backend: Attention kernel, `auto | eager | sdpa | flex | flash | xformers`: a run-time choice
            that changes speed, never what is computed.
    """
    import torch

    from lit_gpt.data.transforms import InputTransforms
    from lit_gpt.measurement.evaluation import tokenizer_for, train_args
    from lit_gpt.model.attention import AttentionRuntime
    from lit_gpt.model.generate import GenerationError, check_sampling, generate, without_positions
    from lit_gpt.training.checkpoint import load_model

    check_sampling(max_new_tokens, temperature, top_k)
    if num_samples < 1:
        raise GenerationError(f"num_samples must be >= 1, got {num_samples}")
    if not 0 <= seed <= SEED_MAX:
        raise GenerationError(f"seed must be in 0..{SEED_MAX} (what torch's generator takes), got {seed}")
    runtime = AttentionRuntime(attn_backend)
    model, ckpt = load_model(load_from)
    model.set_attention_runtime(runtime)
    tok = tokenizer_for(train_args(ckpt), tokenizer)
    ids = torch.tensor(tok.encode(prompt), dtype=torch.long)
    fixed = InputTransforms.of_run(train_args(ckpt)).fixed_token
    inserted = dict([fixed]) if fixed else {}
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for _ in range(num_samples):
        out = generate(
            model,
            ids,
            max_new_tokens,
            temperature,
            top_k,
            use_cache,
            eos_id=tok.eos_id,
            inserted_tokens=inserted,
            generator=generator,
        )
        outputs.append(tok.decode(without_positions(out, inserted)))
        print(outputs[-1])
        print("-" * 40)
    return outputs


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and run `sample`."""
    run_cli(lambda: run_function(sample, argv))
