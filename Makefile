# Everyday commands. `make run` and `make test` are all a fresh machine with Python >= 3.11 needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install run test lint format psql upgrade bench clean

# Re-install only when the dependencies change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The benchmarks' extra (procrastinate, the peer they are measured against), on top of the dev install.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

run: install  ## start the service (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/python -m service

test: install  ## the whole suite against a real PostgreSQL
	$(BIN)/pytest

lint: install  ## style, types and import layering
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

upgrade: install  ## apply the database migrations
	$(BIN)/jobmanager db upgrade

# wrk, ab (apache2-utils) and GNU parallel are the system's packages, not pip's: run as root with apt-get, the bench
# installs those missing itself; otherwise the figures that need them are reported as not measured.
bench: $(VENV)/.bench-installed  ## every benchmark next to its baseline; results in bench/results/
	$(BIN)/python -m bench

psql: install  ## psql on the configured database, embedded or not
	$(BIN)/jobmanager psql

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
