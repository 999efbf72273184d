# kubehands developer entry points. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
# Python >= 3.12: pyenv's newest 3.12, else python3.12, python3.13 or python3 on PATH (hack/lib/common.sh, kh::python).
PYTHON ?= $(shell bash -c 'source hack/lib/common.sh && kh::python')
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help venv deps kubernetes cluster cluster-stop cluster-reset cluster-down cluster-status images run test test-unit bench crds docs lint clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.12 not found on PATH or under pyenv: install it (Debian 13: apt-get install python3 python3-venv; Debian 12: pyenv install 3.12) or run make PYTHON=/path/to/python3.12"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed  ## the project virtualenv (.venv)

deps:  ## Debian packages for the cluster and image builds
	hack/install-deps.sh

kubernetes: deps  ## build the Kubernetes v1.20.2 binaries once into ~/.cache/kubehands
	hack/build-kubernetes.sh

cluster: deps kubernetes  ## start the local single-node cluster (idempotent); prints KUBECONFIG=
	hack/cluster.sh up

cluster-stop:  ## stop the local cluster and restore the host, keeping its state (sandboxes, workspaces, keys)
	hack/cluster.sh stop

cluster-reset:  ## stop the local cluster and delete its state: every sandbox, workspace and API key
	hack/cluster.sh down

cluster-down: cluster-reset  ## the same as cluster-reset

cluster-status:
	hack/cluster.sh status

images: deps venv  ## build local images (pause, agent-server, kubehands) and import them
	hack/build-images.sh all

# Not `cluster`: hack/run.sh starts it, so that it knows whether Ctrl-C must stop it again.
run: venv kubernetes images  ## cluster + CRDs + operator + gateway; prints the OpenHands environment
	hack/run.sh

test: lint deps venv kubernetes images  ## lint, then the whole test suite (unit, cluster, node tiers; then the host tier if no cluster ran)
	hack/test.sh $(PYTEST_ARGS)

test-unit: venv  ## unit tier only: no cluster
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

bench: deps venv kubernetes images  ## benchmarks on the local cluster: bench/results/*.json and docs/benchmarks.md
	hack/bench.sh $(BENCH_ARGS)

crds: venv  ## regenerate crds/ and the chart's copy from the Python model
	hack/update-crds.sh
	hack/update-chart-crds.sh

docs: venv  ## regenerate docs/configuration.md from the chart's values.yaml comments
	$(PY) hack/gen-configuration-docs.py

lint: venv  ## ruff over all Python code; mypy --strict over both halves of `kubehands`; the import layering (config: pyproject.toml)
	$(VENV)/bin/ruff check operator api tests hack bench
	$(VENV)/bin/mypy operator/kubehands api/kubehands
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
