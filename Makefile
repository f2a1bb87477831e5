# Everything runs from a project virtualenv (.venv) that `make` builds from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Two Spark lines are tested: .venv holds the newest (pyspark of the [test] extra, Spark 4 /
# Scala 2.13); .venv-spark35 is the same environment with pyspark 3.5 in front (its own
# site-packages first, then .venv's through a .pth file), so only pyspark differs.
VENV35   := .venv-spark35
PY35     := $(VENV35)/bin/python
STAMP35  := $(VENV35)/.installed
SPARK35_VERSION := 3.5.9
PY4J35_VERSION  := 0.10.9.7
# pyspark 4.0.x for the Scala suite on Spark 4.0 (LTS runtimes): put first on PYTHONPATH.
PYSPARK40 := $(VENV)/pyspark-4.0.1
# The version is written once, as synapseml_ext.__version__ (pyproject and build.sbt read it).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' python/synapseml_ext/__init__.py)
JAR     := target/scala-2.12/synapseml-ext_2.12-$(VERSION).jar
JAR213  := target/scala-2.13/synapseml-ext_2.13-$(VERSION).jar

.PHONY: test-fast setup quickstart test test-python test-python-spark35 test-python-versions test-scala test-install dist lint clean

setup: $(STAMP) $(STAMP35)

# Re-installs when pyproject.toml changes; pip reuses what is already there.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,quickstart]'
	touch $(STAMP)

$(STAMP35): $(STAMP) Makefile
	test -x $(PY35) || $(PYTHON) -m venv $(VENV35)
	$(PY35) -m pip install --quiet --no-deps pyspark==$(SPARK35_VERSION) py4j==$(PY4J35_VERSION)
	$(PY35) -c "import pathlib, sysconfig, sys; pathlib.Path(sysconfig.get_paths()['purelib'], 'zz_synapseml_ext_main_venv.pth').write_text('import site; site.addsitedir(%r)\n' % sys.argv[1])" \
	  "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(PY35) -c "import pyspark, synapseml_ext; assert pyspark.__version__ == '$(SPARK35_VERSION)'"
	touch $(STAMP35)

$(PYSPARK40)/.installed: $(STAMP)
	$(PY) -m pip install --quiet --no-deps --target $(PYSPARK40) pyspark==4.0.1 py4j==0.10.9.9
	touch $@

quickstart: $(STAMP)
	$(VENV)/bin/synapseml-ext quickstart

lint: $(STAMP)
	$(VENV)/bin/ruff check python tests tools
	$(VENV)/bin/mypy  # the engine and the stage contract ([tool.mypy] in pyproject.toml)

test-python: $(STAMP) $(STAMP35)  # STAMP35: tests/test_spark_lines.py loads models on the other line
	$(PY) -m pytest --durations=15

# The edit loop: every test that starts no Spark and is not marked slow (a few minutes);
# `make test` still runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not spark and not slow and not install" --durations=10

# The 3.5 line: every test that touches Spark APIs (the stages and their contract, the
# Scala stages' driver-side Python, persistence, Connect, the standalone cluster, the CLI);
# the Spark-free engine tests run once, above.
SPARK_TESTS := tests/test_embedder.py tests/test_cli.py tests/test_driver_ops.py \
	tests/test_nn_search.py tests/test_nn_errors.py tests/test_nn_integrity.py \
	tests/test_nn_local_store.py tests/test_nn_placement.py tests/test_connect.py \
	tests/test_standalone_cluster.py tests/test_scala_interop.py tests/test_nn_dropin.py \
	tests/test_stage_contract.py
test-python-spark35: $(STAMP35)
	$(PY35) -m pytest $(SPARK_TESTS)

# The Scala side: generated stubs up to date, then ScalaTest through ./sbt (Java 17 and Maven
# are all it needs; sbt and the Scala/Spark jars come from Maven Central on the first run).
# The tests run the Python stage on Spark's workers with the Python of the same Spark line.
test-scala: $(STAMP) $(STAMP35) $(PYSPARK40)/.installed
	$(PY) -m synapseml_ext.codegen --check
	# synapseml-ext_2.12 on Spark 3.5.9; synapseml-ext_2.13 (built on 4.0.1) on 4.2.0 and 4.0.1
	PYSPARK_PYTHON=$(abspath $(PY35)) ./sbt test < /dev/null
	PYSPARK_PYTHON=$(abspath $(PY)) ./sbt -Dsynapsemlext.sparkLine=4.0 -Dsynapsemlext.testSparkLine=4.2 test < /dev/null
	PYTHONPATH=$(abspath $(PYSPARK40)) PYSPARK_PYTHON=$(abspath $(PY)) ./sbt -Dsynapsemlext.sparkLine=4.0 test < /dev/null
	./sbt +package < /dev/null

# Issue #6's install check: python -m build, a fresh venv, the bundled databricks-cpu.sh run for
# real into a temporary prefix (with the jar test-scala built, when there is one), then the
# quickstart from what it installed, and again from the sdist. Minutes; ~7 GB under $$TMPDIR.
# The other Pythons the package supports (the default venv is the machine's python3, 3.11
# here): a venv each with the package and its [test] extra (.venv-py3.X), running the
# Spark-free tier and the stage tests on the default Spark line. Not in `make test`: with the
# three installs it would take CI's 2-core run past its time budget. The interpreter is
# python3.X on the PATH or pyenv's 3.X; one that is missing fails the target naming it.
PYTHON_VERSIONS ?= 3.10 3.12 3.13
VERSION_SMOKE   := tests/test_embedder.py tests/test_nn_search.py
find_python = for p in python$(1) $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$(1)*/bin/python; do \
  [ "$$($$p -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2> /dev/null)" = "$(1)" ] \
  && { echo $$p; break; }; done
test-python-versions: pyproject.toml
	@for v in $(PYTHON_VERSIONS); do \
	  py=$$($(call find_python,$$v)); \
	  test -n "$$py" || { echo "Python $$v not found (python$$v on the PATH or pyenv's $$v): install it, or choose others with PYTHON_VERSIONS='...'"; exit 2; }; \
	  venv=.venv-py$$v; \
	  if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    echo "== installing Python $$v ($$py) into $$venv"; \
	    test -x $$venv/bin/python || $$py -m venv $$venv || exit 1; \
	    $$venv/bin/python -m pip install --quiet --upgrade pip || exit 1; \
	    $$venv/bin/python -m pip install --quiet -e '.[test,quickstart]' || exit 1; \
	    touch $$venv/.installed; \
	  fi; \
	  echo "== Python $$v"; \
	  $$venv/bin/python -m pytest -q -p no:cacheprovider -m "not spark and not slow and not install" || exit 1; \
	  $$venv/bin/python -m pytest -q -p no:cacheprovider $(VERSION_SMOKE) || exit 1; \
	done

test-install: $(STAMP)
	SYNAPSEML_EXT_TEST_JAR=$(wildcard $(JAR)) $(PY) -m pytest -m install -s tests/test_install.py

test: lint test-python test-python-spark35 test-scala test-install

# Release artifacts: wheel + sdist, the jar, self-contained init scripts.
dist: $(STAMP)
	$(PY) -m build --outdir dist .
	./sbt +package < /dev/null
	cp $(JAR) $(JAR213) dist/
	tools/init_scripts/bundle.sh dist/init_scripts

clean:
	rm -rf $(VENV) $(VENV35) .venv-py3.* build dist *.egg-info target project/target scala/examples/target
