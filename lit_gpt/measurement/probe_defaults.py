"""The sink metric's standard settings (docs/reference.md), in a module that imports nothing heavy: every
command's flags default to them, and a command's `--help` must not wait for torch."""

# 100 held-out texts, the first 64 tokens of each (the paper's probe set).
PROBE_SEQUENCES = 100
PROBE_LENGTH = 64
# A key is a sink in a (layer, head, sequence) when its mean attention exceeds eps; Sink_1..Sink_k are reported.
SINK_EPS = 0.3
SINK_K = 10

__all__ = ["PROBE_LENGTH", "PROBE_SEQUENCES", "SINK_EPS", "SINK_K"]
