# The two commands of the README: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in .venv by themselves.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo demo-distributed test test-slow lint unit venv clean chaos chaos-tier chaos-sweep \
	chaos-tier-distributed

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

## test: lint, then the test suite (unit, lab, Prefect integration, browser) on
## $(TEST_WORKERS) pytest-xdist workers (TEST_WORKERS=0 runs it in one process), without
## the tests that take minutes by nature (`make test-slow` runs those). Three workers on
## two cores: the suite's longest tests mostly wait (on a lease, a probe period, a
## server), and a third worker fills those waits (on 2 cores: 960 s, where 2 workers took
## 1,217-1,262 s)
TEST_WORKERS ?= 3
PYTEST_ARGS  ?=
test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

## test-slow: the end-to-end tests that take minutes each (a whole DC lost in the
## namespaced lab, the approval window past the lease renewal, drain and rebalance,
## routing by pool, the chaos command), side by side on 3 workers: they mostly wait
test-slow: $(STAMP)
	$(BIN)/pytest -n 3 --dist loadgroup -m slow $(PYTEST_ARGS)

## chaos: a fresh --fast lab, every implemented fault of issue 10 in turn, the evidence
## in $(CHAOS_DIR)/chaos.json and chaos.html; the lab is taken down whatever happened.
## CHAOS_TOPOLOGY=distributed: the same on the distributed lab (namespaces, HA control
## plane, workers), as root
CHAOS_DIR      ?= .ppo-dr/chaos-lab
CHAOS_FAULTS   ?= all
CHAOS_LIMIT    ?= 7200
CHAOS_LAB      ?= --clients 6 --size 12
CHAOS_TOPOLOGY ?= loopback
chaos: $(STAMP)
	@$(BIN)/ppo-dr lab down --dir $(CHAOS_DIR) >/dev/null 2>&1 || true
	rm -rf $(CHAOS_DIR)
	$(BIN)/ppo-dr lab up --dir $(CHAOS_DIR) --fast $(CHAOS_LAB) --topology $(CHAOS_TOPOLOGY) \
		--timeout 120
	started=$$(date +%s); \
	timeout -s INT -k 180 $(CHAOS_LIMIT) $(BIN)/ppo-dr lab chaos --dir $(CHAOS_DIR) --faults $(CHAOS_FAULTS) \
		--json $(CHAOS_DIR)/chaos.json --report $(CHAOS_DIR)/chaos.html; rc=$$?; \
	$(BIN)/ppo-dr lab down --dir $(CHAOS_DIR) >/dev/null; \
	$(MAKE) --no-print-directory chaos-sweep CHAOS_DIR=$(CHAOS_DIR); \
	echo "chaos: exit $$rc after $$(( $$(date +%s) - started )) s; $(CHAOS_DIR)/chaos.html"; \
	exit $$rc

## chaos-sweep: SIGKILL whatever the chaos run's `serve` left (its Prefect server, flow
## runs: every process whose environment has its PPO_DR_HOME) when it was itself killed
chaos-sweep:
	@home="PPO_DR_HOME=$(abspath $(CHAOS_DIR))/chaos-serve"; \
	for p in /proc/[0-9]*; do \
		grep -qsxzF "$$home" $$p/environ && kill -9 $${p#/proc/} 2>/dev/null; \
	done; true

## chaos-tier: the CI tier of issue 10, at most 10 min for the faults: the same checks on
## a smaller lab (4 clients of 4 MB: shorter mirrors and restores, a shorter RTO to wait
## for), in the issue's order.
CHAOS_TIER ?= power,hang,bitflip,channel-errors,flapping,orchestrator-kill
chaos-tier:
	$(MAKE) chaos CHAOS_FAULTS=$(CHAOS_TIER) CHAOS_LIMIT=600 \
		CHAOS_DIR=.ppo-dr/chaos-tier CHAOS_LAB="--clients 4 --size 4"

## chaos-tier-distributed: the distributed lab's share of the CI tier: a power cut on a
## 4-client distributed lab (namespaces, HA control plane, workers; as root), cut at 5 min
CHAOS_TIER_DISTRIBUTED ?= power
chaos-tier-distributed:
	$(MAKE) chaos CHAOS_FAULTS=$(CHAOS_TIER_DISTRIBUTED) CHAOS_LIMIT=300 CHAOS_TOPOLOGY=distributed \
		CHAOS_DIR=.ppo-dr/chaos-tier-distributed CHAOS_LAB="--clients 4 --size 4"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
