"""LLaMA-style pretraining with composable attention, for studying attention sinks."""
