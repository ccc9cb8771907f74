# The two commands of the README, and the steps they are made of. Each target does its own set-up
# and is idempotent: a second run reuses the virtual environment and skips up-to-date work.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints one warning per package for this machine's absent local indexes; keep logs readable.
PIP_FILTER := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.structlab-installed
PYTEST_NOTEBOOKS := --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
	--nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: help venv data book test test-unit test-notebooks lint bench clean

help:
	@echo "make book   - set up, execute every chapter at its quick profile, build the HTML book"
	@echo "make test   - set up, run the unit tests, the book build test and nbval on every chapter"
	@echo "make lint   - ruff over the package, tests, benchmarks and notebooks"
	@echo "make bench  - run every benchmark in benchmarks/"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip $(PIP_FILTER)
	$(BIN)/python -m pip install -q -e '.[dev]' $(PIP_FILTER)
	@touch $@

data: $(STAMP)
	$(BIN)/structlab data setup

book: data
	$(BIN)/structlab book

test: data
	$(BIN)/python -m pytest tests chapters $(PYTEST_NOTEBOOKS)

test-unit: data
	$(BIN)/python -m pytest tests

test-notebooks: data
	$(BIN)/python -m pytest chapters $(PYTEST_NOTEBOOKS)

lint: $(STAMP)
	$(BIN)/ruff check structlab tests benchmarks chapters

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf book/_build .structlab-cache
