# Everything runs from a project virtualenv (.venv) that `make` builds from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup quickstart test test-python test-scala lint clean

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

# The Scala side: generated stubs up to date, then ScalaTest through ./sbt (Java 17 and Maven
# are all it needs; sbt and the Scala/Spark jars come from Maven Central on the first run).
# The tests run the Python stage on Spark's workers with this .venv's Python.
test-scala: $(STAMP)
	$(PY) -m synapseml_ext.codegen --check
	PYSPARK_PYTHON=$(abspath $(PY)) ./sbt test < /dev/null

test: lint test-python test-scala

clean:
	rm -rf $(VENV) build dist *.egg-info target project/target scala/examples/target
