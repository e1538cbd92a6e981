"""The sink evaluation of any Hugging Face causal LM: load it, find its decoder layers, hook a probe forward.

The statistics are those of our own checkpoints (`lit_gpt.measurement.analysis.evaluate_probe`): attention maps
come from transformers (`output_attentions=True`, which needs eager attention), hidden states from hooks
on the decoder layers (the input of the first one and the output of each: `output_hidden_states` would
give the last layer after the final norm), keys and values from hooks on the projections that compute
them (`lit_gpt.hf.kv`). An architecture whose keys and values cannot be read is still evaluated; the
result then says why its key/value norms are missing.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
from torch import nn

from lit_gpt.core.errors import one_line
from lit_gpt.hf.io import HFError, check_weight_files, read_hf_config, resolve_model_dir
from lit_gpt.hf.kv import KeyValueUnavailable, key_value_readers
from lit_gpt.measurement.analysis import ProbeForward, ProbeOutputs, evaluate_probe, record_outputs
from lit_gpt.measurement.probe_defaults import SINK_EPS, SINK_K
from lit_gpt.measurement.probe_result import ProbeResult


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
    problems = {
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "of another shape": sorted(key for key, *_ in info["mismatched_keys"]),
    }
    found = [
        f"{len(keys)} {what} ({keys[0]}{', ...' if len(keys) > 1 else ''})" for what, keys in problems.items() if keys
    ]
    if found:
        raise HFError(
            f"the weights in {folder} do not fit its config.json: tensors {'; '.join(found)}; they come "
            f"from another model: re-save the model"
        )


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
        raise HFError(
            f"transformers cannot use {folder / 'config.json'} ({type(error).__name__}: "
            f"{one_line(error)[:160]}); fix it or re-save the model"
        ) from None
    try:
        with _quiet_transformers():
            # typed as returning the model alone; with output_loading_info it returns (model, info)
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                folder,
                config=config,
                attn_implementation="eager",
                dtype=torch.float32,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
            model, info = loaded
    except Exception as error:  # transformers reports a damaged or foreign folder with many error types
        raise HFError(
            f"transformers cannot load {folder} ({type(error).__name__}: {one_line(error)[:160]}); "
            f"check the folder is a complete causal-LM checkpoint"
        ) from None
    _check_loaded(folder, info)
    return model.eval()


def decoder_layers(model) -> list[nn.Module]:
    """The model's `nn.ModuleList` of `num_hidden_layers` modules (GPT-2 `transformer.h`, GPT-NeoX
    `gpt_neox.layers`, OPT `model.decoder.layers`, LLaMA `model.layers`, ...); where several lists have
    that length, the one holding the most parameters, since decoder layers hold nearly all of them."""
    count = getattr(model.config, "num_hidden_layers", None)
    lists: list[nn.ModuleList] = [
        module for module in model.modules() if isinstance(module, nn.ModuleList) and len(module) == count
    ]
    if not count or not lists:
        raise HFError(
            f"{type(model).__name__} keeps no list of num_hidden_layers={count} decoder layers, so its "
            f"hidden states cannot be hooked; this architecture cannot be evaluated"
        )
    largest = max(lists, key=lambda layers: sum(p.numel() for p in layers.parameters()))
    return list(largest)


def _attention_maps(model, out) -> list[torch.Tensor]:
    maps = out.attentions
    if not maps or any(attn is None for attn in maps):
        raise HFError(
            f"{type(model).__name__} returns no attention maps with output_attentions=True, so its sink "
            f"rates cannot be measured; this architecture cannot be evaluated"
        )
    return list(maps)


def hf_probe_forward(model) -> tuple[ProbeForward, Optional[str]]:
    """A `ProbeForward` for a HF causal LM, and why it gives no keys and values (None when it does)."""
    layers = decoder_layers(model)
    try:
        readers, unavailable = key_value_readers(model, layers), None
    except KeyValueUnavailable as error:
        readers, unavailable = None, str(error)
    modules = {f"layer{i}": layer for i, layer in enumerate(layers)}
    for i, reader in enumerate(readers or []):
        modules.update({f"kv{i}.{name}": module for name, module in reader.modules.items()})

    def forward(idx: torch.Tensor) -> ProbeOutputs:
        store: dict[str, torch.Tensor] = {}
        handle = layers[0].register_forward_pre_hook(
            lambda m, args, kwargs: store.__setitem__("embedding", args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True,
        )
        try:
            with record_outputs(modules) as outs:
                out = model(idx, output_attentions=True, use_cache=False)
        finally:
            handle.remove()
        keys = values = None
        if readers is not None:
            pairs = [
                reader.split({name: outs[f"kv{i}.{name}"] for name in reader.modules})
                for i, reader in enumerate(readers)
            ]
            keys, values = [k for k, _ in pairs], [v for _, v in pairs]
        return ProbeOutputs(
            logits=out.logits,
            maps=_attention_maps(model, out),
            hidden=[store["embedding"]] + [outs[f"layer{i}"] for i in range(len(layers))],
            keys=keys,
            values=values,
        )

    return forward, unavailable


@torch.no_grad()
def evaluate_hf(
    model, tokens: torch.Tensor, eps: float = SINK_EPS, k: int = SINK_K, batch_size: int = 10
) -> ProbeResult:
    """The sink report (`lit_gpt.measurement.analysis.evaluate_probe`) of a HF causal LM on probe tokens (N, T); when
    its keys and values cannot be read, `unavailable` says why and their norms are None."""
    forward, unavailable = hf_probe_forward(model)
    result = evaluate_probe(forward, tokens, eps=eps, k=k, batch_size=batch_size)
    result.about["architecture"] = type(model).__name__
    if unavailable is not None:
        result.about["unavailable"] = {"keys": unavailable, "values": unavailable}
    result.about["config"] = model.config.to_dict()
    return result


@torch.no_grad()
def hf_example_maps(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Attention maps of the first probe sequence, for heatmaps."""
    return _attention_maps(model, model(tokens[:1], output_attentions=True, use_cache=False))


__all__ = ["decoder_layers", "evaluate_hf", "hf_example_maps", "hf_probe_forward", "load_hf_causal_lm"]
