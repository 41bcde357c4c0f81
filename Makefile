# Everything a fresh machine needs: `make demo` runs bkit on the embedded default,
# `make test` installs the dev tools and runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bkit demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy bkit/core --follow-imports=silent
	$(BIN)/pytest -q -m exclusive -p no:cacheprovider
	$(BIN)/pytest -q -m "not exclusive" -n 2 --dist loadfile -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy bkit/core --follow-imports=silent

bench: $(STAMP)
	$(BIN)/python bench/ticks.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
