# swarmlet: build, test and demo entry points. `make` alone lists them.
# They work from a fresh Debian/Ubuntu machine as root: `venv`
# (scripts/install-deps.sh, also run by `make demo`) installs what is missing.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
# Image the integration tests run as tasks.
TEST_IMAGE := swarmlet/demo:latest
# Hosts of the local multi-host cluster (make cluster NODES=5).
NODES ?= 3
SCALE ?= small
# Runs a command with DOCKER_HOST set to a Docker engine that answers (an
# existing one, else a private dockerd under .run/docker/) and the test images
# built there.
WITH_DOCKER = DOCKER_HOST="$$(scripts/dockerd.sh start | tail -n 1)" && export DOCKER_HOST && scripts/build-images.sh &&

.PHONY: help venv protos protos-check lint typecheck vagrant-validate test unit \
	demo down cluster cluster-down bench-convergence bench-scheduler bench-failover \
	bench-recovery bench-scale bench-bigservice chaos clean

help: ## list the targets
	@echo "usage: make TARGET"
	@echo
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN { FS = ":.*## " } { printf "  %-18s %s\n", $$1, $$2 }'

venv: ## install missing system packages, create .venv, pip install -e '.[dev]'
	@scripts/install-deps.sh

protos: venv ## regenerate common/api/ from protos/*.proto
	$(PYTHON) protos/generate.py

protos-check: venv ## fail if common/api/ is stale
	$(PYTHON) protos/generate.py --check

lint: venv ## ruff check + ruff format --check + lint-imports (the layering contracts in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv ## mypy (strict, settings in pyproject.toml)
	$(BIN)/mypy

vagrant-validate: ## check vagrant/Vagrantfile (vagrant validate; installs Debian's vagrant if missing)
	@if ! command -v vagrant >/dev/null 2>&1; then \
		if [[ $$(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi; \
		grep -q 'Candidate: [0-9]' <<<"$$(apt-cache policy vagrant 2>/dev/null)" || \
			"$${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
		grep -q 'Candidate: [0-9]' <<<"$$(apt-cache policy vagrant 2>/dev/null)" || \
			{ echo "vagrant-validate: no vagrant package available from apt" >&2; exit 1; }; \
		echo "vagrant-validate: installing Debian's vagrant"; \
		"$${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends vagrant </dev/null; \
	fi
	cd vagrant && VAGRANT_CHECKPOINT_DISABLE=1 vagrant validate --ignore-provider

test: venv protos-check lint typecheck vagrant-validate ## what CI runs: the checks, then every test, with a Docker engine
	$(WITH_DOCKER) SWARMLET_TEST_IMAGE=$(TEST_IMAGE) $(BIN)/pytest -q

unit: venv ## unit tests only (tests/unit, no Docker needed)
	$(BIN)/pytest -q tests/unit

demo: ## manager + embedded etcd + one agent, a 3-replica web service, a page fetched
	@scripts/demo.sh up

down: ## remove the demo's services, stop its daemons, delete its state
	@scripts/demo.sh down

cluster: venv ## local multi-host cluster: NODES (3) namespace hosts with a dockerd and an agent each, a manager, a registry
	@scripts/cluster.sh up $(NODES)

cluster-down: ## remove everything make cluster created (daemons, containers, namespaces, bridge, state)
	@scripts/cluster.sh down

bench-convergence: venv ## convergence benchmark (python -m bench.convergence)
	$(WITH_DOCKER) $(PYTHON) -m bench.convergence

bench-scheduler: venv ## scheduler benchmark: placements/s on hollow nodes, no Docker (python -m bench.scheduler)
	$(PYTHON) -m bench.scheduler

bench-failover: venv ## leader failover benchmark, no Docker needed (python -m bench.failover)
	$(PYTHON) -m bench.failover

bench-recovery: venv ## recovery benchmark on the local 3-host cluster: swarmlet vs Docker Swarm (python -m bench.recovery)
	$(PYTHON) -m bench.recovery

bench-scale: venv ## scale benchmark: 500 hollow nodes, 15,000 tasks (SCALE=full: then 5,000 nodes, 150,000 tasks, then 150,000 on 500) (python -m bench.scale)
	$(PYTHON) -m bench.scale --scale $(SCALE)

bench-bigservice: venv ## one 100,000-replica service on 4 hollow nodes: loop stalls, then service ps of it (python -m bench.bigservice)
	$(PYTHON) -m bench.bigservice

chaos: venv ## the long chaos suite on the local cluster (make test runs a short one); SWARMLET_CHAOS_MINUTES bounds it
	SWARMLET_CHAOS=long $(BIN)/pytest -q tests/chaos

clean: down cluster-down ## make down and cluster-down, stop the private Docker engines, remove .run/
	@for d in .run/docker/*/; do if [[ -d $$d ]]; then scripts/dockerd.sh stop "$$(basename "$$d")"; fi; done
	rm -rf --one-file-system .run
