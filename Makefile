# The two commands a new user needs:
#   make example   - set up, then run nonstop in front of two example backends
#   make test      - set up (system packages included), then run lint, types and all tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: example test lint build clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.compiled

# The proxy's hot path is compiled with mypyc (setup.py); rebuild when its sources change.
COMPILED_SOURCES := $(wildcard src/nonstop/proxy/*.py src/nonstop/proxy/balancers/*.py)
$(VENV)/.compiled: $(VENV)/.installed $(COMPILED_SOURCES)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: $(VENV)/.compiled

example: $(VENV)/.compiled
	$(BIN)/python examples/hello/run.py

test: $(VENV)/.compiled
	./scripts/system-deps.sh
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
