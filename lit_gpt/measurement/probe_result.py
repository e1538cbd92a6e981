"""The result of one probe evaluation, typed: what was measured, and what it was measured on.

Every evaluator (`lit_gpt.measurement.analysis.evaluate_probe` and the commands built on it, for our
checkpoints and for HF models alike) returns a `ProbeResult`; the table, the plots, the trainer's logged
metrics and the reports read its fields instead of string keys. `to_json()` gives the plain-JSON form
written to `sink_eval.json` and report caches, and `from_json()` reads such a file back.

The measured fields are the same for every source. What describes the source differs (a checkpoint's
step and config, a HF model's architecture and BOS, the costs when asked for) and is kept, in the order
it was added, in `about`; the JSON holds the measured fields first, then `about`'s entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

from lit_gpt.core.errors import UserError


class ProbeResultError(UserError, ValueError):
    """A stored evaluation that lacks what every probe evaluation measures."""


@dataclass
class ProbeResult:
    """Sink rates, probe loss, norms and activation extremes of one model on one probe set.

    Attributes:
        eps: The sink threshold the rates were counted at (a share of attention).
        n_sequences: Probe windows evaluated.
        n_sink_tokens: Learned sink tokens before each window (their positions lead every norm list).
        sink_rates: Percent of (window, layer, head) over eps, per metric (`sink_1`..`sink_k`, `sink_star`, ...).
        layer_sink_rates: The same per layer, layers counted from 0.
        layer_mean_alpha: Mean attention share per layer, per metric.
        loss: Mean next-token cross-entropy over the predictions the training rule counts.
        norms: Per-position norms, per hidden state (`hidden`: embedding output, then each block) and per
            layer (`keys`, `values`; None when the model cannot give them).
        massive_activations: Per hidden state, the mean over windows of the top-1/2/3 and median |activation|.
        about: What was measured (checkpoint, step, config, architecture, costs, ...), in JSON order.
    """

    eps: float
    n_sequences: int
    n_sink_tokens: int
    sink_rates: dict[str, float]
    layer_sink_rates: dict[str, list[float]]
    layer_mean_alpha: dict[str, list[float]]
    loss: float
    norms: dict[str, Optional[list]]
    massive_activations: dict[str, list[float]]
    about: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The plain-JSON form: the measured fields, then `about`'s entries."""
        return {**{name: getattr(self, name) for name in MEASURED}, **self.about}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ProbeResult":
        """Read back `to_json()`'s form; every key that is not a measured field goes to `about`."""
        missing = [name for name in MEASURED if name not in data]
        if missing:
            raise ProbeResultError(f"the evaluation lacks {', '.join(missing)}: evaluate the model again")
        about = {key: value for key, value in data.items() if key not in MEASURED}
        return cls(**{name: data[name] for name in MEASURED}, about=about)


MEASURED = tuple(f.name for f in fields(ProbeResult) if f.name != "about")

__all__ = ["MEASURED", "ProbeResult", "ProbeResultError"]
