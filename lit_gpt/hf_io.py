"""Hugging Face folders: export to / import from `LlamaForCausalLM`, and loading HF causal LMs for the sink
evaluation of open-source models.

The tensor and config mapping (and the refusal of variants a LLaMA cannot express) lives in
`lit_gpt.convert`; this module handles files (config.json + safetensors), hub ids and HF forward passes.
Hub ids are resolved from the local HF cache first; when the hub cannot be reached the call fails within
seconds with a message saying so, instead of retrying for minutes.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from lit_gpt.analysis import ProbeForward, ProbeOutputs, evaluate_probe, record_outputs
from lit_gpt.checkpoint import load_model
from lit_gpt.config import Config, ConfigError
from lit_gpt.convert import config_from_hf, from_hf_state_dict, hf_config, to_hf_state_dict
from lit_gpt.errors import UserError, one_line
from lit_gpt.files import OutputError, output_folder, write_atomic
from lit_gpt.hub import hub_reachable
from lit_gpt.model import GPT
from lit_gpt.tokenizer import load_tokenizer

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# Our unpadded vocabulary size, kept in config.json so an exported model imports back unchanged.
VOCAB_KEY = "lit_gpt_vocab_size"
# The config.json keys a LLaMA cannot be built without (the others have transformers' defaults).
REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


class HFError(UserError, ValueError):
    """A Hugging Face model cannot be found, loaded or read; the message names the fix."""


# ------------------------------------------------------------------------------------------ export
def export_hf(source: Union[GPT, str, Path], out_dir: Union[str, Path],
              tokenizer: Optional[Union[str, Path]] = None) -> Path:
    """Write `source` (a GPT or a training checkpoint path) as a HF LLaMA folder: config.json + model.safetensors,
    plus the tokenizer file when `tokenizer` (a file or folder `load_tokenizer` accepts) is given.

    Raises `ConfigError` before writing anything when the variant is not a LLaMA, `OutputError` when
    `out_dir` is a file or holds files of another model the export would replace (only a folder an
    earlier export wrote is updated). Each file is written under a temporary name and renamed into place
    (weights first, config.json last), so a crash never leaves a half-written file; other files in
    `out_dir` are kept.
    """
    model = source if isinstance(source, GPT) else load_model(source)[0]
    config = hf_config(model.config)
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    state = {name: tensor.contiguous() for name, tensor in to_hf_state_dict(model).items()}
    config.update({"torch_dtype": "float32", VOCAB_KEY: model.config.vocab_size})
    out_dir = output_folder(out_dir)
    _check_export_folder(out_dir, tok)
    write_atomic(out_dir / WEIGHTS, save(state, metadata={"format": "pt"}))
    if tok is not None:
        tok.save(out_dir)
    write_atomic(out_dir / "config.json", json.dumps(config, indent=2))
    return out_dir


def _check_export_folder(out_dir: Path, tok) -> None:
    """Refuse to replace another model's files, or to leave an index that would point at other weights."""
    exported_here = VOCAB_KEY in _read_json_or_empty(out_dir / "config.json")
    written = ["config.json", WEIGHTS] + ([tok.file_name] if tok is not None else [])
    clashes = [name for name in written if (out_dir / name).exists()] if not exported_here else []
    if (out_dir / WEIGHTS_INDEX).exists():
        clashes.append(WEIGHTS_INDEX)
    if clashes:
        raise OutputError(f"{out_dir} already holds {', '.join(clashes)} of another model; export into an empty or new "
                          f"folder (files there are never replaced)")


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
        raise HFError(f"'{spec}' is not in the local Hugging Face cache and the hub is unreachable (offline?); "
                      f"download the model on a connected machine and pass its folder instead")
    try:
        return Path(huggingface_hub.snapshot_download(str(spec), allow_patterns=patterns, etag_timeout=5))
    except (HfHubHTTPError, OSError) as error:
        raise HFError(f"could not download '{spec}' from the hub ({type(error).__name__}); check the id "
                      f"or pass a local folder") from None


def _read_json(path: Path, what: str) -> dict:
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
    return _read_json(path, "config")


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A missing or damaged safetensors file as one `HFError` naming it."""
    if not path.is_file():
        raise HFError(f"{path} is missing; the model folder is incomplete: download or save it again")
    try:
        yield
    except Exception as error:  # safetensors raises its own error type for a damaged header or payload
        raise HFError(f"{path} cannot be read ({one_line(error)[:80]}); it is truncated or not safetensors: "
                      f"download or save the model again") from None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a HF folder: `model.safetensors`, or the shards its index lists (none when
    the folder has neither)."""
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    index = folder / WEIGHTS_INDEX
    if not index.is_file():
        return []
    weight_map = _read_json(index, "weights index").get("weight_map")
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
    if hf.get("model_type") != "llama":
        raise ConfigError(f"{path} describes a model_type={hf.get('model_type')!r} model; only LLaMA folders can "
                          f"be imported (eval_sink_open_source.py evaluates other causal LMs)")
    missing = [key for key in REQUIRED_KEYS if key not in hf]
    if missing:
        raise HFError(f"{path} lacks {', '.join(missing)}; it is not a complete LLaMA config: re-save the model")
    for key in REQUIRED_KEYS:
        if isinstance(hf[key], bool) or not isinstance(hf[key], int) or hf[key] < 1:
            raise HFError(f"{path}: {key} must be a positive integer, got {hf[key]!r}; fix or re-save config.json")
    try:
        return config_from_hf(hf, **({"vocab_size": hf[VOCAB_KEY]} if VOCAB_KEY in hf else {}))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def import_hf(spec: Union[str, Path]) -> tuple[GPT, Config]:
    """Our GPT (eval mode, float32) and its Config from a HF LLaMA folder or hub id."""
    folder = resolve_model_dir(spec)
    config = _import_config(folder)
    state = {name: tensor.float() for name, tensor in load_hf_weights(folder).items()}
    try:
        ours = from_hf_state_dict(state, config)
    except ConfigError as error:
        raise HFError(f"the weights in {folder} do not fit its config.json ({error}); they come from another "
                      f"model: re-save the model") from None
    model = GPT(config)
    model.load_state_dict(ours)
    return model.eval(), config


# ----------------------------------------------------------------------------- open-source models
@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers prints a progress bar and a multi-line load report; `load_hf_causal_lm` turns what the
    report would say into one error line instead."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _check_loaded(folder: Path, info: dict) -> None:
    """transformers initialises weights missing from the files at random and drops those it has no place
    for; either way the model is not the one saved, so both are refused (benign keys are already filtered)."""
    problems = {"missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
                "of another shape": sorted(key for key, *_ in info["mismatched_keys"])}
    found = [f"{len(keys)} {what} ({keys[0]}{', ...' if len(keys) > 1 else ''})"
             for what, keys in problems.items() if keys]
    if found:
        raise HFError(f"the weights in {folder} do not fit its config.json: tensors {'; '.join(found)}; they come "
                      f"from another model: re-save the model")


def load_hf_causal_lm(spec: Union[str, Path]):
    """A HF causal LM in float32 with eager attention (the only implementation that returns the maps)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = resolve_model_dir(spec)
    read_hf_config(folder)
    check_weight_files(folder)
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(folder)
    except Exception as error:  # transformers reports a bad config with many error types
        raise HFError(f"transformers cannot use {folder / 'config.json'} ({type(error).__name__}: "
                      f"{one_line(error)[:160]}); fix it or re-save the model") from None
    try:
        with _quiet_transformers():
            model, info = AutoModelForCausalLM.from_pretrained(
                folder, config=config, attn_implementation="eager", dtype=torch.float32,
                ignore_mismatched_sizes=True, output_loading_info=True)
    except Exception as error:  # transformers reports a damaged or foreign folder with many error types
        raise HFError(f"transformers cannot load {folder} ({type(error).__name__}: {one_line(error)[:160]}); "
                      f"check the folder is a complete causal-LM checkpoint") from None
    _check_loaded(folder, info)
    return model.eval()


def decoder_layers(model) -> list:
    """The decoder layers of a LLaMA-family HF model (layers with self_attn.k_proj / v_proj)."""
    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") and hasattr(layer.self_attn, "k_proj")
                                 for layer in layers):
        raise HFError(f"{type(model).__name__} is not a LLaMA-family decoder (layers with self_attn.k_proj); "
                      f"norms of keys and values cannot be read from it")
    return list(layers)


def hf_probe_forward(model) -> ProbeForward:
    """A `ProbeForward` for a HF causal LM: attention maps from `output_attentions`, hidden states at the
    input of the first layer and the output of every layer, keys and values from k_proj / v_proj."""
    layers = decoder_layers(model)
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    modules = {f"layer{i}": layer for i, layer in enumerate(layers)}
    modules.update({f"k{i}": layer.self_attn.k_proj for i, layer in enumerate(layers)})
    modules.update({f"v{i}": layer.self_attn.v_proj for i, layer in enumerate(layers)})

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)

    def forward(idx: torch.Tensor) -> ProbeOutputs:
        store = {}
        handle = layers[0].register_forward_pre_hook(
            lambda m, args, kwargs: store.__setitem__("embedding", args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True)
        try:
            with record_outputs(modules) as outs:
                out = model(idx, output_attentions=True, use_cache=False)
        finally:
            handle.remove()
        n = len(layers)
        return ProbeOutputs(
            logits=out.logits,
            maps=list(out.attentions),
            hidden=[store["embedding"]] + [outs[f"layer{i}"] for i in range(n)],
            keys=[heads(outs[f"k{i}"]) for i in range(n)],
            values=[heads(outs[f"v{i}"]) for i in range(n)],
        )

    return forward


@torch.no_grad()
def evaluate_hf(model, tokens: torch.Tensor, eps: float = 0.3, k: int = 10, batch_size: int = 10) -> dict:
    """The sink report (`lit_gpt.analysis.evaluate_probe`) of a HF causal LM on probe tokens (N, T)."""
    result = evaluate_probe(hf_probe_forward(model), tokens, eps=eps, k=k, batch_size=batch_size)
    result["config"] = model.config.to_dict()
    return result


@torch.no_grad()
def hf_example_maps(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Attention maps of the first probe sequence, for heatmaps."""
    return list(model(tokens[:1], output_attentions=True, use_cache=False).attentions)


__all__ = ["HFError", "decoder_layers", "evaluate_hf", "export_hf", "hf_example_maps", "hf_probe_forward",
           "import_hf", "load_hf_causal_lm", "load_hf_weights", "resolve_model_dir"]
