# The one list of commands, used the same way locally and by the GitHub workflows.
# `make pipeline` and `make test` work on a fresh machine with Python 3.11: they create .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MLGATE := $(BIN)/mlgate
CONFIG ?= config/pipeline.yaml
PYTEST_ARGS ?=
# Commands run by make (and `mlflow run`, which calls `python`) find the virtualenv's tools first.
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install install-runtime lint test test-fast pipeline validate train evaluate register promote promote-dry-run \
	rollback mlflow-run clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_ -]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.runtime

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

install: $(VENV)/.installed ## Create .venv and install mlgate with its development tools

install-runtime: $(VENV)/.runtime ## Create .venv and install only what the pipeline needs

lint: install ## Run every pre-commit hook on all files
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

test: install ## The whole test suite (units, data, model, stack, images, Spark) with coverage
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install ## The quick inner loop: everything not marked slow
	$(BIN)/pytest -m "not slow" --no-cov $(PYTEST_ARGS)

pipeline: install-runtime ## Run validate -> train -> evaluate -> register -> promote on the default data
	$(MLGATE) --config $(CONFIG) run

validate train evaluate register promote rollback: install-runtime ## Run one step (e.g. `make train`)
	$(MLGATE) --config $(CONFIG) $@

promote-dry-run: install-runtime ## Show the gate's decision without moving the champion alias
	$(MLGATE) --config $(CONFIG) promote --dry-run

mlflow-run: install-runtime ## The same chain through MLflow Projects (`mlflow run .`), in the config's experiment
	$(BIN)/mlflow run . --env-manager local -P config=$(CONFIG) \
		--experiment-name "$$($(MLGATE) --config $(CONFIG) show experiment)"

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

image-serving: ## Build the REST image (serving/Dockerfile) with serving/model/ baked in
	scripts/build-image.sh serving serving/model $(SERVING_IMAGE) $(GIT_SHA)

bench-serving: install ## Serving benchmark vs mlflow models serve (BENCH_ARGS=... ; see bench/serving)
	$(BIN)/python bench/serving/run.py $(BENCH_ARGS)

# --- batch targets (issue 9) ---
.PHONY: score model-bundle-batch image-batch bench-batch
BATCH_IMAGE ?= mlgate-batch:latest
SCORE_INPUT ?= data/penguins.csv
SCORE_OUTPUT ?= outputs/scores.parquet

score: install ## Score SCORE_INPUT with the champion into SCORE_OUTPUT (+ quarantine, summary, drift report)
	$(MLGATE) --config $(CONFIG) score --input $(SCORE_INPUT) --output $(SCORE_OUTPUT)

model-bundle-batch: install ## Download models:/<name>@champion into batch/model/ for the batch image
	$(MLGATE) --config $(CONFIG) model-bundle --dest batch/model

image-batch: ## Build the batch image (batch/Dockerfile) with batch/model/ baked in (if present)
	scripts/build-image.sh batch "$(if $(wildcard batch/model/MLmodel),batch/model)" $(BATCH_IMAGE) $(GIT_SHA)

bench-batch: install ## Batch benchmark: mlgate score vs mlflow models predict vs in-memory (BENCH_ARGS=...)
	$(BIN)/python bench/batch/run.py $(BENCH_ARGS)


# --- stack targets (issue 3) ---
# The local stack (src/mlgate/stack.py): PostgreSQL + moto S3 + mlflow server on free loopback ports, in .stack/.
.PHONY: stack-up stack-down stack-status pipeline-stack image-stack compose-config
STACK_ROOT ?= .stack
STACK_IMAGE ?= mlgate-mlflow-server:local

stack-up: install ## Start the local tracking stack; its URI goes to $(STACK_ROOT)/tracking_uri
	$(MLGATE) stack up --root $(STACK_ROOT)

stack-down: install ## Stop exactly the processes stack-up started (pid files in $(STACK_ROOT)/pids)
	$(MLGATE) stack down --root $(STACK_ROOT)

stack-status: install ## Show the stack's services, pids and addresses (exit 1 if one is down)
	$(MLGATE) stack status --root $(STACK_ROOT)

pipeline-stack: install ## Run the whole pipeline against the local stack (run make stack-up first)
	@test -s $(STACK_ROOT)/tracking_uri || { echo "no stack in $(STACK_ROOT): run make stack-up first" >&2; exit 1; }
	MLFLOW_TRACKING_URI="$$(cat $(STACK_ROOT)/tracking_uri)" $(MLGATE) --config $(CONFIG) run

image-stack: ## Build the MLflow tracking server image (stack/Dockerfile) used by docker-compose.yml
	docker build -f stack/Dockerfile -t $(STACK_IMAGE) stack

compose-config: ## Validate docker-compose.yml with .env.example (needs docker-compose or `docker compose`)
	@if docker compose version >/dev/null 2>&1; then dc="docker compose"; else dc=docker-compose; fi; \
		$$dc --env-file .env.example -f docker-compose.yml config --quiet && echo "docker-compose.yml is valid"

# --- CI targets (issue 6) ---
# What the GitHub workflows run (.github/workflows, docs/ci.md). `make ci-pipeline` is pipeline.yml's chain, locally.
.PHONY: report-summary gate-status ci-validate ci-train ci-evaluate ci-register ci-promote ci-model-version \
	ci-image ci-image-smoke ci-image-push ci-rollback ci-retag-champion ci-pipeline \
	ci-stack-up ci-stack-down ci-state-save
# The config's outputs folder, asked once (memoised) from the config itself.
CI_OUTPUTS = $(eval CI_OUTPUTS := $$(shell $(MLGATE) --config $(CONFIG) show outputs_dir 2>/dev/null || echo outputs))$(CI_OUTPUTS)
CI_MLFLOW_RUN = $(BIN)/mlflow run . --env-manager local -P config=$(CONFIG) \
	--experiment-name "$$($(MLGATE) --config $(CONFIG) show experiment)"
IMAGE ?= serving
CI_REGISTRY ?= ghcr.io
CI_IMAGE_REPO ?= $(shell printf '%s' "$${GITHUB_REPOSITORY:-local/mlgate}" | tr '[:upper:]' '[:lower:]')
CI_IMAGE_NAME = $(CI_REGISTRY)/$(CI_IMAGE_REPO)-$(IMAGE)
CI_SHORT_SHA ?= $(shell git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
CI_BUNDLE_META = serving/model/registered_model_meta
MODEL_VERSION ?= $(shell sed -n 's/^model_version: //p' $(CI_BUNDLE_META) 2>/dev/null)
CI_IMAGE_TAGS = $(CI_SHORT_SHA) v$(MODEL_VERSION) champion
REASON ?= manual rollback

report-summary: ## Append outputs/report.md to the job summary (GITHUB_STEP_SUMMARY; stdout locally)
	@test -f $(CI_OUTPUTS)/report.md || { echo "$(CI_OUTPUTS)/report.md not found: run make evaluate first" >&2; exit 1; }
	cat $(CI_OUTPUTS)/report.md >> "$${GITHUB_STEP_SUMMARY:-/dev/stdout}"

gate-status: ## The gate's verdict from promotion.json: exit 0 promoted, 3 rejected (failing thresholds listed), 1 broken
	$(MLGATE) --config $(CONFIG) gate-status

ci-validate ci-train ci-evaluate ci-register: install ## One MLproject entry point via `mlflow run -e <step>` (as pipeline.yml)
	$(CI_MLFLOW_RUN) -e $(@:ci-%=%)

# `mlflow run` turns promote's exit code 3 (rejected) into 1, so the verdict is read back by gate-status.
ci-promote: install ## The gate via `mlflow run -e promote`; exits like gate-status
	rm -f $(CI_OUTPUTS)/promotion.json
	-$(CI_MLFLOW_RUN) -e promote
	$(MAKE) --no-print-directory gate-status

ci-model-version: ## Print `version=<n>` of the bundled champion (serving/model), for GITHUB_OUTPUT
	@test -n "$(MODEL_VERSION)" || { echo "no model version in $(CI_BUNDLE_META): run make model-bundle" >&2; exit 1; }
	@echo "version=$(MODEL_VERSION)"

ci-image: ## Build IMAGE=serving|batch, tagged <short sha>, v<model version> and champion
	@test -n "$(MODEL_VERSION)" || { echo "no model version in $(CI_BUNDLE_META): run make model-bundle" >&2; exit 1; }
	$(MAKE) --no-print-directory image-$(IMAGE) \
		$(shell printf '%s' '$(IMAGE)' | tr '[:lower:]' '[:upper:]')_IMAGE=$(CI_IMAGE_NAME):$(CI_SHORT_SHA)
	for tag in v$(MODEL_VERSION) champion; do docker tag $(CI_IMAGE_NAME):$(CI_SHORT_SHA) $(CI_IMAGE_NAME):$$tag; done

ci-image-smoke: ## Run the IMAGE built by ci-image once: serving answers /ready and /invocations, batch scores a file
	.github/scripts/image-smoke.sh $(IMAGE) $(CI_IMAGE_NAME):$(CI_SHORT_SHA)

ci-image-push: ## Push the IMAGE's three tags; print name= and digest= for GITHUB_OUTPUT (build provenance)
	for tag in $(CI_IMAGE_TAGS); do docker push --quiet $(CI_IMAGE_NAME):$$tag >&2; done
	@echo "name=$(CI_IMAGE_NAME)"
	@echo "digest=$$(docker inspect --format '{{index .RepoDigests 0}}' $(CI_IMAGE_NAME):$(CI_SHORT_SHA) | cut -d@ -f2)"

# Zero-infrastructure mode in pipeline.yml / rollback.yml: MinIO and the MLflow server from docker-compose.yml,
# PostgreSQL as the job's service container (CI_PG_CONTAINER, CI_SERVICES_NETWORK); state in .stack/ci-state.
CI_COMPOSE = docker compose --env-file .env.example -f docker-compose.yml -f .github/ci-stack.compose.yml
CI_STATE ?= .stack/ci-state
CI_MLFLOW_URL ?= http://127.0.0.1:5000

ci-stack-up: ## CI only: restore $(CI_STATE) if present, start MinIO + MLflow server (compose) on the service PostgreSQL
	test -f .env || cp .env.example .env
	$(CI_COMPOSE) create --no-deps minio
	if [ -f $(CI_STATE)/mlflow.pgdump ]; then \
		docker exec -i "$$CI_PG_CONTAINER" pg_restore -U mlflow -d mlflow --clean --if-exists --no-owner \
			< $(CI_STATE)/mlflow.pgdump && \
		$(CI_COMPOSE) cp $(CI_STATE)/minio/. minio:/data; fi
	$(CI_COMPOSE) up -d --no-deps minio
	for i in $$(seq 1 60); do curl -fsS http://127.0.0.1:9000/minio/health/live >/dev/null 2>&1 && break; sleep 2; done
	$(CI_COMPOSE) run --rm --no-deps create-bucket
	$(CI_COMPOSE) up -d --no-deps --build mlflow
	for i in $$(seq 1 90); do curl -fsS $(CI_MLFLOW_URL)/health >/dev/null 2>&1 && break; sleep 2; done
	curl -fsS $(CI_MLFLOW_URL)/health

ci-state-save: ## CI only: dump the service PostgreSQL and MinIO's data into $(CI_STATE) (uploaded as mlflow-state)
	rm -rf $(CI_STATE) && mkdir -p $(CI_STATE)
	docker exec "$$CI_PG_CONTAINER" pg_dump -U mlflow -d mlflow --format=custom > $(CI_STATE)/mlflow.pgdump
	$(CI_COMPOSE) cp minio:/data $(CI_STATE)/minio
	ls -la $(CI_STATE)

ci-stack-down: ## CI only: stop and remove what ci-stack-up started
	$(CI_COMPOSE) down --volumes --remove-orphans

# A stack already running in STACK_ROOT is used and left running (its registry is the state carried over, as
# pipeline.yml's mlflow-state artifact is); otherwise one is started and stopped (`stack down` deletes it).
ci-pipeline: install-runtime ## pipeline.yml's chain locally: stack-up, mlflow run steps, gate, bundle, images, stack-down
	@if $(MAKE) --no-print-directory -s stack-status >/dev/null 2>&1; then started=0; \
		echo "ci-pipeline: using the running stack in $(STACK_ROOT)"; \
	else started=1; $(MAKE) --no-print-directory stack-up || exit $$?; fi; \
	status=0; MLFLOW_TRACKING_URI="$$(cat $(STACK_ROOT)/tracking_uri)" \
		$(MAKE) --no-print-directory ci-validate ci-train ci-evaluate ci-register ci-promote report-summary \
		model-bundle model-bundle-batch ci-model-version || status=$$?; \
	if [ $$status = 0 ]; then for image in serving batch; do \
		$(MAKE) --no-print-directory ci-image ci-image-smoke IMAGE=$$image || { status=$$?; break; }; done; fi; \
	if [ $$started = 1 ]; then $(MAKE) --no-print-directory stack-down; fi; exit $$status

ci-rollback: install ## `mlgate rollback` to VERSION (empty: the previous champion) with REASON
	@printf '%s' "$$VERSION" | grep -Eq '^[0-9]*$$' || { echo "VERSION must be a model version number" >&2; exit 1; }
	$(MLGATE) --config $(CONFIG) rollback --version "$$VERSION" --reason "$$REASON"

ci-retag-champion: ## Point each image's champion tag at the images of the version rollback restored
	version="$$($(MLGATE) --config $(CONFIG) result rollback new)" && \
	for image in serving batch; do \
		name="$(CI_REGISTRY)/$(CI_IMAGE_REPO)-$$image"; \
		docker pull --quiet "$$name:v$$version" && docker tag "$$name:v$$version" "$$name:champion" && \
		docker push --quiet "$$name:champion" || exit 1; \
	done


clean: ## Remove outputs and the local MLflow store (mlflow.db, mlruns/)
	rm -rf outputs mlflow.db mlruns .pytest_cache .coverage .coverage.* coverage.xml htmlcov
