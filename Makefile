# The everyday commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export ARTIFACT_CACHE ?= $(CURDIR)/.cache/artifacts

SHELL_SCRIPTS := $(wildcard dockerfile/*.sh provision/*.sh provision/lib/*.sh provision/host/*.sh devops/*.sh devops/init.d/* devops/joblab-exec devops/joblab-lb tests/*.sh .ci/run)

# The lab (see lab.yml, Vagrantfile, docs/lab.md).
export LAB_HTTP_PORT ?= 8080
APP_WHEEL_STAMP := $(ARTIFACT_CACHE)/app/.built
APP_SOURCES := $(shell git ls-files app worker pyproject.toml 2>/dev/null)

.PHONY: help venv kafka-jars host-deps-run host-deps-test host-deps-bench run test unit integration unit-integration lint clean \
        app-wheel lab lab-user infra-test lab-files-test lab-idempotence lab-deploy-test lab-suite lab-destroy lab-ssh-config \
        drills bench container container-test cluster-test cluster-suite bench-cluster

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,drills,postgresql,mssql]'
	@touch $@

venv: $(VENV)/.installed ## create .venv and install the app, worker and test tools (schemathesis included)

# The version is lab.yml's (LAB_KAFKA_VERSION): fetch-kafka.sh resolves it, and is a quick no-op
# when those jars are cached already.
kafka-jars: venv ## fetch the pinned Kafka broker's jars into the artifact cache (no-op when cached)
	@LAB_PYTHON=$(PY) provision/host/fetch-kafka.sh

host-deps-run:
	@provision/host/host-deps.sh run

host-deps-test:
	@provision/host/host-deps.sh test

host-deps-bench:
	@provision/host/host-deps.sh bench

run: host-deps-run venv kafka-jars ## broker + worker + gunicorn in the foreground; API on http://127.0.0.1:8000 (PORT=... overrides)
	devops/run-local.sh

lint: host-deps-test venv ## shellcheck the scripts, bash-version traps, ruff (pyproject.toml), Python 3.9 compatibility
	shellcheck -x $(SHELL_SCRIPTS)
	$(VENV)/bin/ruff check app worker tests fablib fabfile.py devops/gunicorn.conf.py devops/joblab-gunicorn provision/host/vm-preflight.py
	tests/lint-shell-compat.sh $(SHELL_SCRIPTS)
	$(VENV)/bin/vermin --no-tips --violations -t=3.9- app worker devops/gunicorn.conf.py

unit: venv ## unit tests (no network)
	$(PY) -m pytest tests/unit

integration: host-deps-test venv kafka-jars ## integration tests: real Kafka broker, SQLite and PostgreSQL
	$(PY) -m pytest tests/integration

test: host-deps-test venv kafka-jars ## everything CI runs: lint, unit + integration, local drills, the lab suite; a summary of what ran
	MAKE="$(MAKE)" tests/layers.sh

unit-integration: host-deps-test venv kafka-jars
	$(PY) -m pytest tests/unit tests/integration

$(APP_WHEEL_STAMP): $(VENV)/.installed $(APP_SOURCES)
	@mkdir -p $(dir $@)
	rm -f $(ARTIFACT_CACHE)/app/joblab-*.whl
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) \
	    $(PY) -m pip wheel -q --no-deps -w $(ARTIFACT_CACHE)/app .
	@touch $@

app-wheel: $(APP_WHEEL_STAMP) ## build the app wheel the lab installs (rebuilt only when sources change)

lab: venv kafka-jars app-wheel ## boot app + sidecar with Vagrant, provision, smoke-test; prints URL and token
	provision/host/lab-up.sh

container: venv kafka-jars app-wheel ## the seed's all-in-one Docker image (dockerfile/): built offline by the lab's provision scripts (JOBLAB_DB=postgresql: with PostgreSQL)
	provision/host/container-build.sh

container-test: container ## the image end to end: a job through the published port, volumes kept across containers, graceful stop, the dev variant
	$(PY) -m pytest -p no:cacheprovider tests/container

lab-user: ## print a new token for user NAME on the lab (last line): make lab-user NAME=x
	@provision/host/lab-user.sh "$(NAME)"

lab-ssh-config:
	@mkdir -p .vagrant && vagrant ssh-config > .vagrant/ssh-config

# Which of them: the lab suite sets INFRA_SKIP_NOLAB=1, having run the `nolab` ones while the lab booted.
INFRA_MARKS := not reprovision and not deploy$(if $(filter 1,$(INFRA_SKIP_NOLAB)), and not nolab)
infra-test: venv lab-ssh-config ## testinfra against both lab machines (hosts from vagrant ssh-config)
	$(PY) -m pytest -p no:cacheprovider tests/infra --ssh-config=.vagrant/ssh-config -m "$(INFRA_MARKS)" --durations=12

lab-files-test: venv ## the infra tests that need no lab: the Vagrantfile, the VM preflight, fetch-kafka.sh
	$(PY) -m pytest -p no:cacheprovider tests/infra --ssh-config=/dev/null -m nolab

lab-idempotence: venv lab-ssh-config ## re-provision the running lab and prove nothing changed
	$(PY) -m pytest -p no:cacheprovider tests/infra --ssh-config=.vagrant/ssh-config -m reprovision

lab-deploy-test: venv lab-ssh-config ## fab deploy/rollback/scale under HTTP load: 0 failed requests, no orphans, no lost job
	$(PY) -m pytest -p no:cacheprovider tests/infra --ssh-config=.vagrant/ssh-config -m deploy

cluster-test: venv lab-ssh-config ## the running cluster lab: each role, rolling deploy/rollback under load, re-provision changes nothing
	$(PY) -m pytest -p no:cacheprovider tests/cluster tests/infra/test_idempotence.py --ssh-config=.vagrant/ssh-config --durations=12

cluster-suite: ## LAB_TOPOLOGY=cluster make lab, cluster-test, cluster drills, destroy (fails if it cannot run here, unless ALLOW_SKIP_LAB=1)
	provision/host/cluster-suite.sh

lab-suite: ## make lab, infra tests, idempotence check, deploy test, drills on the lab, destroy (fails if the lab cannot run here, unless ALLOW_SKIP_LAB=1)
	provision/host/lab-suite.sh

# Drills and benchmarks (docs/drills.md, docs/bench.md).
BENCH_VENV := .venv-bench

drills: host-deps-test venv kafka-jars ## fault drills + API fuzzing on a local stack (LAB=1: the running lab); ends lost=0 duplicates=0 stuck=0
	$(PY) -m tests.drills $(if $(filter 1,$(LAB)),--lab) $(DRILL_ARGS)

# Celery, Redis's client and matplotlib live only here, never in .venv.
$(BENCH_VENV)/.installed: pyproject.toml tests/bench/requirements.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[test,postgresql]' -r tests/bench/requirements.txt
	@touch $@

bench: host-deps-bench venv kafka-jars $(BENCH_VENV)/.installed ## HTTP (wrk), pipeline vs Celery + Redis, lab timings: tables + var/bench/bench.png (BENCH_LAB=0 skips the lab)
	$(BENCH_VENV)/bin/python -m tests.bench $(BENCH_ARGS)

bench-cluster: venv kafka-jars app-wheel ## the single box and the cluster booted in turn, same client: boot, idle latency, jobs/s, deploy; ratios (var/bench/topology.json)
	$(PY) -m tests.bench.topology_bench

lab-destroy: ## remove the lab machines, of either topology (base image and artifact cache stay)
	@# Docker machines are killed first: a graceful stop would wait out docker's 10 s per machine
	@# for an init that ignores SIGTERM, and nothing on a machine being destroyed needs to shut down.
	@for id in .vagrant/machines/*/docker/id; do [ -f "$$id" ] && docker kill "$$(cat "$$id")" >/dev/null 2>&1; done; true
	vagrant destroy -f --parallel
	rm -f .vagrant/lab-topology

clean: ## remove the venvs and local state (the artifact cache stays)
	rm -rf $(VENV) $(BENCH_VENV) var .pytest_cache
