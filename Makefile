# Developer entry points; everything runs from the project's own virtualenv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PYTEST_ARGS ?=
# `make load` / `make load-ui`: locust against a running stack (loopback only).
HOST ?= http://127.0.0.1:8000
USERS ?= 50
RATE ?= 10
DURATION ?= 60s
LOCUST := $(VENV)/bin/locust -f infra/locust/locustfile.py --host $(HOST)
LOAD_DIR := bench-results/locust
# Benchmark modules run by `make bench`, each `python -m <module>`; add yours here.
BENCHMARKS ?= infra.bench.gateway infra.bench.raw infra.bench.statements infra.bench.orders
# Options of infra.bench.orders, e.g. ORDERS_ARGS=--no-profile (no CPU split by layer).
ORDERS_ARGS ?=
# `make chaos`: CHAOS=short (CI) or long; SEED=N replays a schedule, MINUTES=M sizes long.
# `make up SCALE=N`: N instances of every component's web and worker processes behind a
# local HAProxy (docs/scaling.md); unset: the stack.toml key `scale` (1: no balancer).
SCALE ?=
CHAOS ?= short
SEED ?=
MINUTES ?=

.PHONY: help install install-run browser haproxy up reset test lint bench load load-ui chaos scenario scenarios down

help:
	@echo "make up      start Postgres/Redis/RabbitMQ if needed, migrate, run every component (Ctrl-C stops)"
	@echo "             (SCALE=N: N instances of each behind a local HAProxy)"
	@echo "make reset   drop, migrate and seed every database"
	@echo "make test    run the test suite (PYTEST_ARGS=... passes options to pytest)"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make bench   run the benchmarks ($(BENCHMARKS)); results in bench-results/"
	@echo "make load    locust headless against HOST=$(HOST) (USERS, RATE, DURATION), then the audit"
	@echo "make load-ui locust web UI on http://127.0.0.1:8089 against HOST=$(HOST)"
	@echo "make chaos   the stack of its own under load and real faults, then the verdict"
	@echo "             (CHAOS=short|long, SEED=N, MINUTES=M); report in chaos-results/"
	@echo "make scenario NAME=n  play one scenario (no NAME: list them); diagrams in .state/scenarios/"
	@echo "make scenarios        play every scenario; each asserts its verdict"
	@echo "make down    stop the project's Postgres cluster"

$(PY):
	python3 -m venv $(VENV)

# Running the stack needs only the runtime dependencies; tests, lint and benchmarks add dev.
$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

install-run: $(RUN_STAMP)

up: install-run $(if $(filter-out 1,$(SCALE)),haproxy)
	$(PY) -m infra.launcher up $(if $(SCALE),--scale $(SCALE))

reset: install-run
	$(PY) -m infra.launcher reset

# The dashboard's browser tests drive Debian's chromium headless (Playwright, no browser
# download), with a CJK font for the seed's terms in the screenshots; installed here when
# root, else they are skipped unless CI is set.
BROWSER_PACKAGES := chromium chromium-driver fonts-wqy-microhei
browser:
	@dpkg -s $(BROWSER_PACKAGES) >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			$(BROWSER_PACKAGES); } || \
		echo "chromium not installed: the browser tests will be skipped"

# HAProxy (Debian package) balances a component's instances when the stack runs scaled
# (SCALE=N, and the tests' scaled stack); installed here when missing and root.
haproxy:
	@command -v haproxy >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } || \
		echo "haproxy not installed: a scaled stack (SCALE>1) cannot start"

test: install browser haproxy
	$(PY) -m infra.pgcluster start
	$(PY) -m infra.deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy paxkit gateway coordinator services infra tests

# wrk is the load generator (Debian package); without it the benchmarks fall back to a
# slower Python generator.
bench: install
	$(PY) -m infra.pgcluster start
	$(PY) -m infra.deps
	@command -v wrk >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && apt-get install -y -qq wrk; } || \
		echo "wrk not installed: using the Python load generator"
	@status=0; start=$$(date +%s); for module in $(BENCHMARKS); do \
		args=; [ $$module = infra.bench.orders ] && args="$(ORDERS_ARGS)"; \
		$(PY) -m $$module $$args || status=1; done; \
		$(PY) -m infra.bench.report --since $$start || status=1; exit $$status

# The stack must be running (make up) and PAXMART_ADMIN_TOKEN exported for the audit.
load: install
	@mkdir -p $(LOAD_DIR)
	@status=0; $(LOCUST) --headless -u $(USERS) -r $(RATE) -t $(DURATION) \
		--html $(LOAD_DIR)/report.html --csv $(LOAD_DIR)/paxmart || status=1; \
		$(PY) -m infra.locust.audit --host $(HOST) || status=1; exit $$status

load-ui: install
	$(LOCUST) --web-host 127.0.0.1 --web-port 8089

chaos: install
	$(PY) -m infra.chaos --profile $(CHAOS) $(if $(SEED),--seed $(SEED)) \
		$(if $(MINUTES),--minutes $(MINUTES))

scenario: install
	$(PY) -m infra.pgcluster start
	$(PY) -m infra.deps
	$(PY) -m infra.scenarios $(NAME)

scenarios: install
	$(PY) -m infra.pgcluster start
	$(PY) -m infra.deps
	$(PY) -m infra.scenarios --all

down: install-run
	$(PY) -m infra.pgcluster stop
