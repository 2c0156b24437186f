# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
# CPU machines pin the local CPU torch wheel; GPU users run `make setup CONSTRAINTS=`
# after installing their CUDA torch into .venv (or `pip install -e .` in their own env).
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= dev
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lix-installed
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup demo test clean help

help:
	@echo "make demo   - set up .venv and run the main job on the embedded synthetic data"
	@echo "make test   - set up .venv and run the whole test suite"
	@echo "make setup  - only create or update .venv"

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "lix-seg needs Python >= 3.10; run make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(PY) -m lix_train.distill --run-dir $(DEMO_OUT) --with-baseline
	$(PY) -m lix_train.data.preview --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info runs
