# The two commands a new user types: `make train` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip

.PHONY: install train test test-fast lint tb bench gpu-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the package metadata or the pins change.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e ".[dev,joblib,submitit,optuna]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/softloss train $(ARGS)

# Two workers (one per core on the project machines; `-n auto` elsewhere would oversubscribe
# the end-to-end runs, which use two torch threads each); whole files stay on one worker so
# module fixtures (a trained run, a DDP run) are built once.
JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check softloss_cli tests benchmarks

tb: $(STAMP)
	$(BIN)/tensorboard --logdir runs

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# On a CUDA machine: the GPU-only tests (skipped everywhere else).
gpu-test: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
