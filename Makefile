# The interface to the project: `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install install-dev run serve test lint format typecheck migrate revision openapi bench bench-console screenshots clean

help:
	@echo "make run        install, migrate the embedded SQLite database and serve on :$(PORT)"
	@echo "make test       install dev dependencies and run the suite (SQLite and PostgreSQL, and the Python client's)"
	@echo "make lint       ruff (lint + format check), mypy --strict, import-linter's contracts"
	@echo "make bench      benchmark /v1/verify (rate limits, usage, two instances) and the webhook fan-out on PostgreSQL (docs/performance.md)"
	@echo "                BENCH_ARGS=\"--only fanout\" or \"--only verify\": one part alone"
	@echo "make openapi    regenerate openapi/openapi.json"
	@echo "make screenshots  the console's pages, taken by its browser tests, into docs/console"
	@echo "make migrate    apply migrations to KEYSERVICE_DATABASE_URL (default ./keyservice.db)"
	@echo "make revision m=\"...\"  new Alembic migration"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("keyservice needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# The Python client (clients/python) is installed beside the service: the suite runs its tests too.
$(VENV)/.installed-dev: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]" -e "./clients/python[fastapi]"
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/keyservice migrate
	$(BIN)/keyservice serve --port $(PORT)

serve: run

test: install-dev
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check src tests migrations bench clients/python
	$(BIN)/ruff format --check src tests migrations bench clients/python
	$(BIN)/mypy
	cd clients/python && $(abspath $(BIN))/mypy
	$(BIN)/lint-imports --no-cache

format: install-dev
	$(BIN)/ruff format src tests migrations bench clients/python
	$(BIN)/ruff check --fix src tests migrations bench clients/python

typecheck: install-dev
	$(BIN)/mypy
	cd clients/python && $(abspath $(BIN))/mypy

migrate: install
	$(BIN)/keyservice migrate

revision: install-dev
	$(BIN)/alembic revision --autogenerate -m "$(m)"

openapi: install
	$(BIN)/keyservice openapi --output openapi/openapi.json

# The suite's browser tests take them anyway; this keeps them, for the README.
screenshots: install-dev
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest -q tests/console -k browser -p no:randomly

# Needs PostgreSQL (KEYSERVICE_BENCH_POSTGRES_URL, default postgres@127.0.0.1:5432) and wrk,
# installed from the OS packages when missing, as .ci/run installs nginx; about two minutes.
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--seconds 5", or "--only fanout" for
# the webhook fan-out alone (it needs no wrk).
bench: install
	@if ! command -v wrk >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 || echo "wrk could not be installed"; \
	fi
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.console

# The console's pages with 1,000 keys and 30 days of hourly usage (docs/console-performance.md).
bench-console: install
	$(BIN)/python -m bench.console $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache keyservice.db*
