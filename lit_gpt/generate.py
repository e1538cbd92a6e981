"""Sampling from a `GPT`: greedy, temperature and top-k, with or without a KV cache.

With the cache the prompt is run once and every new token costs one single-token forward pass; without
it the whole sequence is recomputed each step. Both see the same absolute positions and masks, so
greedy decoding gives the same tokens either way (tests check this for every attention variant).
"""

from __future__ import annotations

from typing import Optional

import torch

from lit_gpt.errors import UserError


class GenerationError(UserError, ValueError):
    """A prompt or length that cannot be generated from; the message says why."""


def next_token(logits: torch.Tensor, vocab_size: int, temperature: float = 0.0, top_k: Optional[int] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Pick one token per row of `logits` (B, V); rows beyond `vocab_size` (padding) are never chosen.

    temperature 0 is greedy; otherwise sample from softmax(logits / temperature), restricted to the
    `top_k` most likely tokens when given.
    """
    logits = logits[:, :vocab_size].float()
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < vocab_size:
        threshold = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: Optional[int] = None, use_cache: bool = True, eos_id: Optional[int] = None,
             forced_tokens: Optional[dict[int, int]] = None,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Extend `prompt` (T,) or (B, T) by up to `max_new_tokens` tokens; returns prompt + continuation.

    `forced_tokens` {position: id} overwrites those positions (prompt or generated), e.g. a run's fixed
    token at position p, so the model sees its inputs as in training. Generation stops early once every
    row has produced `eos_id`.
    """
    cfg = model.config
    squeeze = prompt.dim() == 1
    tokens = prompt[None] if squeeze else prompt
    forced = forced_tokens or {}
    total = tokens.shape[1] + max_new_tokens
    if tokens.shape[1] == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    if total > cfg.block_size:
        raise GenerationError(f"prompt ({tokens.shape[1]}) + max_new_tokens ({max_new_tokens}) = {total} exceeds "
                         f"block_size={cfg.block_size}")
    if tokens.shape[1] < cfg.prefix_tokens:
        raise GenerationError(f"a prefix LM (prefix_tokens={cfg.prefix_tokens}) is conditioned on its whole prefix; "
                         f"give a prompt of at least {cfg.prefix_tokens} tokens (got {tokens.shape[1]})")
    tokens = tokens.clone()
    for pos, token_id in forced.items():
        if pos < tokens.shape[1]:
            tokens[:, pos] = token_id
    model.eval()
    cache = model.new_cache() if use_cache else None
    logits = model(tokens, cache=cache)[:, -1]
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    for _ in range(max_new_tokens):
        token = next_token(logits, cfg.vocab_size, temperature, top_k, generator)
        if tokens.shape[1] in forced:
            token = torch.full_like(token, forced[tokens.shape[1]])
        tokens = torch.cat((tokens, token[:, None]), dim=1)
        if eos_id is not None:
            finished |= token == eos_id
            if bool(finished.all()):
                break
        if tokens.shape[1] == total:
            break
        logits = (model(token[:, None], cache=cache) if use_cache else model(tokens))[:, -1]
    return tokens[0] if squeeze else tokens


__all__ = ["GenerationError", "generate", "next_token"]
