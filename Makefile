# Tandem: `make run` starts both services on the embedded defaults; `make test` runs every check.
# Both set up their own virtualenv (.venv) and dependencies on first use.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
BUF_BREAKING_AGAINST ?= .git\#branch=main
PYTEST_ARGS ?=

.PHONY: install run migrate generate check-generated lint format typecheck buf-lint \
	buf-breaking check deploy-tools pytest test clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Tandem needs Python 3.11 or newer (PYTHON=$(PYTHON))"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

run: $(STAMP)
	$(PY) scripts/run_local.py

migrate: $(STAMP)
	$(PY) -m config_service migrate
	$(PY) -m session_service migrate

generate: $(STAMP)
	$(BIN)/buf generate
	$(PY) scripts/fix_generated_imports.py shared/_generated

# Regenerates into a scratch directory and fails if the committed stubs differ.
check-generated: $(STAMP)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BIN)/buf generate -o "$$tmp"; \
	$(PY) scripts/fix_generated_imports.py "$$tmp/shared/_generated"; \
	diff -r -x __pycache__ shared/_generated "$$tmp/shared/_generated" \
		|| { echo "shared/_generated is stale: run 'make generate' and commit"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

buf-lint: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

buf-breaking: $(STAMP)
	@if git rev-parse --verify --quiet main >/dev/null; then \
		$(BIN)/buf breaking --against '$(BUF_BREAKING_AGAINST)'; \
	else \
		echo "buf breaking: no 'main' branch in this checkout to compare with"; \
		test -z "$${CI:-}"; \
	fi

check: lint typecheck buf-lint buf-breaking check-generated

# The deploy tests render the kustomize overlay with kubectl (1.27 or newer) and validate
# docker-compose.yml with a compose CLI. A missing compose CLI is installed from Debian's
# packages where we may; kubectl cannot be, so its absence is reported (and fails under CI).
deploy-tools:
	@docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || { \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			echo "installing docker-compose (Debian) for the compose validation test"; \
			apt-get update -qq >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; \
		else echo "no compose CLI: tests/deploy will skip (fail under CI)"; fi; }
	@command -v kubectl >/dev/null \
		|| echo "no kubectl (1.27+): tests/deploy will skip (fail under CI)"

pytest: $(STAMP) $(NODE_STAMP) deploy-tools
	$(PY) -m pytest $(PYTEST_ARGS)

test: check pytest

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .mypy_cache .pytest_cache .ruff_cache \
		tandem-config.db* tandem-session.db*
