"""The data pipeline: documents -> tokenizer -> litdata token shards -> mixture loaders.

`preprocess/run_preprocess.sh` builds shards (see `lit_gpt.data.prepare`); trainers and evaluation use
the loaders, the run's input transforms and the probe set exported here.
"""

from lit_gpt.data.errors import DataError
from lit_gpt.data.loader import TrainLoader, build_train_loader, build_valid_loaders, mask_ignored_prefix
from lit_gpt.data.probe import load_probe_windows
from lit_gpt.data.transforms import InputTransforms

__all__ = [
    "DataError",
    "InputTransforms",
    "TrainLoader",
    "build_train_loader",
    "build_valid_loaders",
    "load_probe_windows",
    "mask_ignored_prefix",
]
