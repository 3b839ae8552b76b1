# Ferry — the two commands a newcomer runs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FERRY := $(VENV)/bin/ferry
STAMP := $(VENV)/.installed

.PHONY: demo test deps venv binaries lint format unit integration bench dev-up dev-down clean image manifests

demo: deps venv binaries ## start the local stack, apply examples/, show the result
	@bash scripts/demo.sh

# Test files in parallel, each worker with servers of its own (tests/conftest.py says how many).
PARALLEL := -n auto --dist loadfile

test: deps venv binaries lint ## the whole test suite (what CI runs)
	$(VENV)/bin/pytest -q -rs -p no:cacheprovider $(PARALLEL)

deps: ## system packages: PostgreSQL and Redis from Debian (idempotent)
	@bash scripts/install-system-deps.sh

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

binaries: ## build (once) and cache kube-apiserver, etcd, kubectl, helm, kustomize, kstatus under ~/.cache/ferry
	@bash operator/ferry/devenv/control-plane-binaries.sh >/dev/null
	@bash operator/ferry/devenv/vault-binary.sh >/dev/null
	@bash scripts/tool-binaries.sh >/dev/null

unit: venv
	$(VENV)/bin/pytest -q tests/unit

integration: deps venv binaries
	$(VENV)/bin/pytest -q $(PARALLEL) tests/integration

lint: venv ## ruff, the import layers (import-linter) and mypy --strict on the pure domain
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy --cache-dir /tmp/ferry-mypy-cache

format: venv
	$(VENV)/bin/ruff check --fix operator tests bench
	$(VENV)/bin/ruff format operator tests bench

image: deps venv binaries ## build the image (buildah, on a Debian base made with debootstrap) and smoke-test it with podman
	@bash scripts/build-image.sh >/dev/null
	$(VENV)/bin/pytest -q -p no:cacheprovider -rs tests/integration/test_image.py

manifests: ## re-render manifests/ and the chart's copies of crds/ and webhooks/ from their sources
	@bash scripts/render-manifests.sh

bench: deps venv binaries ## the benchmarks behind docs/benchmarks.md (minutes; not part of `make test`)
	$(VENV)/bin/python bench/reconcile_bench.py --applies 200 --fanout 1000 --join 200 --scale 5000
	$(VENV)/bin/python bench/memory.py --entries 200 --configmaps 50000 --deployments 5000
	$(VENV)/bin/python bench/admission_latency.py --requests 300
	$(VENV)/bin/python bench/inline_checks.py
	$(VENV)/bin/python bench/flag_eval.py
	$(VENV)/bin/python bench/secrets_bench.py --entries 1000 --paths 10 --rotate 500
	$(VENV)/bin/python bench/read_api.py --rounds 4
	$(VENV)/bin/python bench/sse_watch.py
	$(VENV)/bin/python bench/ofrep.py --rounds 4
	$(VENV)/bin/python bench/shards.py --entries 2000 --rounds 2
	$(VENV)/bin/python bench/hostile_tenant.py

dev-up: deps venv binaries
	$(FERRY) dev up

dev-down: venv
	$(FERRY) dev down

clean:
	-$(FERRY) dev down
	rm -rf $(VENV) .ferry
