"""StreamingLLM-style evaluation: perplexity on a long text with a bounded KV cache.

Three cache policies per model (Xiao et al. 2023, "Efficient Streaming Language Models with Attention
Sinks"):
- `full`: every key stays cached (dense attention);
- `window`: only the most recent W tokens (the current one included) stay cached;
- `sink`: the first n real tokens stay cached as well as the most recent W.
Learned sink tokens (config `sink_tokens`) are part of the model and are always kept; key slots live
outside the cache.

Positions follow StreamingLLM (its section 3.2): they are slots in the cache, not places in the text
(`positions_in_cache`, see `lit_gpt.model.attention.cache`). After each eviction the kept entries are
numbered 0..n-1 and the new token gets n, so the kept first tokens sit right before the window and no
distance exceeds window + kept tokens: a model trained on short sequences is measured at distances it
was trained on. Renumbering leaves the distances inside a contiguous window alone, so a window cache on a
RoPE or ALiBi model still computes what the same weights compute with a sliding-window mask.

Renumbering needs positions that only attention reads. With absolute or learnable position embeddings a
token's position is added to its hidden state when it enters, so it cannot be moved later (and every new
token would enter at the same slot); a prefix LM's prefix is a range of positions. Those models keep text
positions (`position_rule` says which rule a model gets, and results record it). `full` never evicts, so
it uses text positions throughout, past the training length when the text is longer: a reference, not a
target.

If sinks matter, `window` blows up once the first tokens are evicted while `sink` stays near `full`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lit_gpt.core.errors import UserError

POLICIES = ("full", "window", "sink")
# The position rules of the bounded caches, recorded with every result (results from before the rule was
# recorded numbered every model's positions by the text).
IN_CACHE, TEXT = "in_cache", "text"


class StreamingError(UserError, ValueError):
    """Settings or text the streaming evaluation cannot use; the message says how to fix them."""


@dataclass(frozen=True)
class CachePolicy:
    """Which cache entries survive: the first `keep_first` real tokens and the last `window` ones.

    window 0 means unbounded (full attention).
    """

    window: int = 0
    keep_first: int = 0

    def kept(self, n_cached: int, n_model_sinks: int) -> torch.Tensor:
        """Indices to keep of `n_cached` entries before a new token arrives (it takes one window slot)."""
        first = min(n_model_sinks + self.keep_first, n_cached)
        recent_start = max(first, n_cached - (self.window - 1))
        return torch.cat((torch.arange(first), torch.arange(recent_start, n_cached)))


def position_rule(config) -> str:
    """StreamingLLM's in-cache positions where only attention reads positions; text positions where a
    position is part of the hidden state (absolute, learnable) or marks a prefix (prefix LM)."""
    if config.pos_embedding in ("absolute", "learnable") or config.prefix_tokens > 0:
        return TEXT
    return IN_CACHE


def policy(name: str, window: int, n_sink: int) -> CachePolicy:
    if name == "full":
        return CachePolicy()
    if name == "window":
        return CachePolicy(window)
    if name == "sink":
        return CachePolicy(window, n_sink)
    raise StreamingError(f"unknown cache policy {name!r}; use one of {', '.join(POLICIES)}")


@torch.no_grad()
def token_nlls(model, tokens: torch.Tensor, cache_policy: CachePolicy, chunk_size: int = 0) -> torch.Tensor:
    """Negative log-likelihood of tokens[1:] given the preceding ones, under a cache policy -> (N - 1,).

    `tokens` is one long sequence (N,). Tokens are fed one at a time once the cache is full; before
    that (and always for `full`) in chunks of `chunk_size` (default block_size), which is exact because
    nothing is evicted inside a chunk.
    """
    cfg = model.config
    model.eval()
    tokens = tokens.reshape(1, -1)
    n = tokens.shape[1]
    chunk_size = chunk_size or cfg.block_size
    bounded = cache_policy.window > 0
    prefill = min(n, cache_policy.keep_first + cache_policy.window) if bounded else n
    cache = model.new_cache(positions_in_cache=position_rule(cfg) == IN_CACHE)
    pieces = []
    for start in range(0, prefill, chunk_size):
        pieces.append(model(tokens[:, start : min(start + chunk_size, prefill)], cache=cache)[0])
    for pos in range(prefill, n):
        cache.keep(cache_policy.kept(len(cache), cfg.sink_tokens))
        pieces.append(model(tokens[:, pos : pos + 1], cache=cache)[0])
    logits = torch.cat(pieces)[:-1, : cfg.vocab_size].float()
    return F.cross_entropy(logits, tokens[0, 1:], reduction="none")


def long_text(texts, tokenizer, n_tokens: int) -> torch.Tensor:
    """The first `n_tokens` of the documents packed back to back with EOS after each, as in training."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text) + [tokenizer.eos_id])
        if len(ids) >= n_tokens:
            return torch.tensor(ids[:n_tokens], dtype=torch.long)
    raise StreamingError(
        f"the documents hold only {len(ids)} tokens; need {n_tokens} (use more text or a smaller --length)"
    )


def streaming_perplexities(
    model, tokens: torch.Tensor, window: int, n_sink: int = 4, policies: tuple[str, ...] = POLICIES
) -> dict:
    """Perplexity (and mean NLL) of `tokens` (N,) under each policy, plus the settings used."""
    if window < 1:
        raise StreamingError(f"window must be >= 1, got {window}")
    if n_sink < 0:
        raise StreamingError(f"n_sink must be >= 0 (0 keeps no first tokens), got {n_sink}")
    if tokens.numel() < 2:
        raise StreamingError("need at least two tokens to measure perplexity")
    cfg = model.config
    if cfg.pos_embedding == "learnable" and tokens.numel() > cfg.block_size:
        raise StreamingError(
            f"a learnable-position model has positions for {cfg.block_size} tokens and streams by text positions, "
            f"so it cannot score {tokens.numel()}; use at most {cfg.block_size} tokens (--length)"
        )
    result: dict[str, Any] = {
        "n_tokens": int(tokens.numel()),
        "window": window,
        "n_sink": n_sink,
        "positions": position_rule(model.config),
        "nll": {},
        "perplexity": {},
    }
    for name in policies:
        nll = float(token_nlls(model, tokens, policy(name, window, n_sink)).mean())
        result["nll"][name] = nll
        result["perplexity"][name] = math.exp(nll)
    return result


__all__ = [
    "CachePolicy",
    "POLICIES",
    "IN_CACHE",
    "TEXT",
    "position_rule",
    "StreamingError",
    "long_text",
    "policy",
    "streaming_perplexities",
    "token_nlls",
]
