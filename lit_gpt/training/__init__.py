"""Training a model: run arguments (`run_config`, `train_args`, and `run_plan`, their checked typed
groups), the Fabric loop (`trainer`), FSDP (`fsdp`), optimisers and schedules (`optim`), checkpoint files
(`checkpoint`) and the run's logs (`loggers`)."""
