# The two commands a person needs are `make demo` and `make test`; both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-quick clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# make demo DEMO_ARGS="--duration 60 --reset": options of `syncer demo` (see its --help)
demo: $(STAMP)
	$(BIN)/python -m syncer demo $(DEMO_ARGS)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check syncer migrations tests bench
	$(BIN)/ruff format --check syncer migrations tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)         # the full run: every figure of docs/performance.md (~15 min here)
	$(BIN)/python -m bench

bench-quick: $(STAMP)   # smaller catalogs, one repeat: for everyday checks (< 2 min)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
