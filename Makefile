# The two commands a new user needs:
#   make example   - set up, then run nonstop in front of two example backends
#   make test      - set up (system packages included), then run lint, types and all tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: example test lint build clean

# What running needs: the package and its dependencies, installed as Python (setuptools
# builds it; the data plane then runs interpreted until `make build` compiles it).
# --no-compile: Python writes a module's bytecode when it first imports it, instead of
# pip compiling every file of every package up front.
PIP_INSTALL := $(BIN)/pip install -q --no-compile --disable-pip-version-check
BUILD_REQUIRES = $(BIN)/python -c 'import sys, tomllib; \
	r = tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]; \
	print(*(x for x in r if x.startswith("mypy") == (sys.argv[1] == "compile")), sep="\n")'
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	@$(BUILD_REQUIRES) install > $(VENV)/install-requires.txt
	$(PIP_INSTALL) -r $(VENV)/install-requires.txt
	NONSTOP_COMPILE=0 $(PIP_INSTALL) --no-build-isolation -e .
	touch $@

# What the tests need on top ([dev]): only `make test` and `make lint` install it.
$(VENV)/.dev: $(VENV)/.installed
	NONSTOP_COMPILE=0 $(PIP_INSTALL) --no-build-isolation -e '.[dev]'
	touch $@

# The proxy's hot path is compiled with mypyc (setup.py), one compiler per core; rebuilt
# when its sources change. mypy, the compiler, is installed only for this.
COMPILED_SOURCES := $(wildcard src/nonstop/proxy/*.py src/nonstop/proxy/balancers/*.py)
$(VENV)/.compiled: $(VENV)/.installed $(COMPILED_SOURCES)
	@$(BUILD_REQUIRES) compile > $(VENV)/compile-requires.txt
	$(PIP_INSTALL) -r $(VENV)/compile-requires.txt
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: $(VENV)/.compiled

# The example does not wait for the compiler (about two minutes on two cores): it runs
# the data plane interpreted until `make build` (or `make test`) compiled it once, and
# from then on keeps the compiled modules up to date. It says which one runs.
example: $(if $(wildcard $(VENV)/.compiled),$(VENV)/.compiled,$(VENV)/.installed)
	$(BIN)/python examples/hello/run.py

# The tests run in TEST_JOBS processes (pytest-xdist), each taking the next test when it
# is free: most integration tests wait on real processes, sockets and sshd rather than use
# a core, and every test picks its own ports, directories and network namespaces.
TEST_JOBS ?= 4
test: $(VENV)/.compiled $(VENV)/.dev
	./scripts/system-deps.sh
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_JOBS) --dist worksteal

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
