# The two commands a new user needs:
#   make example   - set up, then run nonstop in front of two example backends
#   make test      - set up (system packages included), then run lint, types and all tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: example test lint build clean

# What running needs: the package, its dependencies, and what builds its compiled part
# (pyproject's [build-system], installed once here so `make build` can recompile).
# --no-compile: Python writes a module's bytecode when it first imports it, instead of
# pip compiling every file of every package up front.
PIP_INSTALL := $(BIN)/pip install -q --no-compile
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' > $(VENV)/build-requires.txt
	$(PIP_INSTALL) -r $(VENV)/build-requires.txt
	NONSTOP_COMPILE=0 $(PIP_INSTALL) --no-build-isolation -e .
	touch $@

# What the tests need on top ([dev]): only `make test` and `make lint` install it.
$(VENV)/.dev: $(VENV)/.installed
	NONSTOP_COMPILE=0 $(PIP_INSTALL) --no-build-isolation -e '.[dev]'
	touch $@

# The proxy's hot path is compiled with mypyc (setup.py), one compiler per core; rebuilt
# when its sources change.
COMPILED_SOURCES := $(wildcard src/nonstop/proxy/*.py src/nonstop/proxy/balancers/*.py)
$(VENV)/.compiled: $(VENV)/.installed $(COMPILED_SOURCES)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: $(VENV)/.compiled

example: $(VENV)/.compiled
	$(BIN)/python examples/hello/run.py

test: $(VENV)/.compiled $(VENV)/.dev
	./scripts/system-deps.sh
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
