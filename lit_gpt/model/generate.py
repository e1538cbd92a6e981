"""Sampling from a `GPT`: greedy, temperature and top-k, with or without a KV cache.

With the cache the prompt is run once and every new token costs one single-token forward pass; without
it the whole sequence is recomputed each step. Both see the same absolute positions and masks, so
greedy decoding gives the same tokens either way (tests check this for every attention variant).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from lit_gpt.core.errors import UserError


class GenerationError(UserError, ValueError):
    """A prompt or length that cannot be generated from; the message says why."""


def next_token(
    logits: torch.Tensor,
    vocab_size: int,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Pick one token per row of `logits` (B, V); rows beyond `vocab_size` (padding) are never chosen.

    temperature 0 is greedy; otherwise sample from softmax(logits / temperature), restricted to the
    `top_k` most likely tokens when given (a `top_k` at or beyond `vocab_size` keeps every token). The
    largest logit is subtracted before dividing, so however small the temperature, nothing overflows:
    as it tends to 0 the sample tends to the greedy choice (ties shared uniformly).
    """
    logits = logits[:, :vocab_size].float()
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if not bool(torch.isfinite(logits).all()):
        raise GenerationError(
            "the model's logits hold NaN or infinity, so there is no distribution to sample; "
            "the checkpoint's weights are damaged or diverged (use an earlier checkpoint)"
        )
    # In float64, so a temperature below float32's smallest number is not rounded to 0 (0 / 0 is NaN).
    logits = (logits.double() - logits.max(dim=-1, keepdim=True).values.double()) / temperature
    if top_k is not None and top_k < vocab_size:
        threshold = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def check_sampling(max_new_tokens: int, temperature: float, top_k: Optional[int]) -> None:
    """Refuse settings without a meaning instead of failing inside torch."""
    if max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be >= 0 (0 scores the prompt only), got {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise GenerationError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise GenerationError(f"top_k must be >= 1 (leave it unset to sample from every token), got {top_k}")


def insert_tokens(prompt: torch.Tensor, inserted: dict[int, int]) -> torch.Tensor:
    """(B, T) prompt with each {position: id} of `inserted` that falls inside it put in at that position,
    the prompt's own tokens shifted right (positions in increasing order, as in the final sequence)."""
    tokens = prompt
    for position in sorted(inserted):
        if position <= tokens.shape[1]:
            column = torch.full_like(tokens[:, :1], inserted[position])
            tokens = torch.cat((tokens[:, :position], column, tokens[:, position:]), dim=1)
    return tokens


@torch.no_grad()
def generate(
    model,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    use_cache: bool = True,
    eos_id: Optional[int] = None,
    inserted_tokens: Optional[dict[int, int]] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Extend `prompt` (T,) or (B, T) by up to `max_new_tokens` tokens; returns the whole sequence.

    `inserted_tokens` {position: id} puts those ids at those positions of the sequence, e.g. a run's fixed
    token at position p (BOS at 0), so the model sees its inputs as in training: inside the prompt the
    prompt's tokens move right (the user's text is kept whole), beyond it the id is emitted instead of a
    sample. Generation stops early once every row has produced `eos_id`.
    """
    cfg = model.config
    check_sampling(max_new_tokens, temperature, top_k)
    squeeze = prompt.dim() == 1
    if prompt.shape[-1] == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    forced = inserted_tokens or {}
    tokens = insert_tokens(prompt[None] if squeeze else prompt, forced)
    total = tokens.shape[1] + max_new_tokens
    if total > cfg.block_size:
        raise GenerationError(
            f"prompt ({tokens.shape[1]} tokens with the run's inserted ones) + max_new_tokens "
            f"({max_new_tokens}) = {total} exceeds block_size={cfg.block_size}"
        )
    if tokens.shape[1] < cfg.prefix_tokens:
        raise GenerationError(
            f"a prefix LM (prefix_tokens={cfg.prefix_tokens}) is conditioned on its whole prefix; "
            f"give a prompt of at least {cfg.prefix_tokens} tokens (got {tokens.shape[1]})"
        )
    if int(tokens.max()) >= cfg.vocab_size:
        raise GenerationError(
            f"the prompt holds token id {int(tokens.max())}, beyond the model's "
            f"vocab_size={cfg.vocab_size}; use the tokenizer the model was trained with"
        )
    model.eval()
    if max_new_tokens == 0:
        return tokens[0] if squeeze else tokens
    cache = model.new_cache() if use_cache else None
    logits = model(tokens, cache=cache)[:, -1]
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    for _ in range(max_new_tokens):
        token = next_token(logits, cfg.vocab_size, temperature, top_k, generator)
        is_forced = tokens.shape[1] in forced
        if is_forced:
            token = torch.full_like(token, forced[tokens.shape[1]])
        tokens = torch.cat((tokens, token[:, None]), dim=1)
        if eos_id is not None and not is_forced:
            finished |= token == eos_id
            if bool(finished.all()):
                break
        if tokens.shape[1] == total:
            break
        logits = (model(token[:, None], cache=cache) if use_cache else model(tokens))[:, -1]
    return tokens[0] if squeeze else tokens


def without_positions(tokens: torch.Tensor, positions) -> list[int]:
    """The ids of a 1-D sequence with `positions` left out (the inserted tokens, for showing the text)."""
    skip = set(positions)
    return [int(token) for index, token in enumerate(tokens.tolist()) if index not in skip]


__all__ = ["GenerationError", "check_sampling", "generate", "insert_tokens", "next_token", "without_positions"]
