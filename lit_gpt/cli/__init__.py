"""Command lines, one module each; installed as console scripts (see `[project.scripts]` in pyproject.toml).

| command | module | also runs as |
|---|---|---|
| `sink-train` | `train` | `python pretrain/tinyllama.py` |
| `sink-eval` | `eval_sink` | `python pretrain/eval_sink_pretrain.py` |
| `sink-report` | `report` | `python pretrain/report.py` |
| `sink-generate` | `generate` | `python pretrain/generate.py` |
| `sink-streaming` | `streaming` | `python pretrain/eval_streaming.py` |
| `sink-eval-hf` | `eval_hf` | `python eval_sink_open_source.py` |
| `sink-export-hf` | `export_hf` | `python pretrain/export_hf.py` |
| `sink-prepare` | `prepare` | `bash preprocess/run_preprocess.sh` |
| `sink-sweep` (also `sink-experiment`) | `sweep` | `python scripts/sweep.py` (used by the sweep scripts) |
| `sink-reproduce` | `reproduce` | `bash scripts/reproduce.sh` runs it with training |

Each `main(argv=None)` runs through `lit_gpt.core.errors.run_cli`, so bad input is one `error:` line.
"""
