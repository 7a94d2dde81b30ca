# mmops: two commands after cloning.
#   make demo   set up (venv + every dependency) and run the end-to-end demo on embedded defaults
#   make test   set up and run the test suite (browser tests included)
# Both are idempotent: the venv is rebuilt only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mmops-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast test-browser review-screenshots browser-deps lint bench services clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "mmops needs Python 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned exactly: the CPU build; a looser pin pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# animal-mnist declares tensorflow as a dependency but its data files need none.
	$(BIN)/python -m pip install --quiet --no-deps animal-mnist==0.4
	touch $(STAMP)

demo: setup
	$(BIN)/mmops demo

services:
	bash scripts/ensure_services.sh

test: setup services browser-deps
	$(BIN)/python -m pytest -q

# Headless Chromium against `mlflow server` and the Evidently report (about 1 min on a
# fresh clone; part of `make test`). review-screenshots also writes the pages to docs/review/.
browser-deps:
	bash scripts/ensure_chromium.sh

test-browser: setup browser-deps
	$(BIN)/python -m pytest -q -m browser

review-screenshots: setup browser-deps
	MMOPS_REVIEW_SCREENSHOTS=$(CURDIR)/docs/review $(BIN)/python -m pytest -q -m browser

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

test-prod: setup services
	$(BIN)/python -m pytest -q -m prod

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean-data:
	rm -rf .mmops
