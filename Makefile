# The two commands a newcomer needs: `make run` (the whole system) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv test lint check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

## Run the whole test suite (PostgreSQL must be running; everything else is started by the tests).
test: venv
	$(BIN)/pytest

## ruff and mypy.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

## Every static check CI runs: lint, the import layering, and no missing migration.
check: lint
	$(BIN)/lint-imports
	$(BIN)/python manage.py makemigrations --check --dry-run --settings=tests.settings

.PHONY: bench

## Every benchmark script in bench/ (all but the harness), at BENCH_SIZE (tiny: CI proves
## each still runs; full: the figures in BENCHMARKS.md). `make bench BENCH_SIZE=full`.
BENCH_SIZE ?= tiny
bench: venv
	@set -e; for script in $(filter-out bench/__init__.py bench/harness.py,$(wildcard bench/*.py)); do \
		echo "== $$script --size $(BENCH_SIZE)"; \
		$(BIN)/python -m bench.$$(basename $$script .py) --size $(BENCH_SIZE); \
	done

.PHONY: run

## Run the whole system locally: web, Celery worker and beat (README "Quick start").
## Options go in ARGS, e.g. `make run ARGS="--port 8001"`; see `make run ARGS=--help`.
run: venv
	$(BIN)/python -m devtools.run $(ARGS)
