# monthend — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
MONTHEND := $(VENV)/bin/monthend
PERIOD ?= 2025-01
TXNS ?= 100000
BENCH_TXNS ?= 1000000
BENCH_WORKERS ?= 2
BENCH_POLICIES ?= $(BENCH_TXNS)

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create the virtual environment and install monthend

migrate: install ## Apply pending migrations (DATABASE_URL / PG* / embedded cluster)
	$(MONTHEND) migrate

demo: install ## Embedded database, migrated, one month of sample data, a full run and its period-end
	$(MONTHEND) migrate --with-demo-data-tools
	$(MONTHEND) generate --period $(PERIOD) --txns $(TXNS) --bad-rows 0.01
	$(MONTHEND) run --period $(PERIOD) --workers 2
	$(MONTHEND) period-end --period $(PERIOD) --workers 2
	$(MONTHEND) verify
	@echo "Stop the embedded cluster with: $(MONTHEND) db stop"

bench: install ## Benchmark: BENCH_TXNS rows (1M), BENCH_POLICIES policies (1M), BENCH_WORKERS (2), against the raw write speed
	$(MONTHEND) migrate --with-demo-data-tools
	$(MONTHEND) bench --txns $(BENCH_TXNS) --workers $(BENCH_WORKERS) --policies $(BENCH_POLICIES)

lint: install ## ruff over the Python code
	$(VENV)/bin/ruff check driver tests tools

lint-sql: install ## plpgsql_check over every PL/pgSQL routine (the configured or embedded database)
	$(PY) tools/plpgsql_lint.py

# Test tiers (markers in pyproject.toml): a plain `pytest` is the fast tier.
test: install lint ## Fast tier, ~2 min: ruff, unit and SQL tests, one end-to-end run
	$(VENV)/bin/pytest -q -m 'not slow and not full'

test-all: install lint ## Everything (CI): fast tier + crashes, private clusters, benchmarks, fault schedules
	$(VENV)/bin/pytest -q -m ''

test-faults: install ## Only the long fault-injection schedules (part of test-all)
	$(VENV)/bin/pytest -q -m slow

db-stop: install ## Stop the embedded cluster
	$(MONTHEND) db stop

clean: ## Remove the virtual environment (the embedded cluster stays in .monthend/)
	rm -rf $(VENV)

.PHONY: help install migrate demo bench lint lint-sql test test-all test-faults db-stop clean
