"""Hugging Face folders: export to / import from `LlamaForCausalLM` and `GPT2LMHeadModel`, reading their files,
resolving hub ids.

The tensor and config mapping (and the refusal of variants HF's LLaMA or GPT-2 cannot express) lives in
`lit_gpt.hf.families`, the sink evaluation of any HF causal LM in `lit_gpt.hf.probe`; this module handles
files (config.json + safetensors, and on export the BOS convention in the generation and tokenizer files)
and hub ids. Hub ids are resolved from the local HF cache first; when
the hub cannot be reached the call fails within seconds with a message saying so, instead of retrying
for minutes.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

import tokenizers
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from tokenizers import processors

from lit_gpt.core.errors import UserError, one_line
from lit_gpt.core.files import OutputError, ensure_space, output_folder, write_atomic
from lit_gpt.data.hub import hub_reachable
from lit_gpt.data.tokenizer import Tokenizer, load_tokenizer
from lit_gpt.data.transforms import InputTransforms
from lit_gpt.hf.families import FAMILIES, config_from_hf, from_hf_state_dict, hf_config, hf_family, to_hf_state_dict
from lit_gpt.model.config import Config, ConfigError
from lit_gpt.model.gpt import GPT
from lit_gpt.training.checkpoint import load_model

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# Our unpadded vocabulary size, kept in config.json so an exported model imports back unchanged.
VOCAB_KEY = "lit_gpt_vocab_size"


class HFError(UserError, ValueError):
    """A Hugging Face model cannot be found, loaded or read; the message names the fix."""


# ------------------------------------------------------------------------------------------ export
def export_hf(
    source: Union[GPT, str, Path],
    out_dir: Union[str, Path],
    tokenizer: Optional[Union[str, Path]] = None,
    bos_id: Optional[int] = None,
) -> Path:
    """Write `source` (a GPT or a training checkpoint path) as a HF LLaMA or, with learned positions, GPT-2
    folder: config.json + generation_config.json + model.safetensors, plus the tokenizer file and its
    tokenizer_config.json when `tokenizer` (a file or folder `load_tokenizer` accepts) is given.

    The files declare the BOS the model was trained with (`run_bos` of a checkpoint; `bos_id` for a GPT
    `source`), and the exported tokenizer puts it before every text it encodes (or puts nothing, for a model
    trained without one), so transformers and `eval_sink_open_source.py` see the inputs our own commands
    give the model (docs/reference.md, "Probe set").

    Raises `ConfigError` before writing anything when the variant is not a LLaMA (GPT-2), `OutputError` when
    `out_dir` is a file or holds files of another model the export would replace (only a folder an
    earlier export wrote is updated). Each file is written under a temporary name and renamed into place
    (weights first, config.json last), so a crash never leaves a half-written file; other files in
    `out_dir` are kept.
    """
    model, bos = (source, bos_id) if isinstance(source, GPT) else _checkpoint_model(source)
    config = hf_config(model.config)
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    state = {name: tensor.contiguous() for name, tensor in to_hf_state_dict(model).items()}
    special = {"bos_token_id": bos, "eos_token_id": tok.eos_id if tok is not None else None}
    config.update(special, torch_dtype="float32", **{VOCAB_KEY: model.config.vocab_size})
    files = {
        WEIGHTS: save(state, metadata={"format": "pt"}),
        **(_tokenizer_files(tok, bos, model.config.block_size) if tok is not None else {}),
        GENERATION_CONFIG: _json_bytes(special),
        "config.json": _json_bytes(config),
    }
    out_dir = output_folder(out_dir)
    _check_export_folder(out_dir, list(files))
    # All of it or none: a disk that holds the new weights but not the rest would pair them with the old config.
    ensure_space(out_dir / WEIGHTS, sum(len(content) for content in files.values()))
    for name, content in files.items():
        write_atomic(out_dir / name, content)
    return out_dir


def run_bos(train: dict) -> Optional[int]:
    """The BOS id a run was trained with: its fixed token when that sits at position 0 (None without one)."""
    fixed = InputTransforms.of_run(train).fixed_token
    return fixed[1] if fixed is not None and fixed[0] == 0 else None


def _checkpoint_model(path: Union[str, Path]) -> tuple[GPT, Optional[int]]:
    model, ckpt = load_model(path)
    return model, run_bos(ckpt.get("train") or {})


def _json_bytes(value: dict) -> bytes:
    return json.dumps(value, indent=2).encode("utf-8")


def _tokenizer_files(tok: Tokenizer, bos: Optional[int], max_length: int) -> dict[str, bytes]:
    """The tokenizer file, made to put `bos` (or nothing) first when it encodes, and a tokenizer_config.json
    that names its BOS and EOS and says whether it adds the BOS."""
    if bos is not None and tok.token(bos) is None:
        raise HFError(
            f"the model's BOS id {bos} is not in the vocabulary of {tok.path}; export with the "
            f"tokenizer the run was trained with (--tokenizer)"
        )
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast" if tok.file_name == "tokenizer.json" else None,
        "bos_token": None if bos is None else tok.token(bos),
        "eos_token": tok.token(tok.eos_id),
        "add_bos_token": bos is not None,
        "add_eos_token": False,
        "model_max_length": max_length,
    }
    return {
        tok.file_name: _prefixing(tok, bos),
        TOKENIZER_CONFIG: _json_bytes({key: value for key, value in settings.items() if value is not None}),
    }


def _prefixing(tok: Tokenizer, bos: Optional[int]) -> bytes:
    """The tokenizer file, with a post-processor that puts `bos` before every text (nothing without one)
    unless the file already does just that: transformers adds what a tokenizer.json's post-processor adds,
    whatever tokenizer_config.json says. A SentencePiece model adds nothing itself and is copied as it is."""
    wanted = [] if bos is None else [bos]
    if tok.file_name != "tokenizer.json" or tok.special_prefix() == wanted:
        return tok.path.read_bytes()
    hf = tokenizers.Tokenizer.from_file(str(tok.path))
    bos_token = None if bos is None else tok.token(bos)
    first = [] if bos_token is None else [bos_token]
    hf.post_processor = processors.TemplateProcessing(
        single=" ".join(first + ["$A"]),
        pair=" ".join(first + ["$A"] + first + ["$B"]),
        special_tokens=[(token, bos) for token in first],
    )
    return hf.to_str(pretty=True).encode("utf-8")


def _check_export_folder(out_dir: Path, written: list[str]) -> None:
    """Refuse to replace another model's files, or to leave an index that would point at other weights."""
    exported_here = VOCAB_KEY in _read_json_or_empty(out_dir / "config.json")
    clashes = sorted(name for name in written if (out_dir / name).exists()) if not exported_here else []
    if (out_dir / WEIGHTS_INDEX).exists():
        clashes.append(WEIGHTS_INDEX)
    if clashes:
        raise OutputError(
            f"{out_dir} already holds {', '.join(clashes)} of another model; export into an empty or new "
            f"folder (files there are never replaced)"
        )


def _read_json_or_empty(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------------------ import
def is_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith(("/", ".", "~")) and not spec.endswith("/")


def resolve_model_dir(spec: Union[str, Path]) -> Path:
    """A local folder for a folder path or a hub id (from the HF cache, else downloaded if the hub is up)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if not is_hub_id(str(spec)):
        raise HFError(f"{spec} is neither a model folder nor a hub id like owner/name")
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "tokenizer.model"]
    try:
        return Path(huggingface_hub.snapshot_download(str(spec), allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if not hub_reachable():
        raise HFError(
            f"'{spec}' is not in the local Hugging Face cache and the hub is unreachable (offline?); "
            f"download the model on a connected machine and pass its folder instead"
        )
    try:
        return Path(huggingface_hub.snapshot_download(str(spec), allow_patterns=patterns, etag_timeout=5))
    except (HfHubHTTPError, OSError) as error:
        raise HFError(
            f"could not download '{spec}' from the hub ({type(error).__name__}); check the id or pass a local folder"
        ) from None


def read_json(path: Path, what: str) -> dict:
    """A JSON object file of a model folder; `what` names it in the error that says to re-save it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise HFError(f"{path} is not valid JSON ({one_line(error)[:80]}); re-save the model's {what}") from None
    if not isinstance(value, dict):
        raise HFError(f"{path} holds a {type(value).__name__}, not a mapping; re-save the model's {what}")
    return value


def read_hf_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise HFError(f"{folder} has no config.json; pass a Hugging Face model folder")
    return read_json(path, "config")


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A missing or damaged safetensors file as one `HFError` naming it."""
    if not path.is_file():
        raise HFError(f"{path} is missing; the model folder is incomplete: download or save it again")
    try:
        yield
    except Exception as error:  # safetensors raises its own error type for a damaged header or payload
        raise HFError(
            f"{path} cannot be read ({one_line(error)[:80]}); it is truncated or not safetensors: "
            f"download or save the model again"
        ) from None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a HF folder: `model.safetensors`, or the shards its index lists (none when
    the folder has neither)."""
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    index = folder / WEIGHTS_INDEX
    if not index.is_file():
        return []
    weight_map = read_json(index, "weights index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise HFError(f"{index} has no weight_map of tensor name -> shard file; re-save the model")
    return [folder / shard for shard in sorted(set(weight_map.values()))]


def check_weight_files(folder: Path) -> None:
    """Read the header of every safetensors file (no tensor is loaded), so a missing, truncated or foreign
    file is named before transformers reads the folder."""
    for path in weight_files(folder):
        with _reading(path), safe_open(path, "pt"):
            pass


def load_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF folder: `model.safetensors` or the shards listed in its index."""
    files = weight_files(folder)
    if not files:
        raise HFError(f"{folder} holds no {WEIGHTS} or {WEIGHTS_INDEX}; save the model with safetensors")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        with _reading(path):
            state.update(load_file(path))
    return state


def _import_config(folder: Path) -> Config:
    """Our Config from the folder's config.json; every refusal names that file."""
    path = folder / "config.json"
    hf = read_hf_config(folder)
    if hf.get("model_type") not in tuple(FAMILIES):
        raise ConfigError(
            f"{path} describes a model_type={hf.get('model_type')!r} model; only LLaMA and GPT-2 "
            f"folders can be imported (eval_sink_open_source.py evaluates other causal LMs)"
        )
    family = hf_family(hf)
    missing = [key for key in family.REQUIRED_KEYS if key not in hf]
    if missing:
        raise HFError(
            f"{path} lacks {', '.join(missing)}; it is not a complete {family.NAME} config: re-save the model"
        )
    for key in family.REQUIRED_KEYS:
        if isinstance(hf[key], bool) or not isinstance(hf[key], int) or hf[key] < 1:
            raise HFError(f"{path}: {key} must be a positive integer, got {hf[key]!r}; fix or re-save config.json")
    try:
        return config_from_hf(hf, **({"vocab_size": hf[VOCAB_KEY]} if VOCAB_KEY in hf else {}))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def import_hf(spec: Union[str, Path]) -> tuple[GPT, Config]:
    """Our GPT (eval mode, float32) and its Config from a HF LLaMA or GPT-2 folder or hub id."""
    folder = resolve_model_dir(spec)
    config = _import_config(folder)
    state = {name: tensor.float() for name, tensor in load_hf_weights(folder).items()}
    try:
        ours = from_hf_state_dict(state, config)
    except ConfigError as error:
        raise HFError(
            f"the weights in {folder} do not fit its config.json ({error}); they come from another "
            f"model: re-save the model"
        ) from None
    model = GPT(config)
    model.load_state_dict(ours)
    return model.eval(), config


__all__ = [
    "HFError",
    "check_weight_files",
    "export_hf",
    "import_hf",
    "load_hf_weights",
    "read_hf_config",
    "read_json",
    "resolve_model_dir",
    "run_bos",
    "weight_files",
]
