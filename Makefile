# syncd — the two commands that matter are `make run` and `make test`.
# Every install step lives here, so a fresh machine needs nothing but Python 3.11+, pip and npm.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format clean install

# The venv is rebuilt only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The embedded default: ./sync/local <-> the local-folder remote ./sync/remote, SQLite state
# in ./sync/state.db. Ctrl-C stops the daemon cleanly.
run: $(STAMP)
	mkdir -p sync/local sync/remote
	cd $(CURDIR) && PWD=$(CURDIR) $(BIN)/syncd run -c config/syncd.yaml

lint: $(STAMP)
	$(BIN)/ruff check syncd tests
	$(BIN)/ruff format --check syncd tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format syncd tests
	$(BIN)/ruff check --fix syncd tests

# Emulators are started by the test fixtures on free loopback ports and stopped by pid.
test: $(STAMP) lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache sync
