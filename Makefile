# Thin verbs over the real commands; `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?=
MODEL_DIR ?= models

.PHONY: help install train-local test lint

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/dev.txt 2> >(grep -v "is ignored: it is neither" >&2)
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its development tools (idempotent)

train-local: $(STAMP) ## train a model in the local virtualenv (CONFIG=path picks a config)
	$(PY) -m training --models-dir $(MODEL_DIR) $(if $(CONFIG),--config $(CONFIG))

test: $(STAMP) ## run the whole test suite
	$(PY) -m pytest

lint: $(STAMP) ## formatter, linter, type checker
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
