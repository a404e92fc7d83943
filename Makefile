# The one list of commands, used the same way locally and by the GitHub workflows.
# `make pipeline` and `make test` work on a fresh machine with Python 3.11: they create .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MLGATE := $(BIN)/mlgate
CONFIG ?= config/pipeline.yaml
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install lint test test-fast pipeline validate train evaluate register promote promote-dry-run \
	rollback mlflow-run clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## Create .venv and install mlgate with its development tools

lint: install ## Run every pre-commit hook on all files
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

test: install ## The whole test suite (units, data, model, stack, images, Spark) with coverage
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install ## The quick inner loop: everything not marked slow
	$(BIN)/pytest -m "not slow" --no-cov $(PYTEST_ARGS)

pipeline: install ## Run validate -> train -> evaluate -> register -> promote on the default data
	$(MLGATE) --config $(CONFIG) run

validate train evaluate register promote rollback: install ## Run one step (e.g. `make train`)
	$(MLGATE) --config $(CONFIG) $@

promote-dry-run: install ## Show the gate's decision without moving the champion alias
	$(MLGATE) --config $(CONFIG) promote --dry-run

mlflow-run: install ## The same chain through MLflow Projects (`mlflow run .`)
	$(BIN)/mlflow run . --env-manager local -P config=$(CONFIG)

# --- serving targets (issue 8) ---
.PHONY: serve model-bundle image-serving bench-serving
SERVE_MODEL ?=
SERVE_PORT ?= 8080
SERVING_IMAGE ?= mlgate-serving:latest
GIT_SHA ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

serve: install ## Serve the champion (or SERVE_MODEL=<folder|URI>) on localhost:$(SERVE_PORT)
	$(MLGATE) --config $(CONFIG) serve $(if $(SERVE_MODEL),--model $(SERVE_MODEL)) --port $(SERVE_PORT)

model-bundle: install ## Download models:/<name>@champion into serving/model/ for the image
	$(MLGATE) --config $(CONFIG) model-bundle --dest serving/model

image-serving: ## Build the REST image (serving/Dockerfile) with the bundled model baked in
	@test -f serving/model/MLmodel || { echo "serving/model/ is empty: run make model-bundle first"; exit 1; }
	docker build -f serving/Dockerfile -t $(SERVING_IMAGE) \
		--build-arg GIT_SHA=$(GIT_SHA) \
		--build-arg MODEL_NAME="$$(sed -n 's/^model_name: //p' serving/model/registered_model_meta)" \
		--build-arg MODEL_VERSION="$$(sed -n 's/^model_version: //p' serving/model/registered_model_meta)" .

bench-serving: install ## Serving benchmark vs mlflow models serve (BENCH_ARGS=... ; see bench/serving)
	$(BIN)/python bench/serving/run.py $(BENCH_ARGS)

# --- batch targets (issue 9) ---

# --- stack targets (issue 3) ---

# --- CI targets (issue 6) ---

clean: ## Remove outputs and the local MLflow store (mlflow.db, mlruns/)
	rm -rf outputs mlflow.db mlruns .pytest_cache .coverage .coverage.* coverage.xml htmlcov
