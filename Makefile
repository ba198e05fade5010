# The two commands users need: `make run` (train Breakout locally) and `make test`.
# Everything installs itself into .venv/ first; `make setup` is idempotent and fast when
# nothing changed (it re-installs only when pyproject.toml is newer than the stamp).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: setup run test test-fast lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

## Train Breakout with learner + workers + evaluator as local processes (ARGS='--duration 600' ...).
run: setup
	$(BIN)/a3c run $(ARGS)

## The whole suite: unit, integration (real processes, real sockets), learning (slow).
test: setup
	$(BIN)/python -m pytest $(ARGS)
	$(if $(TEST_EXTRA),$(MAKE) $(TEST_EXTRA))

## Everything but the slow learning tests.
test-fast: setup
	$(BIN)/python -m pytest -m 'not slow' $(ARGS)

LINTED := common services bench tests k8s deploy

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Deployment, benchmark and other targets live in mk/*.mk, one file per concern.
# A file there may append a target to TEST_EXTRA to make it part of `make test`.
TEST_EXTRA :=
-include mk/*.mk
