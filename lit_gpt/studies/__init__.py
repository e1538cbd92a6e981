"""Studies built on the model: each one a module (or package) with its own entry point under experiments/."""
