# cliproxy-host: `make test` and `make run` work on a fresh machine with Python, gcc, cmake and cargo.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config.yaml

.PHONY: install test lint examples run clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

examples: $(STAMP)
	$(BIN)/python examples/build.py --plugins-dir plugins --build-dir build

run: examples
	$(BIN)/python examples/default_config.py $(CONFIG)
	$(BIN)/cliproxy-host --log-level INFO serve --config $(CONFIG) --host 127.0.0.1 --port 8317

clean:
	rm -rf build plugins $(VENV) .mypy_cache .ruff_cache .pytest_cache
