# Every target creates (or reuses) .venv and installs what it needs, so a fresh clone needs
# nothing but Python >= 3.10.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The constraints file pins torch to the CPU build; an unpinned torch pulls several GB of CUDA.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test check-plain lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
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

# Every registered env through Gymnasium's, SB3's and PettingZoo's checkers in a virtualenv
# with a plain install (no extras), as a user who runs `pip install fl-gym` gets it.
check-plain:
	$(PYTHON) -m venv .venv-plain
	rm -rf build  # setuptools keeps stale modules there across layouts
	.venv-plain/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt .
	cd .ci && ../.venv-plain/bin/python check_plain_install.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(VENV) .venv-plain build *.egg-info .pytest_cache .ruff_cache
