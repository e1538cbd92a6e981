"""Whether the probe windows of a Hugging Face model start with a BOS token, and which id that is.

Why: a model trained with a BOS before every text puts its attention sink on that BOS, so probing it
without one measures it outside its training distribution; a model trained without one (GPT-2,
GPT-NeoX) is probed like our own runs, text from the first token on. `auto` does what the model's
tokenizer does when it encodes a text: `add_bos_token` of tokenizer_config.json where that file says,
else whether the tokenizer.json post-processor puts a token first (an export of a run trained with a BOS
says so in both). The BOS takes the place of the window's first token (`load_probe_windows`), as in our
training and `sink-eval`, whichever model it is: one rule, so an exported run gives its checkpoint's numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lit_gpt.data.tokenizer import Tokenizer
from lit_gpt.hf.io import HFError, read_hf_config, read_json

BOS_CHOICES = ("auto", "true", "false")
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def _next_to(tokenizer: Tokenizer, name: str) -> dict:
    """A HF tokenizer side file saved next to the tokenizer file ({} when there is none)."""
    path = tokenizer.path.parent / name
    return read_json(path, "tokenizer files") if path.is_file() else {}


def tokenizer_adds_bos(tokenizer: Tokenizer) -> bool:
    flag = _next_to(tokenizer, "tokenizer_config.json").get("add_bos_token")
    return flag if isinstance(flag, bool) else bool(tokenizer.special_prefix())


def declared_bos(tokenizer: Tokenizer, config: dict) -> Optional[tuple[int, str]]:
    """The BOS id and where it was declared: the token the tokenizer puts first, else the `bos_token` of
    its side files, else `bos_token_id` of the model's config.json; None when none names one."""
    prefix = tokenizer.special_prefix()
    if prefix:
        return prefix[0], f"the token {tokenizer.path.name} puts first"
    for name in TOKENIZER_FILES:
        token = _next_to(tokenizer, name).get("bos_token")
        token = token.get("content") if isinstance(token, dict) else token
        token_id = tokenizer.token_id(token) if isinstance(token, str) else None
        if token_id is not None:
            return token_id, f"bos_token {token!r} of {name}"
    bos = config.get("bos_token_id")
    return (bos, "bos_token_id of config.json") if isinstance(bos, int) and not isinstance(bos, bool) else None


def probe_bos(choice: str, tokenizer: Tokenizer, folder: Path, vocab_size: int) -> Optional[int]:
    """The id that starts every probe window of the model in `folder` for `--add_bos choice` (None: no BOS)."""
    if choice not in BOS_CHOICES:
        raise HFError(f"--add_bos must be one of {', '.join(BOS_CHOICES)}, got {choice!r}")
    if choice == "false" or (choice == "auto" and not tokenizer_adds_bos(tokenizer)):
        return None
    found = declared_bos(tokenizer, read_hf_config(folder))
    if found is None:
        raise HFError(
            f"--add_bos {choice}: {folder} declares no BOS token (nothing put first by {tokenizer.path}, "
            f"no bos_token in {' or '.join(TOKENIZER_FILES)}, no bos_token_id in config.json); pass "
            f"--add_bos false"
        )
    bos, source = found
    if not 0 <= bos < vocab_size:
        raise HFError(
            f"{folder}: the BOS id {bos} ({source}) is outside the model's {vocab_size}-token "
            f"vocabulary; fix it or pass --add_bos false"
        )
    return bos


__all__ = ["BOS_CHOICES", "declared_bos", "probe_bos", "tokenizer_adds_bos"]
