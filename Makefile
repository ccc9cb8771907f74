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
PYTEST_NOTEBOOKS := --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
	--nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: help venv data browser book test test-unit test-notebooks test-faults lint lab bench \
	gpu-check clean

help:
	@echo "make book   - set up, execute the chapters whose book run is out of date, build the HTML"
	@echo "make test   - set up, run the unit tests, the book and browser tests, nbval on the"
	@echo "              smoke runs of every chapter (tests/notebooks)"
	@echo "make lint   - ruff over the package, tests, benchmarks, chapters and book pages"
	@echo "make lab    - open the chapter notebooks in JupyterLab (as root too; this machine only)"
	@echo "make test-faults - the fault-injection and bad-input suite (tests/faults, ~2 min)"
	@echo "make bench  - run every benchmark in benchmarks/, record them in results/bench/ and"
	@echo "              rebuild the book's performance page from the records"
	@echo "make gpu-check - on a CUDA GPU (refuses without one): the device tests, every chapter's"
	@echo "              smoke run on CUDA against its stored CPU run, step timings (~8 min)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip $(PIP_FILTER)
	$(BIN)/python -m pip install -q -e '.[dev]' $(PIP_FILTER)
	@touch $@

data: $(STAMP)
	$(BIN)/structlab data setup

# Headless Chromium for the browser test of the built book (Debian's package; root only).
browser:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null \
		&& { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		chromium >/dev/null; }; } || echo "make: chromium not installed; the browser test skips"; }

book: data
	$(BIN)/structlab book

test: data browser
	$(BIN)/python -m pytest tests $(PYTEST_NOTEBOOKS)

test-unit: data
	$(BIN)/python -m pytest tests --ignore=tests/notebooks

test-notebooks: data
	$(BIN)/python -m pytest tests/notebooks $(PYTEST_NOTEBOOKS)

test-faults: data
	$(BIN)/python -m pytest tests/faults

# JupyterLab on chapters/ (structlab lab adds --allow-root when run as root); LAB_ARGS for more,
# e.g. make lab LAB_ARGS="--port 8890 --no-browser".
lab: data
	$(BIN)/structlab lab $(LAB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check structlab tests benchmarks chapters book

bench: data
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
	$(BIN)/python -m structlab.benchmarks page

# On a CUDA machine only: refused in one line before any set-up when there is no GPU. The device
# tests run with STRUCTLAB_DEVICE_TESTS=1 (the ordinary suite hides CUDA); GPU_CHECK_ARGS for
# more, e.g. make gpu-check GPU_CHECK_ARGS="--chapters equivariance,darts_prime".
gpu-check: $(STAMP)
	@$(BIN)/structlab gpu-check --probe >/dev/null
	@$(MAKE) --no-print-directory data
	STRUCTLAB_DEVICE_TESTS=1 $(BIN)/structlab gpu-check $(GPU_CHECK_ARGS)

clean:
	rm -rf book/_build
