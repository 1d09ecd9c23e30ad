# Every target creates (or reuses) .venv and installs what it needs, so a fresh clone needs
# nothing but Python >= 3.10.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The constraints file pins torch to the CPU build; an unpinned torch pulls several GB of CUDA.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e ".[plot]"
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e ".[dev]"
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/fl-gym fedavg --rounds 30
	$(BIN)/fl-gym demo
	$(BIN)/fl-gym eval fl_gym/ClientSelection-v0 --policy ppo:models/ClientSelection-v0_ppo --seeds 0-2

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
