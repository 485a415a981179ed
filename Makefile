# The lab's two commands: `make demo` and `make test` (each installs first).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: install demo test test-slow test-slurm test-gpu lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml scripts/install.sh | $(PY)
	bash scripts/install.sh $(PY)
	touch $@

install: $(STAMP)

## demo: a small scaling sweep (4 sizes, 15 token budgets) on the embedded corpus, then fit, plot
## and predict the loss at 10x and 100x its largest compute
demo: install
	$(VENV)/bin/lab-sweep demo hydra.sweep.dir=$(DEMO_DIR)
	$(VENV)/bin/lab-analyze report $(DEMO_DIR) --out $(DEMO_DIR)/analysis
	$(VENV)/bin/lab-analyze predict $(DEMO_DIR) --compute 5e13 5e14 --out $(DEMO_DIR)/analysis

## test: the whole CPU test suite (Triton kernels under TRITON_INTERPRET=1), one pytest
## worker per core (pytest-xdist; idle workers take queued tests from busy ones)
test: install
	$(PY) -m pytest -q -n auto --dist worksteal

## test-slow: the long checks left out of `make test`
test-slow: install
	$(PY) -m pytest -q -m slow

## test-slurm: a one-node Slurm cluster (scripts/slurm_up.sh), then the tests that submit to
## it (a submitit_slurm sweep, runs requeued mid-way); they skip where it cannot start
test-slurm: install
	bash scripts/slurm_up.sh
	$(PY) -m pytest -q -m slurm

## test-gpu: the CUDA-only tests (on a machine with a GPU)
test-gpu: install
	$(PY) -m pytest -q -m gpu

## lint: ruff, and import-linter's layering contracts (pyproject.toml, [tool.importlinter])
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs outputs multirun .pytest_cache .ruff_cache
