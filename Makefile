# Developer entry points; everything runs from the project's own virtualenv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install up reset test lint down

help:
	@echo "make up      start Postgres/Redis/RabbitMQ if needed, migrate, run every component (Ctrl-C stops)"
	@echo "make reset   drop, migrate and seed every database"
	@echo "make test    run the test suite (PYTEST_ARGS=... passes options to pytest)"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make down    stop the project's Postgres cluster"

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(PY) -m infra.launcher up

reset: install
	$(PY) -m infra.launcher reset

test: install
	$(PY) -m infra.pgcluster start
	$(PY) -m infra.deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy paxkit gateway coordinator services infra

down: install
	$(PY) -m infra.pgcluster stop
