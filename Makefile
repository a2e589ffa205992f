# embedrec: `make serve` runs the server on the bundled model and demo catalog; `make test` runs
# the whole suite (tests/unit/ and tests/e2e/), `make test-fast` its unit layer. They create
# .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL_DIR ?= models/all-MiniLM-L6-v2
ITEMS_DIR ?= items/demo
CATALOG ?= data/demo_catalog.jsonl
HOST ?= 127.0.0.1
PORT ?= 50051
HTTP_PORT ?= 8080
METRICS_PORT ?= 9464
SOAK_SECONDS ?= 150
SOAK_ATTACK_SECONDS ?= 30
# torch is pinned in the same pip command as every package that depends on it, or pip would
# pull a multi-GB CUDA build (see pyproject.toml).
SERVE_EXTRAS := server,export,bundled
DEV_EXTRAS := server,export,bundled,milvus-lite,dev

.PHONY: serve test test-fast check lint typecheck format proto clients docs bench-embed bench-embed-stages bench-export bench-int8 bench-loadtest bench-workers bench-recommend bench-items bench-isolation bench-instances bench-http bench-catalog bench-incremental bench-milvus bench-exact-scan bench-rerank soak soak-attack demo-data clean help

help:
	@echo "make serve   start the server on $(HOST):$(PORT) (bundled MiniLM + demo catalog; PORT= HTTP_PORT= METRICS_PORT=)"
	@echo "make test    run the test suite (tests/unit/ and tests/e2e/)"
	@echo "make test-fast  run the unit layer only (tests/unit/: no server, no torch, under a minute)"
	@echo "make check   lint, type-check and test"
	@echo "make proto   regenerate the gRPC stubs from protos/"
	@echo "make clients regenerate the sync client (client/sync.py) from the async one (client/aio.py)"
	@echo "make bench-embed | bench-embed-stages | bench-export | bench-int8 | bench-loadtest | bench-workers | bench-recommend | bench-items | bench-isolation | bench-instances | bench-http | bench-catalog | bench-incremental | bench-milvus | bench-exact-scan | bench-rerank | soak | soak-attack"
	@echo "             benchmarks; each rewrites its section of BENCHMARKS.md"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-serve: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[$(SERVE_EXTRAS)]' 'torch==2.13.0'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[$(DEV_EXTRAS)]' 'torch==2.13.0'
	touch $@ $(VENV)/.installed-serve

serve: $(VENV)/.installed-serve
	$(PY) -m embedrec.cli export-model --output $(MODEL_DIR)
	$(PY) -m embedrec.cli export-items --catalog $(CATALOG) --model-dir $(MODEL_DIR) --output $(ITEMS_DIR) --filter-field category
	@echo ""
	@echo "Starting embedrec: gRPC on $(HOST):$(PORT), HTTP on $(HOST):$(HTTP_PORT), metrics on $(HOST):$(METRICS_PORT) (make serve PORT= HTTP_PORT= METRICS_PORT= to move them). From another terminal:"
	@echo "  $(VENV)/bin/embedrec recommend --target $(HOST):$(PORT) --text 'energy-saving air conditioner for home'"
	@echo "  $(VENV)/bin/embedrec embed --target $(HOST):$(PORT) 'hello world' '这是一款高效节能的空调'"
	@echo "  $(VENV)/bin/embedrec info --target $(HOST):$(PORT)"
	@echo "  curl -s $(HOST):$(HTTP_PORT)/v1/embeddings -H 'content-type: application/json' -d '{\"model\": \"all-MiniLM-L6-v2\", \"input\": \"hello\"}'"
	@echo ""
	$(PY) -m embedrec.cli serve --model-dir $(MODEL_DIR) --items-dir $(ITEMS_DIR) --host $(HOST) --port $(PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT)

test: $(VENV)/.installed-dev
	$(PY) -m pytest

test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest tests/unit

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed-dev
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

typecheck: $(VENV)/.installed-dev
	$(PY) -m mypy

check: lint typecheck test

proto: $(VENV)/.installed-dev
	$(PY) scripts/generate_protos.py

clients: $(VENV)/.installed-dev
	$(PY) scripts/generate_sync_client.py

docs: $(VENV)/.installed-dev
	$(PY) scripts/update_readme_settings.py

bench-embed: $(VENV)/.installed-dev bench/grpc_load/node_modules
	command -v wrk >/dev/null && command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk nghttp2-client)
	$(PY) -m bench.embed

bench-embed-stages: $(VENV)/.installed-dev bench/grpc_load/node_modules
	command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client)
	$(PY) -m bench.embed_stages

# The grpc-js load client of bench-embed (node and npm come with the machine or from apt).
bench/grpc_load/node_modules: bench/grpc_load/package.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	cd bench/grpc_load && npm install --no-audit --no-fund --silent
	touch $@

bench-export: $(VENV)/.installed-dev
	$(PY) -m bench.export_variants

bench-int8: $(VENV)/.installed-dev
	$(PY) -m bench.int8

bench-workers: $(VENV)/.installed-dev
	$(PY) -m bench.workers

bench-recommend: $(VENV)/.installed-dev
	$(PIP) install --quiet faiss-cpu==1.15.1
	$(PY) -m bench.recommend

bench-items: $(VENV)/.installed-dev
	$(PY) -m bench.item_build

bench-isolation: $(VENV)/.installed-dev
	$(PY) -m bench.isolation

bench-http: $(VENV)/.installed-dev
	$(PY) -m bench.http

bench-catalog: $(VENV)/.installed-dev
	$(PY) -m bench.catalog

bench-exact-scan: $(VENV)/.installed-dev
	$(PY) -m bench.exact_scan --ten-million

bench-incremental: $(VENV)/.installed-dev
	$(PY) -m bench.incremental

bench-milvus: $(VENV)/.installed-dev
	$(PY) -m bench.milvus

bench-rerank: $(VENV)/.installed-dev
	$(PY) -m bench.rerank

bench-instances: $(VENV)/.installed-dev
	$(PY) -m bench.instances

.PHONY: bench-evaluate
bench-evaluate: $(VENV)/.installed-dev  # recommendation quality on Debian's Python packages (docs/evaluate.md)
	$(PY) -m bench.evaluate

soak: $(VENV)/.installed-dev
	$(PY) -m bench.soak $(SOAK_SECONDS)

soak-attack: $(VENV)/.installed-dev
	$(PY) -m bench.soak_attack $(SOAK_ATTACK_SECONDS)

bench-loadtest: $(VENV)/.installed-dev
	$(PY) -m bench.loadtest_ceiling

demo-data:
	$(PYTHON) data/make_demo_catalog.py

clean:
	rm -rf $(VENV) models items .pytest_cache .mypy_cache .ruff_cache *.egg-info
