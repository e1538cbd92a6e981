"""The data pipeline: documents -> tokenizer -> litdata token shards -> mixture loaders.

`preprocess/run_preprocess.sh` builds shards (see `lit_gpt.data.prepare`); trainers and evaluation use
the loaders, the run's input transforms and the probe set exported here. The names are imported when
first used, so a command that needs only the errors or the documents does not import torch.
"""

import importlib
from typing import Any

_HOMES = {
    "DataError": "lit_gpt.data.errors",
    "InputTransforms": "lit_gpt.data.transforms",
    "TrainLoader": "lit_gpt.data.loader",
    "build_train_loader": "lit_gpt.data.loader",
    "build_valid_loaders": "lit_gpt.data.loader",
    "load_probe_windows": "lit_gpt.data.probe",
    "mask_ignored_prefix": "lit_gpt.data.loader",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'lit_gpt.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


__all__ = sorted(_HOMES)
