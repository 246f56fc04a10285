# cliproxy-host: `make test` and `make run` work on a fresh machine with Python, gcc, cmake and cargo.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config.yaml

.PHONY: install test lint examples run stress bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# lint-imports holds the import map of docs/ARCHITECTURE.md ([tool.importlinter] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

test: lint
	$(BIN)/pytest

# The full stress runs (CI runs a reduced load inside `make test`).
stress: $(STAMP)
	STRESS_CALLS=10000 STRESS_RELOADS=200 $(BIN)/pytest -q tests/host/test_stress.py
	STREAM_STREAMS=10000 STREAM_RACES=1000 $(BIN)/pytest -q tests/host/test_stream_races.py
	MODEL_STREAMS=1000 $(BIN)/pytest -q tests/gateway/test_models_bad.py -k concurrent

# Benchmarks: every figure a ratio against a baseline measured in the same run, written to
# bench/RESULTS.md (a few minutes). BENCH_ARGS passes options, e.g. "--only 1,2" or
# "--compare-tree DIR" (before/after against a patched copy of cliproxy_host in DIR).
# The bench extra brings the Extism peer (extism, wasmtime); matplotlib is optional: it
# draws bench/payload.png.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m pip install --quiet matplotlib || echo "no matplotlib: the payload curve is a table only"
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py --out bench/RESULTS.md $(BENCH_ARGS)

# A few seconds: every figure at tiny sizes (numbers only indicative); RESULTS.md untouched.
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick --out build/bench/RESULTS-quick.md

examples: $(STAMP)
	$(BIN)/python examples/build.py --plugins-dir plugins --build-dir build

run: examples
	$(BIN)/python examples/default_config.py $(CONFIG)
	$(BIN)/cliproxy-host --log-level INFO serve --config $(CONFIG) --host 127.0.0.1 --port 8317

clean:
	rm -rf build plugins $(VENV) .mypy_cache .ruff_cache .pytest_cache
