# The commands a person runs; CI calls the same targets.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup run repro demo test test-fast lint format bench bench-gpu clean-demo

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv with the pinned dependencies (idempotent)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

run: setup  ## download flower_photos and run the whole pipeline (dvc repro)
	dvc repro

repro: setup  ## dvc repro on the current params
	dvc repro

demo: setup  ## every stage offline on generated images and random weights, in demo/
	python -m pipeline.demo --dest demo

test: setup  ## the full test suite
	python -m pytest

test-fast: setup  ## the tests that do not run dvc pipelines or kill matrices
	python -m pytest -m "not slow"

lint: setup  ## ruff lint and format check
	ruff check .
	ruff format --check .

format: setup  ## apply ruff fixes and formatting
	ruff check --fix .
	ruff format .

bench: setup  ## CPU benchmarks: extraction vs the naive loop, memory at two sizes
	python -m bench.extract --device cpu --limit 200
	python bench/memory_bench.py

clean-demo:  ## remove the demo workspace
	rm -rf demo
