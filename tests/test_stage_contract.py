"""The contract every stage keeps, run for each stage that ``synapseml_ext.contract.names``
lists (as spark-rapids-ml runs its common estimator tests over every estimator): Params with
docs in ``explainParams``, ``copy``, save/load under the Python and the Scala class name, a
damaged saved value refused at load with the setter's message, and a ``Pipeline`` that fits, transforms, saves and loads with the stage in it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel

from synapseml_ext.contract.names import STAGES


@pytest.fixture(scope="module")
def vectors(spark):
    rng = np.random.default_rng(8)
    return spark.createDataFrame([(i, rng.normal(size=6).astype(float).tolist())
                                  for i in range(40)], "id long, v array<double>")


@pytest.fixture(scope="module")
def texts(spark):
    return spark.createDataFrame([(1, "desserts"), (2, "disgusting"), (3, None)],
                                 "id long, text string")


@pytest.fixture
def case(request, vectors, texts, minilm_dir, cache_dir):
    """(a configured stage, the DataFrame a Pipeline fits and transforms, one Param set to a
    value other than its default)."""
    name = request.param.python_class.rpartition(".")[2]
    if name == "HuggingFaceSentenceEmbedder":
        stage = request.param.python_type()(modelName=minilm_dir, inputCol="text", runtime="onnx",
                                      cacheDir=cache_dir, batchSize=8)
        return stage, texts, ("batchSize", 8)
    from synapseml_ext.nn import ApproximateNearestNeighbors

    estimator = ApproximateNearestNeighbors(k=3, inputCol="v", idCol="id", algorithm="exact",
                                            backend="cpu")
    stage = estimator if name == "ApproximateNearestNeighbors" else estimator.fit(vectors)
    return stage, vectors, ("k", 3)


every_stage = pytest.mark.parametrize("case", STAGES, indirect=True,
                                      ids=[s.python_class.rpartition(".")[2] for s in STAGES])


@every_stage
def test_params_have_docs_and_copy_keeps_uid_and_values(case):
    stage, _, (name, value) = case
    explained = stage.explainParams()
    for param in stage.params:
        assert param.doc.strip() and f"{param.name}: {param.doc}" in explained
    assert stage.getOrDefault(name) == value
    copied = stage.copy({stage.getParam(name): value + 1})
    assert copied.uid == stage.uid and copied.getOrDefault(name) == value + 1
    assert stage.getOrDefault(name) == value  # the original is untouched
    assert type(copied) is type(stage)


@every_stage
def test_save_and_load_under_either_class_name(case, tmp_path):
    stage, _, _ = case
    bridged = next(s for s in STAGES if s.python_class.endswith("." + type(stage).__name__))
    path = str(tmp_path / "stage")
    stage.write().save(path)
    for class_name in bridged.names:  # as PySpark wrote it, then as the Scala stage writes it
        _rewrite_class(Path(path), class_name)
        loaded = type(stage).load(path)
        assert loaded.uid == stage.uid
        assert {p.name: v for p, v in loaded._paramMap.items()} == \
            {p.name: v for p, v in stage._paramMap.items()}
    _rewrite_class(Path(path), "org.apache.spark.ml.feature.Tokenizer")
    with pytest.raises(ValueError, match=r"holds a org\.apache\.spark\.ml\.feature\.Tokenizer"):
        type(stage).load(path)


@every_stage
def test_a_damaged_saved_value_fails_at_load_with_the_setters_message(case, tmp_path):
    stage, _, (name, value) = case
    path = str(tmp_path / "stage")
    stage.write().save(path)
    _edit_metadata(Path(path), lambda metadata: metadata["paramMap"].update({name: -value}))
    with pytest.raises(ValueError) as loaded:
        type(stage).load(path)
    damaged = stage.copy()
    damaged.set(damaged.getParam(name), -value)  # as a raw load writes it, unchecked
    with pytest.raises(ValueError) as set_directly:
        damaged.checkParams()
    assert str(loaded.value) == str(set_directly.value) and name in str(loaded.value)


@every_stage
def test_a_pipeline_fits_transforms_saves_and_loads_with_the_stage(case, tmp_path):
    stage, frame, _ = case
    fitted = Pipeline(stages=[stage]).fit(frame)
    first = fitted.transform(frame).orderBy("id").collect()
    assert len(first) == frame.count()
    fitted.write().save(str(tmp_path / "pipeline"))
    again = PipelineModel.load(str(tmp_path / "pipeline")).transform(frame).orderBy("id")
    assert again.columns == fitted.transform(frame).columns
    assert _close(again.collect(), first)


def _rewrite_class(path: Path, class_name: str) -> None:
    _edit_metadata(path, lambda metadata: metadata.update({"class": class_name}))


def _edit_metadata(path: Path, edit) -> None:
    part = next(p for p in (path / "metadata").iterdir()
                if p.name.startswith("part-") and p.stat().st_size)
    metadata = json.loads(part.read_text())
    edit(metadata)
    part.write_text(json.dumps(metadata) + "\n")
    part.with_name(f".{part.name}.crc").unlink(missing_ok=True)  # Hadoop's checksum of the old


def _close(rows_a: list, rows_b: list) -> bool:
    """Row for row equal, float arrays within 1e-5 (a reloaded model recomputes them)."""
    def flat(value):
        if isinstance(value, (list, tuple)):
            return [flat(v) for v in value]
        if hasattr(value, "asDict"):
            return flat(list(value.asDict(recursive=True).values()))
        if isinstance(value, dict):
            return flat(list(value.values()))
        return value

    def same(a, b):
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
        if isinstance(a, float) or isinstance(b, float):
            return a is not None and b is not None and abs(a - b) <= 1e-5
        return a == b

    return same(flat(rows_a), flat(rows_b))
