# gpupin — every target sets up what it needs; a fresh clone needs only python3 (≥ 3.11).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
GPUPIN := $(BIN)/gpupin

.PHONY: help venv test lint typecheck unit kind generate manifests examples bench bench-cli bench-packing bench-operator bench-burst bench-router demo cluster-up cluster-down cluster-tools engines constraints clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

venv: $(STAMP) ## create .venv with gpupin and the test tools

test: lint typecheck cluster-tools engines unit kind ## everything CI runs: lint, types, the pure and KWOK tiers, the kind tier (builds the tools once)

lint: $(STAMP)
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	GPUPIN_TOOLS_BIN="$$(hack/build-cluster-tools.sh)" \
	GPUPIN_ENGINES_BIN="$$(hack/build-engines.sh)" \
	GPUPIN_VLLM_SOURCE="$$(PYTHON=$(BIN)/python hack/fetch-vllm-source.sh)" \
	$(BIN)/pytest $(PYTEST_ARGS)

kind: $(STAMP) cluster-tools ## the kind tier: chart, images and a real Ollama pod in a kind cluster (GPUPIN_KIND_MODE=stock|offline)
	hack/kind-tier.sh

generate: $(STAMP) ## regenerate the CRDs (crds/ and the chart) and the chart's RBAC rules from the code
	$(BIN)/python -m gpupin.generate

manifests: $(STAMP) cluster-tools ## render manifests/gpupin.yaml from the chart (plain kubectl apply install) and the chart README's values table
	hack/render-manifests.sh "$$(hack/build-cluster-tools.sh)/helm"
	$(BIN)/python hack/chart-readme.py

examples: $(STAMP) ## plan the seed's examples on the seed's workstation (RTX 4070 + RTX 2060)
	@for f in examples/seed/*.yaml; do \
	  echo "$$ gpupin plan -f $$f --inventory examples/inventory/workstation.yaml"; \
	  $(GPUPIN) plan -f $$f --inventory examples/inventory/workstation.yaml; echo; \
	done; true

bench: $(STAMP) ## planner scaling benchmark (prints time per deployment and peak memory)
	$(BIN)/python benchmarks/plan_scaling.py

bench-cli: $(STAMP) ## `gpupin plan` on 1,000 nodes × 8 GPUs and 3,000 deployments, against libyaml merely parsing them (a few minutes)
	$(BIN)/python benchmarks/cli_speed.py

bench-packing: $(STAMP) ## gpupin plan against an exact solver (OR-Tools CP-SAT) on 60 seeded fleets (~15 min)
	$(BIN)/python benchmarks/packing_quality.py $(BENCH_ARGS)

bench-operator: $(STAMP) cluster-tools ## operator latency vs a bare kopf operator on a real API server (~2 min)
	GPUPIN_TOOLS_BIN="$$(hack/build-cluster-tools.sh)" $(BIN)/python benchmarks/operator_latency.py

bench-router: $(STAMP) ## what `gpupin router` adds to a request, against a real Ollama server on loopback (~1 min)
	GPUPIN_ENGINES_BIN="$$(hack/build-engines.sh)" $(BIN)/python benchmarks/router_overhead.py $(ARGS)

bench-burst: $(STAMP) cluster-tools ## 1,000 CRs at once from 16 clients on 1,000 nodes, gpupin vs bare kopf (~3 min; ARGS="COUNT NODES THREADS")
	GPUPIN_TOOLS_BIN="$$(hack/build-cluster-tools.sh)" $(BIN)/python benchmarks/operator_burst.py $(ARGS)

demo: $(STAMP) cluster-tools ## a new local cluster (replaces one that is up, saying so), gpupin installed, the seed's scenario
	GPUPIN_TOOLS_BIN="$$(hack/build-cluster-tools.sh)" $(BIN)/python hack/cluster.py demo

cluster-up: $(STAMP) cluster-tools ## start the local cluster (INVENTORY=file, PINNING=mode); prints the KUBECONFIG line
	GPUPIN_TOOLS_BIN="$$(hack/build-cluster-tools.sh)" $(BIN)/python hack/cluster.py up

cluster-down: $(STAMP) ## stop what cluster-up started (by PID) and delete the cluster
	GPUPIN_TOOLS_BIN="$$(hack/build-cluster-tools.sh)" $(BIN)/python hack/cluster.py down

engines: $(STAMP) ## build the real Ollama server for CPU and fetch the pinned vLLM source (cached; ~12 min cold)
	@hack/build-engines.sh >/dev/null
	@PYTHON=$(BIN)/python hack/fetch-vllm-source.sh >/dev/null

cluster-tools: ## build the pinned Kubernetes v1.37 control plane, etcd, kwok, helm (cached; ~15 min cold)
	@bin=$$(hack/build-cluster-tools.sh) && echo "cluster tools: $$bin"

constraints: $(STAMP) ## re-pin constraints.txt from the current .venv
	{ head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(gpupin|setuptools|wheel|pip)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
