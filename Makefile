# `make test` and `make demo` work on a fresh clone: they create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lint test test-fast demo bench gpu-check clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[test,hf]"
	touch $(STAMP)

install: $(STAMP)

# Lint and format (ruff) and types (mypy over lit_gpt/), as configured in pyproject.toml; CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	bash scripts/demo.sh

bench: $(STAMP)
	$(PY) bench/attention.py
	$(PY) bench/train.py
	$(PY) bench/preprocess.py

# The prepared GPU check (bench/README.md); ARGS="--dry-run" rehearses it on the CPU. No venv step: the GPU
# machine has torch and Lightning, and no network.
gpu-check:
	bash scripts/gpu_check.sh $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
