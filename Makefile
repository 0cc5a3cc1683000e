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
CHAPTERS := $(shell grep -l '^jupytext:' chapters/*.md)
export PYTHONUNBUFFERED := 1

.PHONY: lab book test lint format install clean clean-cache notebooks browser

install: $(STAMP)

# Re-install when the requirements or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

# A failed build forgets Sphinx's saved environment: otherwise the next build would see
# no changed source, re-read nothing and pass with the failed pages' tracebacks in them.
book: $(STAMP)
	@start=$$(date +%s); \
	BNLIB_BOOK_BUILD=1 $(VENV)/bin/jupyter-book build . -W -n --keep-going \
		|| { rm -rf _build/.doctrees; echo "book build failed: fix the warnings above"; exit 1; }; \
	echo "book built in $$(( $$(date +%s) - start )) s: _build/html/index.html"

test: $(STAMP) lint browser
	$(PY) -m pytest -m "not book" --durations=15
	$(MAKE) book
	$(PY) -m pytest -m book

# Run the chapters locally: JupyterLab (installed with the project), with the chapters'
# Markdown opening as notebooks by default (lab/overrides.json: jupytext's viewer).
# (--allow-root: containers often run as root, which JupyterLab refuses otherwise.)
lab: $(STAMP)
	@settings=$$($(PY) -c 'import sys; print(sys.prefix)')/share/jupyter/lab/settings; \
	mkdir -p $$settings && cp lab/overrides.json $$settings/overrides.json
	BNLIB_PROGRESS=1 $(VENV)/bin/jupyter lab --ServerApp.root_dir=. \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) chapters/

# Colab opens .ipynb files only: notebooks/ holds the chapters as notebooks (no outputs).
# --update keeps the cell ids of an existing notebook, so that diffs show real changes.
notebooks: $(STAMP)
	@mkdir -p notebooks
	@for f in $(CHAPTERS); do \
	  out=notebooks/$$(basename $${f%.md}).ipynb; \
	  $(VENV)/bin/jupytext --quiet --to ipynb $$( [ -f $$out ] && echo --update ) --output $$out $$f; \
	done

# The browser test drives Debian's Chromium (no tool can download its own browser here).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

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
