# The everyday commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export ARTIFACT_CACHE ?= $(CURDIR)/.cache/artifacts
KAFKA_VERSION ?= 3.9.1
KAFKA_STAMP := $(ARTIFACT_CACHE)/kafka-$(KAFKA_VERSION)/.complete

SHELL_SCRIPTS := $(wildcard provision/*.sh devops/*.sh .ci/run)

.PHONY: help venv kafka-jars host-deps-run host-deps-test run test unit integration lint py39-check clean

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed ## create .venv and install the app, worker and test tools

$(KAFKA_STAMP):
	provision/fetch-kafka.sh

kafka-jars: $(KAFKA_STAMP) ## fetch the pinned Kafka broker's jars into the artifact cache (no-op when cached)

host-deps-run:
	@provision/host-deps.sh run

host-deps-test:
	@provision/host-deps.sh test

run: host-deps-run venv kafka-jars ## broker + worker + gunicorn in the foreground; API on http://127.0.0.1:8000 (PORT=... overrides)
	devops/run-local.sh

lint: host-deps-test venv ## shellcheck the scripts, check Python 3.9 compatibility
	shellcheck $(SHELL_SCRIPTS)
	$(VENV)/bin/vermin --no-tips --violations -t=3.9- app worker devops/gunicorn.conf.py

unit: venv ## unit tests (no network)
	$(PY) -m pytest tests/unit

integration: host-deps-test venv kafka-jars ## integration tests: real Kafka broker, SQLite and PostgreSQL
	$(PY) -m pytest tests/integration

test: host-deps-test venv kafka-jars lint ## everything CI runs: lint, unit and integration tests
	$(PY) -m pytest tests/unit tests/integration

clean: ## remove the venv and local state (the artifact cache stays)
	rm -rf $(VENV) var .pytest_cache
