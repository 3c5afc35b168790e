# The two commands of the README: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in .venv by themselves.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo demo-distributed test lint unit venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "ppo-dr needs Python >= 3.11 ($(PYTHON) is older); set PYTHON=python3.11"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ echo "could not create $(VENV): on Debian, apt-get install python3-venv"; exit 2; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: bring the embedded lab fleet up and walk through the runbooks, narrated
demo: $(STAMP)
	$(BIN)/python -m deployments.demo

## demo-distributed: (as root) the production topology loses jhb1 whole, narrated
demo-distributed: $(STAMP)
	$(BIN)/python -m deployments.demo.distributed

## lint: ruff (lint + format), the layer contracts, mypy on the domain
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

## test: lint, then the whole test suite (unit, lab, Prefect integration)
test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
