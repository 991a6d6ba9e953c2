# syncd front door. On a fresh machine (Python 3.11+, pip, make) these need nothing else:
#   make demo    check the example config, then the live demonstration (syncd demo, ~30 s)
#   make test    the whole test suite (SQLite and PostgreSQL; see README)
#   make lint    ruff + mypy (--strict on syncd/ and connectors/)
#   make bench   benchmarks with hard targets (under 10 minutes; exits 1 when one is missed)
#   make bench-quick   the same, smaller (under a minute); make bench-profile: pyinstrument profiles
#   make fuzz    the fuzz tests long (tests/fuzz: hypothesis, then atheris targets if installable)
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

.PHONY: venv demo test lint bench bench-quick bench-profile fuzz reliability reliability-quick constraints clean

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

# The short fuzz properties run in `make test`; here each draws FUZZ_EXAMPLES examples (HYPOTHESIS_PROFILE=long),
# then every atheris target runs ATHERIS_SECONDS (atheris comes from the `fuzz` extra; if it cannot be
# installed the targets say so and are skipped).
FUZZ_EXAMPLES ?= 20000
ATHERIS_SECONDS ?= 60
ATHERIS_TARGETS := salesforce_webhook dentally_webhook zoho_webhook crosswalk_csv config salesforce_health_mapping \
	zoho_crm_mapping saludya_mapping onlive_mapping dentally_mapping
fuzz: venv
	HYPOTHESIS_PROFILE=long SYNCD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider tests/fuzz
	@$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,fuzz]' \
		|| echo "fuzz: atheris could not be installed here; its targets are skipped" >&2
	@set -o pipefail; for target in $(ATHERIS_TARGETS); do \
		echo "atheris: $$target ($(ATHERIS_SECONDS) s)"; \
		$(BIN)/python -m tests.fuzz.atheris_targets $$target -max_total_time=$(ATHERIS_SECONDS) -rss_limit_mb=2048 \
			-artifact_prefix=/tmp/syncd-fuzz- 2>&1 | grep -E '^(#[0-9]+ +DONE|Done|==|ERROR|atheris)' || exit 1; \
	done

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy --strict syncd connectors
	$(BIN)/mypy $(LINT_PATHS)

# Benchmarks (bench/README.md): figures beside hard targets, written to bench/results/ (`make test`
# never runs them). BENCH_ARGS passes options, e.g. BENCH_ARGS="--only e2e".
BENCH_ARGS ?=
bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: venv
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

bench-profile: venv
	$(BIN)/python -m bench --profile

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
