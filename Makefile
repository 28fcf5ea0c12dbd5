# baclofen-check: the two commands in the README are `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required")'
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: serve on http://127.0.0.1:8080 with the embedded SQLite store (local demo:
## authentication off, which the service logs as a warning).
run: $(STAMP)
	mkdir -p var
	API_REQUIRE_AUTH=false CDS_REQUIRE_JWT=false $(BIN)/baclofen-check serve --bind 127.0.0.1:8080

## make test: install what the tests need, lint, type-check and run pytest.
test: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check service tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
