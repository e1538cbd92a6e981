"""Training a model: run arguments (`run_config`, `train_args`), the Fabric loop (`trainer`), FSDP
(`fsdp`), optimisers and schedules (`optim`), checkpoint files (`checkpoint`) and the run's logs
(`loggers`)."""
