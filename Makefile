# The two commands a newcomer needs: `make run` (the whole system) and `make test`.
# Python 3.11+ is all they need: without a PostgreSQL server, both start an embedded one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# The Django 6.0 leg: its own virtual environment, on Python 3.12 or later (pyenv's if any).
PYTHON_DJANGO6 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.12)
VENV_DJANGO6 := .venv-django6
BIN_DJANGO6 := $(VENV_DJANGO6)/bin
# What the Django 6.0 leg runs (README "Tests"): the unit and integration tests and the
# end-to-end test of the path Django's version touches most (django.tasks, a job through
# a real worker), with Hypothesis trying fewer examples (the `django6` profile,
# tests/conftest.py), to keep CI under 20 minutes, this leg being its longest. What
# Django's version does not touch runs once, on 5.2: the e2e and chaos suites, and the
# tests marked `one_django`: the SQS transport's (kombu alone), and the upgrade tests of
# one migration's own SQL (its data fixes, locks and index builds, the same SQL on both
# versions), while the path to 0.1.0 and back and the DDL each migration runs are
# tested here too.
TESTS_DJANGO6 ?= tests/unit tests/integration tests/e2e/test_django_tasks.py \
	-m "not one_django"

.PHONY: venv venv-django6 test test-django6 lint check run

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

$(BIN_DJANGO6)/python:
	$(PYTHON_DJANGO6) -m venv $(VENV_DJANGO6)

$(VENV_DJANGO6)/.installed: requirements-django6.txt | $(BIN_DJANGO6)/python
	$(BIN_DJANGO6)/pip install --quiet --upgrade pip
	$(BIN_DJANGO6)/pip install --quiet -r requirements-django6.txt
	touch $@

venv-django6: $(VENV_DJANGO6)/.installed

## Run the test suite (pytest arguments go in ARGS, e.g. `make test ARGS="tests/unit -x"`).
## Everything it needs is started by the tests, PostgreSQL too when none is running.
test: venv
	$(BIN)/python -m devtools.test $(ARGS)

## The Django 6.0 leg of CI: no missing migration on Django 6.0 either, then the suite on
## Django 6.0 and Python 3.12 (README "Tests").
test-django6: venv-django6
	$(BIN_DJANGO6)/python manage.py makemigrations --check --dry-run --settings=tests.settings
	$(BIN_DJANGO6)/python -m devtools.test --hypothesis-profile=django6 $(TESTS_DJANGO6) $(ARGS)

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

## Every benchmark script in bench/ (all but the harness, the live runs' Django settings and
## the soak, a ten-minute run of its own: `python -m bench.soak`), at BENCH_SIZE (tiny: CI
## proves each still runs; full: the figures in BENCHMARKS.md). `make bench BENCH_SIZE=full`.
## Each script drops its database when it ends; what they write to the temporary directory
## (the precision histogram below full size) goes to one of this run's, removed after it.
BENCH_SIZE ?= tiny
bench: venv
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for script in $(filter-out bench/__init__.py bench/harness.py bench/settings.py bench/soak.py,$(wildcard bench/*.py)); do \
		echo "== $$script --size $(BENCH_SIZE)"; \
		TMPDIR="$$tmp" $(BIN)/python -m bench.$$(basename $$script .py) --size $(BENCH_SIZE); \
	done

## Run the whole system locally: web, Celery worker and beat (README "Quick start").
## Options go in ARGS, e.g. `make run ARGS="--port 8001"`; see `make run ARGS=--help`.
run: venv
	$(BIN)/python -m devtools.run $(ARGS)
