# The two commands of the README:
#   make book   set up .venv (if needed) and build the HTML book into _build/html
#   make test   set up .venv (if needed), run the tests, build the book and check its HTML
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export BNLIB_PROGRESS ?= 0
export PYTHONUNBUFFERED := 1

.PHONY: book test lint format install clean clean-cache

install: $(STAMP)

# Re-install when the requirements or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

book: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/jupyter-book build . -W -n --keep-going; \
	echo "book built in $$(( $$(date +%s) - start )) s: _build/html/index.html"

test: $(STAMP) lint
	$(PY) -m pytest -m "not book"
	$(MAKE) book
	$(PY) -m pytest -m book

lint: $(STAMP)
	$(VENV)/bin/ruff check bnlib tests
	$(VENV)/bin/ruff format --check bnlib tests

format: $(STAMP)
	$(VENV)/bin/ruff format bnlib tests
	$(VENV)/bin/ruff check --fix bnlib tests

clean-cache:
	rm -rf _build/.jupyter_cache

clean:
	rm -rf _build
