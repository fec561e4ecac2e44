# `make dev` and `make test` work from a clean clone: each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install dev test test-fast bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt infra/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements-dev.txt -r infra/requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

dev: install
	$(PY) -m dev.stack

test: install
	$(PY) -m pytest -q tests infra/tests

bench: install
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .mailbridge .pytest_cache
