# Everything runs from a project virtualenv (.venv) that `make` builds from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup quickstart test test-python lint clean

setup: $(STAMP)

# Re-installs when pyproject.toml changes; pip reuses what is already there.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,quickstart]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/synapseml-ext quickstart

lint: $(STAMP)
	$(VENV)/bin/ruff check python tests tools

test-python: $(STAMP)
	$(PY) -m pytest

test: lint test-python

clean:
	rm -rf $(VENV) build dist *.egg-info
