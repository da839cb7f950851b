# Two entry points for users: `make demo` (separate the bundled example song with the bundled model)
# and `make test` (lint, type-check and run the test suite). Both create/refresh .venv themselves.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0

.PHONY: install test lint demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps tinysoundfont==0.3.7  # corpus v2's SoundFont player; its pyaudio dependency is playback only

lint: install
	$(BIN)/ruff check bsmamba2 tests benchmarks scripts
	$(BIN)/ruff format --check bsmamba2 tests benchmarks scripts
	$(BIN)/mypy bsmamba2

test: lint
	$(BIN)/python -m pytest -q -x --durations=10 tests

demo: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[demo]"
	$(BIN)/python -m bsmamba2 demo -o demo_out

clean:
	rm -rf $(VENV) demo_out build *.egg-info .pytest_cache .mypy_cache .ruff_cache
