"""synapseml_ext.codegen: the checked-in Scala stubs are what the Python stages generate, and
the generator reads the Params the way the Scala side needs them."""

from __future__ import annotations

import re

import pytest
from pyspark.ml.param import Param, Params, TypeConverters

from synapseml_ext.codegen import HEADER, generate, stale_files
from synapseml_ext.codegen.__main__ import main as codegen_main
from synapseml_ext.codegen.model import NO_DEFAULT, read_stage, scala_literal
from synapseml_ext.codegen.reference import MARKDOWN_HEADER
from synapseml_ext.contract.names import STAGES
from synapseml_ext.hf import HuggingFaceSentenceEmbedder

from conftest import REPO


def test_checked_in_scala_stubs_are_up_to_date(capsys):
    # The same check CI runs (python -m synapseml_ext.codegen --check).
    assert codegen_main(["--check", "--root", str(REPO)]) == 0, capsys.readouterr().out


def test_check_fails_and_shows_the_diff_when_a_stub_was_edited(tmp_path, capsys):
    files = generate(tmp_path)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("batchSize -> 256", "batchSize -> 128"))
    (tmp_path / "build.sbt").write_text("")
    assert codegen_main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-    batchSize -> 128," in out and "+    batchSize -> 256," in out
    assert codegen_main(["--root", str(tmp_path)]) == 0  # regenerating repairs it
    assert codegen_main(["--check", "--root", str(tmp_path)]) == 0


def test_generated_files_say_so_and_stale_ones_are_found(tmp_path):
    files = generate(tmp_path)
    for path, text in files.items():
        assert text.startswith((MARKDOWN_HEADER if path.suffix == ".md" else HEADER) + "\n")
    assert {path.suffix for path in files} == {".scala", ".md"}
    orphan = tmp_path / "scala/src/main/scala/io/github/synapsemlext/hf/Gone.scala"
    orphan.parent.mkdir(parents=True)
    orphan.write_text(HEADER + "\n")
    hand_written = orphan.with_name("HandWritten.scala")
    hand_written.write_text("package x\n")
    assert stale_files(tmp_path, files) == [orphan]


def test_embedder_params_become_typed_scala_params():
    stage = read_stage(STAGES[0])
    by_name = {p.name: p for p in stage.params}
    assert set(by_name) == {p.name for p in HuggingFaceSentenceEmbedder().params}
    assert by_name["modelName"].scala.value == "String"
    assert by_name["batchSize"].scala.param == "IntParam"
    assert by_name["minCosine"].scala.param == "DoubleParam"
    assert by_name["normalize"].scala.param == "BooleanParam"
    assert by_name["batchSize"].default == 256
    # Unset-without-default: normalize is optional (Option in Scala), inputCol required.
    assert by_name["normalize"].default is NO_DEFAULT and by_name["normalize"].optional
    assert by_name["inputCol"].default is NO_DEFAULT and not by_name["inputCol"].optional
    text = generate(REPO)[next(iter(generate(REPO)))]
    assert "def setModelName(value: String): this.type" in text
    assert "final def getNormalize: Option[Boolean] = get(normalize)" in text
    # Runs the PySpark stage in the driver-side Python, which checks the values (one copy).
    assert "DriverStages.transform(this, dataset)" in text
    assert "with HuggingFaceSentenceEmbedderParams with DriverParamsWritable" in text
    assert "Rules" not in text and "isValid" not in text


def test_unknown_type_converters_are_refused_by_name(monkeypatch):
    class Odd(Params):
        shape = Param(Params._dummy(), "shape", "a dict", typeConverter=TypeConverters.identity)

        def __init__(self):
            super().__init__()

    from synapseml_ext.codegen import model

    with pytest.raises(TypeError, match=r"Odd\.shape: codegen has no Scala type for "
                                        r"typeConverter 'identity'"):
        model._read_param(Odd(), Odd().shape)


@pytest.mark.parametrize(("value", "literal"), [
    (256, "256"), (0.999, "0.999"), (1.0, "1.0"), (True, "true"), ("a\"b\\c\n", '"a\\"b\\\\c\\n"'),
    (["x", "y"], 'Array("x", "y")'),
])
def test_scala_literals(value, literal):
    assert scala_literal(value) == literal


def test_reference_lists_every_param_and_flag():
    from synapseml_ext.cli import build_parser
    from synapseml_ext.nn import ApproximateNearestNeighbors

    text = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    for stage in (HuggingFaceSentenceEmbedder(), ApproximateNearestNeighbors()):
        for param in stage.params:
            assert f"| `{param.name}` |" in text, param.name
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert f"### `synapseml-ext {name}`" in text
        for action in sub._actions:
            for flag in action.option_strings:
                assert f"`{flag}`" in text or flag in ("-h", "--help"), (name, flag)


def test_knn_stages_are_generated_and_run_through_the_driver_python():
    from synapseml_ext.nn import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel

    files = generate(REPO)
    for cls in (ApproximateNearestNeighbors, ApproximateNearestNeighborsModel):
        text = next(t for p, t in files.items() if p.name == f"{cls.__name__}.scala")
        assert text.startswith("// generated by synapseml_ext.codegen")
    estimator = next(t for p, t in files.items() if p.name == "ApproximateNearestNeighbors.scala")
    model = next(t for p, t in files.items() if p.name == "ApproximateNearestNeighborsModel.scala")
    # Every Param, the spark-rapids-ml and SynapseML ones too: declared once, in the
    # estimator's Params trait, which the model mixes in; each class has its setters.
    assert "with ApproximateNearestNeighborsParams with MLWritable" in model
    for param in ApproximateNearestNeighborsModel().params:
        assert f'"{param.name}"' in estimator, param.name
        setter = f"def set{param.name[0].upper()}{param.name[1:]}("
        assert setter in estimator and setter in model, param.name
    assert "DriverStages.fit(this, dataset)" in estimator
    assert "final def getAlgoParams: Option[Map[String, Any]] = get(algoParams)" in estimator
    assert "def kneighbors(queryDf: Dataset[_], sortKnnDfByQueryId: Boolean)" in model
    assert "def approxSimilarityJoin(queryDf: Dataset[_], distCol: String" in model
    assert "new DriverModelWriter(this, state)" in model


def test_no_hand_written_stage_is_left_in_scala():
    """Every Scala stage class is generated; what is written by hand is the bridge and the
    Spark-line seam (issue 20's target: at most 500 lines)."""
    sources = REPO / "scala" / "src" / "main"
    hand = [p for p in sources.rglob("*.scala")
            if not p.read_text(encoding="utf-8").startswith("// generated by")]
    stage_class = re.compile(r"extends Checked(Estimator|Model|Transformer)\b")
    assert not [p for p in hand if stage_class.search(p.read_text(encoding="utf-8"))]
    # The driver-side Python's launcher and calls, JSON Params, the reader, the Spark-line seam.
    assert sum(len(p.read_text(encoding="utf-8").splitlines()) for p in hand) <= 500
