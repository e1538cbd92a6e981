"""Data-mixture YAML files in upstream's format.

```yaml
train: {train_the_pile_arxiv: 0.1052, train_the_pile_pile_cc: 0.3, ...}   # dataset name -> weight
valid: {valid_the_pile_arxiv: 1.0, ...}                                     # datasets to evaluate
```
Names are dataset names in the data folder (`<split>_<domain>`); weights need not sum to 1.
"""

from pathlib import Path
from typing import Union

import yaml

from lit_gpt.data.errors import DataError


def load_mixture(path: Union[str, Path]) -> tuple[dict[str, float], dict[str, float]]:
    """(train weights, valid weights) from a mixture YAML; `valid` may be absent (then empty)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mixture file {path} does not exist; see configs/data/ for examples")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise DataError(f"{path} is not valid YAML ({type(error).__name__}); fix its syntax") from None
    if not isinstance(content, dict) or not isinstance(content.get("train"), dict) or not content["train"]:
        raise DataError(f"{path} needs a non-empty 'train' mapping of dataset name to weight, like configs/data/embedded.yaml")
    return _weights(path, "train", content["train"]), _weights(path, "valid", content.get("valid") or {})


def _weights(path: Path, split: str, weights: object) -> dict[str, float]:
    def valid(weight: object) -> bool:
        return isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0

    if not isinstance(weights, dict) or not all(map(valid, weights.values())):
        raise DataError(f"{path}: '{split}' must map dataset names to non-negative numbers; fix the weights")
    return {str(name): float(weight) for name, weight in weights.items()}
