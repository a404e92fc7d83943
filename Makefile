# The one list of commands, used the same way locally and by the GitHub workflows.
# `make pipeline` and `make test` work on a fresh machine with Python 3.11: they create .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MLGATE := $(BIN)/mlgate
CONFIG ?= config/pipeline.yaml
PYTEST_ARGS ?=
# make test's pytest-xdist workers: the season of emulated runs takes one, the rest of the suite the others
# (tests/conftest.py keeps the tests that share a server in one worker). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 3
TIER ?= unit
# uv installs from uv.lock, the one list of versions with their hashes (docs/dependencies.md). It uses the
# system's certificates (a proxy's CA), never downloads a Python, and works on $(VENV) whatever is activated.
UV = UV_SYSTEM_CERTS=1 UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT="$(abspath $(VENV))" $(BIN)/uv
# Exactly the locked versions, hash-checked; packages already there stay (install-runtime keeps the dev tools).
# mlgate itself is built with the locked setuptools (group build) instead of an unpinned one in isolation.
UV_SYNC = $(UV) sync --quiet --frozen --inexact --group build --no-build-isolation-package mlgate
# The requirement files exported from uv.lock (`make lock`), each <file>:<dependency groups, joined by +>; the
# images build mlgate with the locked setuptools (group build).
LOCK_EXPORTS := requirements/bootstrap.txt:bootstrap serving/requirements.txt:serving+build \
	serving/requirements-onnx.txt:serving-onnx+build serving/requirements-mlflow.txt:serving-mlflow \
	batch/requirements.txt:batch+build stack/requirements.txt:tracking-server
# `make lock LOCK_ARGS="--upgrade-package NAME"` moves one locked package, LOCK_ARGS=--upgrade all of them.
LOCK_ARGS ?=
lock_file = $(firstword $(subst :, ,$(1)))
lock_export = $(UV) export --frozen --quiet --format requirements-txt --no-emit-project \
	$(foreach g,$(subst +, ,$(lastword $(subst :, ,$(1)))),--only-group $(g))
# Commands run by make (and `mlflow run`, which calls `python`) find the virtualenv's tools first.
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install install-runtime lock lock-check lint test test-fast test-tier pipeline validate train evaluate register promote promote-dry-run \
	rollback mlflow-run clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_ -]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The pinned uv, hash-checked by pip (requirements/bootstrap.txt is exported from uv.lock).
$(BIN)/uv: requirements/bootstrap.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/bootstrap.txt
	@touch $@

$(VENV)/.installed: pyproject.toml uv.lock | $(BIN)/uv
	$(UV_SYNC) --extra dev
	@touch $@ $(VENV)/.runtime

$(VENV)/.runtime: pyproject.toml uv.lock | $(BIN)/uv
	$(UV_SYNC)
	@touch $@

install: $(VENV)/.installed ## Create .venv and install mlgate with its development tools, as uv.lock pins them

install-runtime: $(VENV)/.runtime ## Create .venv and install only what the pipeline needs, as uv.lock pins them

lock: | $(BIN)/uv ## After editing pyproject.toml's dependencies: re-resolve uv.lock and export the image requirements from it
	$(UV) lock $(LOCK_ARGS)
	@$(foreach e,$(LOCK_EXPORTS),f=$(call lock_file,$(e)); $(call lock_export,$(e)) > "$$f.new" || exit 1; \
		if cmp -s "$$f.new" "$$f"; then rm "$$f.new"; else mv "$$f.new" "$$f" && echo "$$f: exported"; fi;)

lock-check: | $(BIN)/uv ## Fail when uv.lock no longer satisfies pyproject.toml or an exported file differs from it (offline)
	@$(UV) lock --check --offline || { echo "uv.lock does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	@$(foreach e,$(LOCK_EXPORTS),$(call lock_export,$(e)) | diff -q $(call lock_file,$(e)) - >/dev/null || { \
		echo "$(call lock_file,$(e)) is not what uv.lock gives: run make lock" >&2; exit 1; };)
	@echo "uv.lock and the files exported from it are up to date"

lint: install ## Run every pre-commit hook on all files
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

test: install ## Every test, every tier (unit, integration, images, workflows, spark) side by side, with coverage
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: install ## The quick inner loop: the unit tier
	$(BIN)/pytest -m unit -n $(TEST_WORKERS) --dist loadgroup --no-cov $(PYTEST_ARGS)

test-tier: install ## One tier: TIER=unit|integration|images|workflows|spark (or an -m expression: TIER="images or spark")
	$(BIN)/pytest -m "$(TIER)" -n $(TEST_WORKERS) --dist loadgroup --no-cov $(PYTEST_ARGS)

pipeline: install-runtime ## Run validate -> train -> evaluate -> register -> promote on the default data
	$(MLGATE) --config $(CONFIG) run

validate train evaluate register promote rollback: install-runtime ## Run one step (e.g. `make train`)
	$(MLGATE) --config $(CONFIG) $@

promote-dry-run: install-runtime ## Show the gate's decision without moving the champion alias
	$(MLGATE) --config $(CONFIG) promote --dry-run

mlflow-run: install-runtime ## The same chain through MLflow Projects (`mlflow run .`), in the config's experiment
	$(MLGATE) --config $(CONFIG) mlflow-run main

# --- serving targets (issue 8) ---
.PHONY: serve model-bundle image-serving bench-serving k8s-render k8s-set-images
SERVE_MODEL ?=
SERVE_PORT ?= 8080
SERVING_IMAGE ?= mlgate-serving:latest
GIT_SHA ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

serve: install-runtime ## Serve the champion (or SERVE_MODEL=<folder|URI>) on localhost:$(SERVE_PORT)
	$(MLGATE) --config $(CONFIG) serve $(if $(SERVE_MODEL),--model $(SERVE_MODEL)) --port $(SERVE_PORT)

model-bundle: install-runtime ## Download models:/<name>@champion into serving/model/ for the image
	$(MLGATE) --config $(CONFIG) model-bundle --dest serving/model

image-serving: ## Build the REST image (serving/Dockerfile) with serving/model/ baked in
	scripts/build-image.sh serving serving/model $(SERVING_IMAGE) $(GIT_SHA)

bench-serving: install ## Serving benchmark vs mlflow models serve (BENCH_ARGS=... ; see bench/serving)
	$(BIN)/python bench/serving/run.py $(BENCH_ARGS)

# Kubernetes (deploy/k8s): render a kustomize folder, or pin its images by the digests the release pushed.
K8S_DIR ?= deploy/k8s/overlays/production
SERVING_REF ?=
BATCH_REF ?=

k8s-render: install ## Render K8S_DIR (deploy/k8s/overlays/staging|production, deploy/k8s/kserve) with kubectl kustomize
	@$(BIN)/kubectl kustomize $(K8S_DIR)

k8s-set-images: ## Pin K8S_DIR's images: SERVING_REF=<image>@sha256:<hex> and/or BATCH_REF=<image>@sha256:<hex>
	$(PYTHON) deploy/k8s/set-images.py $(K8S_DIR) $(if $(SERVING_REF),mlgate-serving=$(SERVING_REF)) \
		$(if $(BATCH_REF),mlgate-batch=$(BATCH_REF))

# --- batch targets (issue 9) ---
.PHONY: score model-bundle-batch image-batch bench-batch
BATCH_IMAGE ?= mlgate-batch:latest
SCORE_INPUT ?= data/penguins.csv
SCORE_OUTPUT ?= outputs/scores.parquet

score: install-runtime ## Score SCORE_INPUT with the champion into SCORE_OUTPUT (+ quarantine, summary, drift report)
	$(MLGATE) --config $(CONFIG) score --input $(SCORE_INPUT) --output $(SCORE_OUTPUT)

model-bundle-batch: install-runtime ## Download models:/<name>@champion into batch/model/ for the batch image
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

# --- CI targets ---
# What the GitHub workflows run (.github/workflows, docs/ci.md). `make ci-pipeline` is pipeline.yml's chain, locally.
# GNU make ends with exit 2 whenever a recipe fails, whatever its code: the workflows read the gate's own exit
# code (3 = rejected) from `mlgate gate-status`, which they run directly (`make ci-path` puts it on PATH).
.PHONY: ci-path report-summary ci-report-origin gate-status ci-validate ci-train ci-evaluate ci-register ci-lineage ci-promote \
	ci-bundle ci-model-version ci-image ci-image-smoke ci-image-sbom ci-image-push ci-champion-images ci-reconcile \
	ci-check-ref ci-check-registry ci-k8s-manifests \
	ci-rollback-plan \
	ci-rollback ci-pipeline ci-stack-up ci-stack-down ci-state-save
# The config's outputs folder, asked once (memoised) from the config itself.
CI_OUTPUTS = $(eval CI_OUTPUTS := $$(shell $(MLGATE) --config $(CONFIG) show outputs_dir 2>/dev/null || echo outputs))$(CI_OUTPUTS)
CI_MLFLOW_RUN = $(MLGATE) --config $(CONFIG) mlflow-run
IMAGE ?= serving
CI_REGISTRY ?= ghcr.io
CI_IMAGE_REPO ?= $(shell printf '%s' "$${GITHUB_REPOSITORY:-local/mlgate}" | tr '[:upper:]' '[:lower:]')
CI_IMAGE_NAME = $(CI_REGISTRY)/$(CI_IMAGE_REPO)-$(IMAGE)
CI_SHORT_SHA ?= $(shell git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
CI_BUNDLE ?= serving/model
# Versions and the rollback reason reach the shell through the environment only, never through make's own
# expansion: a workflow input is never pasted into a command line. The model version is MODEL_VERSION when set
# (the publish job's), else the bundle's (mlgate release version reads CI_BUNDLE/mlgate_bundle.json).
CI_MODEL_VERSION = v="$$($(MLGATE) release version --bundle $(CI_BUNDLE))" || exit 1
CI_NEED_VERSION = printf '%s\n' "$${VERSION:-}" | grep -Eq '^[0-9]+$$' || { \
	echo "VERSION must be a model version number" >&2; exit 1; }
# Immutable tags, never overwritten: sha-<short sha>-v<version> and v<version> ($$v: the shell's CI_MODEL_VERSION).
# `champion` is the only tag that moves (mlgate release champion / reconcile, src/mlgate/release.py).
CI_IMAGE_TAGS = sha-$(CI_SHORT_SHA)-v$$v v$$v
# The release commands, with the registry and image repository above (one definition, passed as options).
CI_RELEASE = $(MLGATE) --config $(CONFIG) release
CI_RELEASE_OPTS = --registry $(CI_REGISTRY) --repository $(CI_IMAGE_REPO)
# What each publish job pushed (<kind>.json: name, version, digest), handed to the release job as artifacts.
CI_PUBLISHED = $(CI_OUTPUTS)/published
# Where the release and rollback write the champion images' references (mlgate-<kind>=<name>@<digest>).
CI_CHAMPION_IMAGES = $(CI_OUTPUTS)/champion-images.txt
DRY_RUN ?= false

ci-path: ## Print the virtualenv's bin folder: workflows append it to GITHUB_PATH, so `mlgate` works in later steps
	@echo "$(abspath $(BIN))"

report-summary: ## Append outputs/report.md to the job summary (GITHUB_STEP_SUMMARY; stdout locally)
	@test -f $(CI_OUTPUTS)/report.md || { echo "$(CI_OUTPUTS)/report.md not found: run make evaluate first" >&2; exit 1; }
	cat $(CI_OUTPUTS)/report.md >> "$${GITHUB_STEP_SUMMARY:-/dev/stdout}"

ci-report-origin: ## Say in outputs/report.md which champion it compares with (STATE_RUN_ID: the restored state's run)
	@test -f $(CI_OUTPUTS)/report.md || { echo "$(CI_OUTPUTS)/report.md not found: run make evaluate first" >&2; exit 1; }
	@if [ -n "$$STATE_RUN_ID" ]; then \
		run="$${GITHUB_SERVER_URL:-https://github.com}/$${GITHUB_REPOSITORY:-}/actions/runs/$$STATE_RUN_ID"; \
		note="Champion: main's, from the registry state its run [$$STATE_RUN_ID]($$run) saved; compared on a throwaway copy that is never saved back."; \
	else note="Champion: none to compare with: main has no saved registry state yet (its first green pipeline run saves one)."; fi; \
	printf '\n%s\n' "$$note" | tee -a $(CI_OUTPUTS)/report.md

gate-status: ## The gate's verdict from promotion.json (mlgate gate-status: 0 passed, 3 rejected, 1 broken)
	$(MLGATE) --config $(CONFIG) gate-status

ci-validate ci-train ci-evaluate ci-register: install ## One MLproject entry point via `mlflow run -e <step>` (as pipeline.yml)
	$(CI_MLFLOW_RUN) $(@:ci-%=%)

ci-lineage: install ## After validate: print changed=true|false against the champion's lineage ($$FORCE=1|true: true)
	@case "$${FORCE:-}" in 1|true) force=--force;; *) force=;; esac; $(MLGATE) --config $(CONFIG) lineage $$force

# `mlflow run` turns promote's exit code 3 (rejected) into 1, so the verdict is read back by gate-status.
ci-promote: install ## The gate via `mlflow run -e promote` (DRY_RUN=true: decide, move nothing); then run gate-status
	rm -f $(CI_OUTPUTS)/promotion.json
	-$(CI_MLFLOW_RUN) promote -P dry_run=$(DRY_RUN)

ci-bundle: install ## Download the registered candidate (register.json) into serving/model and batch/model
	uri="$$($(MLGATE) --config $(CONFIG) result register registered_uri)" && \
	for dest in serving/model batch/model; do $(MLGATE) --config $(CONFIG) model-bundle --model "$$uri" --dest $$dest || exit 1; done

ci-model-version: install ## Print `version=<n>` of the bundled model (serving/model), for GITHUB_OUTPUT
	@$(CI_MODEL_VERSION); echo "version=$$v"

ci-image: install ## Build IMAGE=serving|batch, tagged sha-<short sha>-v<model version> and v<model version>
	@$(CI_MODEL_VERSION); set -- $(CI_IMAGE_TAGS); set -x; \
	$(MAKE) --no-print-directory image-$(IMAGE) \
		$(shell printf '%s' '$(IMAGE)' | tr '[:lower:]' '[:upper:]')_IMAGE=$(CI_IMAGE_NAME):$$1 && \
	docker tag $(CI_IMAGE_NAME):$$1 $(CI_IMAGE_NAME):$$2

ci-image-smoke: install ## Run the IMAGE built by ci-image once: serving answers /ready and /invocations, batch scores a file
	@$(CI_MODEL_VERSION); set -- $(CI_IMAGE_TAGS); set -x; .github/scripts/image-smoke.sh $(IMAGE) $(CI_IMAGE_NAME):$$1

ci-image-sbom: install ## Write outputs/sbom-<IMAGE>.cdx.json: the Python and OS packages in the IMAGE ci-image built (CycloneDX)
	@$(CI_MODEL_VERSION); set -- $(CI_IMAGE_TAGS); set -x; \
	python3 scripts/image-sbom.py $(CI_IMAGE_NAME):$$1 $(CI_OUTPUTS)/sbom-$(IMAGE).cdx.json

ci-image-push: install ## Push the IMAGE's immutable tags (refused when one exists or cannot be checked); print name= and digest=
	@$(CI_MODEL_VERSION); $(CI_RELEASE) publish --image $(IMAGE) --version "$$v" --sha $(CI_SHORT_SHA) \
		--record $(CI_PUBLISHED)/$(IMAGE).json $(CI_RELEASE_OPTS)

ci-champion-images: install ## Point both images' champion tag at version $$VERSION's images by digest (PUBLISHED=<folder>: the publish jobs' records)
	@$(CI_NEED_VERSION)
	$(CI_RELEASE) champion --version "$$VERSION" $(if $(PUBLISHED),--published $(PUBLISHED)) \
		--refs $(CI_CHAMPION_IMAGES) $(CI_RELEASE_OPTS)

ci-reconcile: install ## Point the images' champion tag at the champion alias's images (after a failed or cancelled move)
	$(CI_RELEASE) reconcile --refs $(CI_CHAMPION_IMAGES) $(CI_RELEASE_OPTS)

ci-check-ref: install ## Refuse a release run that is not on the default branch (a workflow_dispatch from a branch)
	$(CI_RELEASE) check-ref

ci-check-registry: install ## After restoring a saved registry: the champion alias and the audit trail agree
	$(MLGATE) --config $(CONFIG) check-registry

ci-k8s-manifests: install ## After the champion moved: $(CI_OUTPUTS)/k8s/<overlay>.yaml, K8S_DIR rendered with the champion images by digest
	@refs="$(CI_CHAMPION_IMAGES)"; test -s "$$refs" || { \
		echo "$$refs is missing: make ci-champion-images writes the champion images' digests there" >&2; exit 1; }; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cp -R deploy "$$tmp/deploy"; \
	$(PYTHON) deploy/k8s/set-images.py "$$tmp/$(K8S_DIR)" $$(cat "$$refs") >&2 && \
	$(BIN)/kubectl kustomize "$$tmp/$(K8S_DIR)" > "$$tmp/rendered.yaml" || exit 1; \
	if grep -q 'sha256:0\{64\}' "$$tmp/rendered.yaml"; then \
		echo "$(K8S_DIR): an image still has the placeholder digest ($$refs names both images)" >&2; exit 1; fi; \
	mkdir -p $(CI_OUTPUTS)/k8s && mv "$$tmp/rendered.yaml" $(CI_OUTPUTS)/k8s/$(notdir $(K8S_DIR)).yaml && \
	echo "$(CI_OUTPUTS)/k8s/$(notdir $(K8S_DIR)).yaml: $(K8S_DIR) with $$(tr '\n' ' ' < "$$refs")"

ci-rollback-plan: install ## Print version= (the rollback's target: $$VERSION, or empty = the previous champion) and previous=
	@case "$${VERSION:-}" in *[!0-9]*) echo "VERSION must be a model version number or empty" >&2; exit 1;; esac
	@$(MLGATE) --config $(CONFIG) rollback --dry-run --version "$${VERSION:-}" >&2
	@echo "version=$$($(MLGATE) --config $(CONFIG) result rollback new)"
	@echo "previous=$$($(MLGATE) --config $(CONFIG) result rollback previous)"

ci-rollback: install ## Move champion to $$VERSION (a number: ci-rollback-plan's), $$REASON in the audit trail
	@$(CI_NEED_VERSION)
	$(MLGATE) --config $(CONFIG) rollback --version "$$VERSION" --reason "$${REASON:-manual rollback}"

# Zero-infrastructure mode in pipeline.yml, rollback.yml and ci.yml's smoke job: PostgreSQL is the job's service
# container (CI_PG_CONTAINER, CI_SERVICES_NETWORK: a step's env gives them from the `job` context); the MLflow
# server (stack/Dockerfile) joins its network and keeps artifacts in its container. The state carried from run to
# run is a pg_dump and those artifacts, moved with `docker exec` and `docker cp` only (no path is shared with the
# engine's host, so this works the same on GitHub's VM, under act and with a remote engine).
CI_STATE ?= .stack/ci-state
CI_MLFLOW_PORT ?= 5000
CI_SERVER ?= mlgate-ci-mlflow
CI_SERVER_IMAGE ?= mlgate-mlflow-server:ci
CI_SERVER_ARTIFACTS = /home/mlflow/artifacts
CI_PG_URI = postgresql+psycopg2://mlflow:mlflow@postgres:5432/mlflow

# The job's own MLflow server answers one step at a time: one worker (the image's default is 2) starts faster.
ci-stack-up: ## CI only: restore $(CI_STATE) into the service PostgreSQL and a new MLflow server on its network
	test -n "$$CI_PG_CONTAINER" && test -n "$$CI_SERVICES_NETWORK"
	for i in $$(seq 1 60); do docker exec "$$CI_PG_CONTAINER" pg_isready -U mlflow >/dev/null 2>&1 && break; sleep 2; done
	docker exec "$$CI_PG_CONTAINER" pg_isready -U mlflow
	docker build --quiet -f stack/Dockerfile -t $(CI_SERVER_IMAGE) stack
	docker create --name $(CI_SERVER) --network "$$CI_SERVICES_NETWORK" -p 127.0.0.1:$(CI_MLFLOW_PORT):5000 \
		-e MLFLOW_BACKEND_STORE_URI=$(CI_PG_URI) -e MLFLOW_ARTIFACTS_DESTINATION=$(CI_SERVER_ARTIFACTS) \
		-e MLFLOW_WORKERS=1 $(CI_SERVER_IMAGE)
	if [ -f $(CI_STATE)/mlflow.pgdump ]; then \
		docker exec -i "$$CI_PG_CONTAINER" pg_restore -U mlflow -d mlflow --clean --if-exists --no-owner \
			< $(CI_STATE)/mlflow.pgdump; fi
	if [ -d $(CI_STATE)/artifacts ]; then docker cp $(CI_STATE)/artifacts/. $(CI_SERVER):$(CI_SERVER_ARTIFACTS); fi
	docker start $(CI_SERVER)
	docker exec --user 0 $(CI_SERVER) sh -c "mkdir -p $(CI_SERVER_ARTIFACTS) && chown -R 10001:10001 $(CI_SERVER_ARTIFACTS)"  # docker cp copies as root
	for i in $$(seq 1 360); do curl -fsS http://127.0.0.1:$(CI_MLFLOW_PORT)/health >/dev/null 2>&1 && break; sleep 0.5; done
	curl -fsS http://127.0.0.1:$(CI_MLFLOW_PORT)/health

ci-state-save: ## CI only: dump the service PostgreSQL and the server's artifacts into $(CI_STATE) (for mlflow-state)
	rm -rf $(CI_STATE) && mkdir -p $(CI_STATE)
	docker exec "$$CI_PG_CONTAINER" pg_dump -U mlflow -d mlflow --format=custom > $(CI_STATE)/mlflow.pgdump
	docker cp $(CI_SERVER):$(CI_SERVER_ARTIFACTS) $(CI_STATE)/artifacts
	ls -la $(CI_STATE)

ci-stack-down: ## CI only: stop and remove the MLflow server ci-stack-up started
	docker rm -f $(CI_SERVER)

# A stack already running in STACK_ROOT is used and left running (its registry is the state carried over, as
# pipeline.yml's mlflow-state artifact is); otherwise one is started and stopped (`stack down` deletes it).
# The order is pipeline.yml's: gate (dry run) -> bundle -> images -> champion alias, moved last.
ci-pipeline: install-runtime ## pipeline.yml's chain locally: stack-up, mlflow run steps, gate, bundle, images + SBOMs, promote
	@if $(MAKE) --no-print-directory -s stack-status >/dev/null 2>&1; then started=0; \
		echo "ci-pipeline: using the running stack in $(STACK_ROOT)"; \
	else started=1; $(MAKE) --no-print-directory stack-up || exit $$?; fi; \
	export MLFLOW_TRACKING_URI="$$(cat $(STACK_ROOT)/tracking_uri)"; \
	status=0; $(MAKE) --no-print-directory ci-validate ci-train ci-evaluate ci-register && \
		$(MAKE) --no-print-directory ci-promote DRY_RUN=true && $(MAKE) --no-print-directory gate-status && \
		$(MAKE) --no-print-directory report-summary ci-bundle ci-model-version || status=$$?; \
	if [ $$status = 0 ]; then for image in serving batch; do \
		$(MAKE) --no-print-directory ci-image ci-image-smoke ci-image-sbom IMAGE=$$image || { status=$$?; break; }; done; fi; \
	if [ $$status = 0 ]; then $(MAKE) --no-print-directory ci-promote gate-status || status=$$?; fi; \
	if [ $$started = 1 ]; then $(MAKE) --no-print-directory stack-down; fi; exit $$status

clean: ## Remove outputs and the local MLflow store (mlflow.db, mlruns/)
	rm -rf outputs mlflow.db mlruns .pytest_cache .coverage .coverage.* coverage.xml htmlcov
