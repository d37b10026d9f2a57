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

.PHONY: run

## Run the whole system locally: web, Celery worker and beat (README "Quick start").
## Options go in ARGS, e.g. `make run ARGS="--port 8001"`; see `make run ARGS=--help`.
run: venv
	$(BIN)/python -m devtools.run $(ARGS)
