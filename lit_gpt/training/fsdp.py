"""`--strategy fsdp`: fully sharded data parallel training with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Every parameter, gradient and optimizer state is sharded over all processes (a 1-D device mesh as wide
as the world, no tensor parallelism), one FSDP unit per `Block` plus the root unit (embeddings, final
norm, head). It runs wherever torch.distributed does, NCCL on GPUs and gloo on CPUs, so the tests
train sharded on two CPU processes against one process. Lightning's own `FSDPStrategy` (FSDP1) refuses
CPUs; this builds on its `ModelParallelStrategy`, which takes the sharding as a function.

The model is built in full on every process from the run's seed, exactly as an unsharded run builds
it, and only then sharded: sharded and unsharded runs start from the same weights, bit for bit.
Creating it on the meta device would spare that transient host memory (one model copy per process,
4.4 GB for the 1.1B preset in fp32) but draw the initial weights from another random stream.

Checkpoints keep the trainer's one-file format: model and optimizer states are gathered to rank 0 as
full tensors, and the optimizer state is keyed by position as `torch.optim.Optimizer.state_dict()`
keys it. Evaluation, reports, export and an unsharded resume read a sharded run's checkpoint as they
read any other, and a sharded run resumes from an unsharded one's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch
from lightning.fabric.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn import Module
from torch.optim import Optimizer


def shard_model(model: Module, mesh) -> Module:
    """One FSDP unit per transformer block (whatever wraps it, e.g. activation checkpointing), then the root
    unit for the parameters left: the embeddings, the final norm and the head."""
    mesh = mesh["data_parallel"]
    blocks: Module = model.get_submodule("blocks")
    for block in blocks.children():
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class FSDP2Strategy(ModelParallelStrategy):
    """`ModelParallelStrategy` as pure FSDP over every process, saving and loading the trainer's one-file
    checkpoints (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(shard_model, save_distributed_checkpoint=False)

    def setup_environment(self) -> None:
        # The parent's "auto" sizes shard within a node only when paired with tensor parallelism across it.
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def save_checkpoint(
        self, path, state: dict[str, Any], storage_options: Optional[Any] = None, filter: Optional[dict] = None
    ) -> None:
        if storage_options is not None or filter is not None:
            raise TypeError(f"{type(self).__name__} saves whole checkpoints only (no storage options or filters)")
        path = Path(self.broadcast(path))
        model = _the_model(state)
        # Every process takes part in gathering; only rank 0 receives the full tensors and writes them.
        gathered = StateDictOptions(full_state_dict=True, cpu_offload=True)
        checkpoint: dict[str, Any] = {}
        for key, obj in state.items():
            if isinstance(obj, Module):
                checkpoint[key] = get_model_state_dict(obj, options=gathered)
            elif isinstance(obj, Optimizer):
                checkpoint[key] = get_optimizer_state_dict(model, obj, options=gathered)
                if self.global_rank == 0:
                    checkpoint[key] = optimizer_state_by_position(checkpoint[key])
            else:
                checkpoint[key] = obj.state_dict() if hasattr(obj, "state_dict") else obj
        if self.global_rank == 0:
            torch.save(checkpoint, path)

    def load_checkpoint(
        self,
        path,
        state: Optional[Union[Module, Optimizer, dict[str, Any]]] = None,
        strict: bool = True,
        weights_only: Optional[bool] = None,
    ) -> dict[str, Any]:
        """Restore `state` in place from a one-file checkpoint (every process reads the file, mapped, and keeps
        its own shards); returns the entries `state` did not ask for."""
        if not isinstance(state, dict) or not state:
            raise TypeError(f"{type(self).__name__} restores a state dict holding the model, e.g. {{'model': model}}")
        path = Path(self.broadcast(path))
        model = _the_model(state)
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=weights_only)
        missing = [key for key in state if key not in checkpoint]
        if strict and missing:
            raise KeyError(f"{path} lacks {', '.join(missing)}")
        for key in [key for key in state if key in checkpoint]:
            obj, saved = state[key], checkpoint.pop(key)
            if isinstance(obj, Module):
                set_model_state_dict(obj, saved, options=StateDictOptions(full_state_dict=True, strict=strict))
            elif isinstance(obj, Optimizer):
                names = optimizer_parameter_names(model, obj)
                set_optimizer_state_dict(
                    model, obj, optimizer_state_by_name(saved, names), options=StateDictOptions(full_state_dict=True)
                )
                # torch.distributed.checkpoint hands tuples (AdamW's betas) back as lists: restore the saved
                # hyperparameters as they were, so the next checkpoint is written exactly as this one.
                for group, saved_group in zip(obj.param_groups, saved["param_groups"]):
                    group.update({name: value for name, value in saved_group.items() if name != "params"})
            elif hasattr(obj, "load_state_dict"):
                obj.load_state_dict(saved)
            else:
                state[key] = saved
        return checkpoint


def _the_model(state: dict[str, Any]) -> Module:
    modules = [obj for obj in state.values() if isinstance(obj, Module)]
    if len(modules) != 1:
        raise ValueError(f"a checkpoint state holds exactly one model under FSDP, found {len(modules)}")
    return modules[0]


def optimizer_parameter_names(model: Module, optimizer: Optimizer) -> list[str]:
    """The names torch.distributed.checkpoint gives the optimizer's parameters, in the optimizer's order
    (wrappers such as activation checkpointing's are not part of a name)."""
    sharded: dict[str, Any] = dict(get_optimizer_state_dict(model, optimizer))
    return [name for group in sharded["param_groups"] for name in group["params"]]


def optimizer_state_by_position(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter name (as torch.distributed.checkpoint writes it) keyed by
    position instead, as `Optimizer.state_dict()` writes it: parameters numbered through the groups in
    order."""
    names = [name for group in state["param_groups"] for name in group["params"]]
    position = {name: index for index, name in enumerate(names)}
    groups = [{**group, "params": [position[name] for name in group["params"]]} for group in state["param_groups"]]
    return {"state": {position[name]: value for name, value in state["state"].items()}, "param_groups": groups}


def optimizer_state_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of `optimizer_state_by_position`, given the parameter names in the optimizer's order."""
    counted = sum(len(group["params"]) for group in state["param_groups"])
    if counted != len(names):
        raise ValueError(f"the saved optimizer state holds {counted} parameters, the optimizer {len(names)}")
    groups = [{**group, "params": [names[index] for index in group["params"]]} for group in state["param_groups"]]
    return {"state": {names[index]: value for index, value in state["state"].items()}, "param_groups": groups}


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) result, e.g. a gradient norm, as the plain tensor every process agrees on."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
