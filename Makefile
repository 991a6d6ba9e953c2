# syncd front door. On a fresh machine (Python 3.11+, pip, make) these need nothing else:
#   make demo    check the example config, then the live demonstration (syncd demo, ~30 s)
#   make test    the whole test suite (SQLite and PostgreSQL; see README)
#   make lint    ruff + mypy
#   make bench   benchmarks
#   make reliability        kill -9, faults and replicas: the crash-safety table (~15 min)
#   make reliability-quick  the same with fewer kills and changes (< 5 min, CI)
# Every target builds the project venv (.venv) first, and rebuilds it when pyproject.toml or
# constraints.txt change.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.syncd-installed
CONFIG ?= config.toml
LINT_PATHS := syncd connectors tests $(if $(wildcard bench/*.py),bench)
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench reliability reliability-quick constraints clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# The demo runs the sandboxes and the daemon in one process against a temporary copy of $(CONFIG):
# its own fresh SQLite ledger and JSON log in a temporary directory (removed afterwards; keep them
# with DEMO_ARGS=--keep), so every run starts clean and ./syncd.db is never touched by the demo.
DEMO_ARGS ?=
demo: venv
	$(BIN)/syncd check-config --config $(CONFIG)
	$(BIN)/syncd db upgrade --config $(CONFIG)
	$(BIN)/syncd demo --config $(CONFIG) $(DEMO_ARGS)

test: venv
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy $(LINT_PATHS)

bench: venv
	@if [ -f bench/__main__.py ]; then $(BIN)/python -m bench; \
	else echo "bench: no benchmark suite in bench/ yet (it comes with the sync engine)" >&2; exit 1; fi

# The crash-safety harness (tests/reliability, docs/development.md "Reliability harness"): syncd run
# as subprocesses killed with SIGKILL at random and at the hard moments, sandbox faults, other users'
# changes; one table, then `lost=N duplicated=N converged=P%`; non-zero unless 0, 0 and 100 %.
RELIABILITY_ARGS ?=
reliability: venv
	$(BIN)/python -m tests.reliability $(RELIABILITY_ARGS)

reliability-quick: venv
	$(BIN)/python -m tests.reliability --quick $(RELIABILITY_ARGS)

constraints: venv
	{ sed -n '1,/^# Regenerate/p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache syncd.db syncd.db-wal syncd.db-shm
