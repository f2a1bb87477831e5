# Everything runs from a project virtualenv (.venv) that `make` builds from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
JAR     := target/scala-2.12/synapseml-ext_2.12-$(VERSION).jar

.PHONY: setup quickstart test test-python test-scala test-install dist lint clean

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
	PYSPARK_PYTHON=$(abspath $(PY)) ./sbt test package < /dev/null

# Issue #6's install check: python -m build, a fresh venv, the bundled databricks-cpu.sh run for
# real into a temporary prefix (with the jar test-scala built, when there is one), then the
# quickstart from what it installed, and again from the sdist. Minutes; ~7 GB under $$TMPDIR.
test-install: $(STAMP)
	SYNAPSEML_EXT_TEST_JAR=$(wildcard $(JAR)) $(PY) -m pytest -m install -s tests/test_install.py

test: lint test-python test-scala test-install

# Release artifacts: wheel + sdist, the jar, self-contained init scripts.
dist: $(STAMP)
	$(PY) -m build --outdir dist .
	./sbt package < /dev/null
	cp $(JAR) dist/
	tools/init_scripts/bundle.sh dist/init_scripts

clean:
	rm -rf $(VENV) build dist *.egg-info target project/target scala/examples/target
