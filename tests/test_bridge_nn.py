"""The Python half of the Scala k-NN stages: what ``synapseml_ext.bridge.load`` returns for
the ops nn_build / nn_block / nn_search, and the functions it returns run the PySpark stage's
own steps (the Scala suites under scala/src/test/scala/.../nn run the whole flow)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest

from synapseml_ext.bridge import load
from synapseml_ext.bridge.names import STAGES
from synapseml_ext.bridge.nn import struct_from_ddl
from synapseml_ext.codegen import default_root, generate
from synapseml_ext.nn import ApproximateNearestNeighbors, tables

SCALA_ESTIMATOR = "io.github.synapsemlext.nn.ApproximateNearestNeighbors"
SCALA_MODEL = "io.github.synapsemlext.nn.ApproximateNearestNeighborsModel"


def _spec(cls: str, op: str, facts: dict, param_map: dict) -> str:
    """What the Scala stage sends: its metadata plus the bridge object."""
    return json.dumps({"class": cls, "uid": "ApproximateNearestNeighbors_0123", "paramMap": param_map,
                       "defaultParamMap": {"k": 5, "algorithm": "ivfflat", "metric": "euclidean",
                                           "backend": "auto", "numPartitions": 0,
                                           "numQueryBlocks": 0},
                       "sparkVersion": "3.5.9", "timestamp": 0,
                       "bridge": {"protocol": 1, "op": op, "jarVersion": "0.1.0",
                                  "facts": facts}})


@pytest.mark.parametrize("ddl", [tables.index_schema("long"), tables.index_schema("string"),
                                 tables.block_schema("long"), tables.found_schema("string", "long"),
                                 tables.found_schema("long", "string")])
def test_bridge_schemas_are_the_tasks_ddl(spark, ddl):
    # pyspark parses DDL in the JVM, which a Python worker does not have: the bridge's own
    # parser must agree with it
    assert struct_from_ddl(ddl) == spark.createDataFrame([], ddl).schema


def test_build_block_search_from_a_scala_spec_find_the_neighbours():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    params = {"k": 3, "algorithm": "exact", "inputCol": "v", "idCol": "id"}
    build, build_type = load(_spec(SCALA_ESTIMATOR, "nn_build", {"id_kind": "long", "partitions": 1}, params))
    assert build_type == struct_from_ddl(tables.index_schema("long"))
    batch = pa.RecordBatch.from_arrays(
        [pa.array(np.arange(50, dtype=np.int64)), pa.array(items.tolist(), pa.list_(pa.float32()))],
        [tables.ID, tables.VEC])
    (index_row,) = list(build(iter([batch])))
    assert json.loads(index_row.column(tables.INFO)[0].as_py())["kind"] == "flat"  # faiss IndexFlat

    facts = {"query_kind": "long", "item_kind": "long", "dim": 8}
    block, _ = load(_spec(SCALA_MODEL, "nn_block", facts, params))
    queries = pa.RecordBatch.from_arrays(
        [pa.array([100, 101], pa.int64()), pa.array(items[[7, 30]].tolist(), pa.list_(pa.float32()))],
        [tables.ID, tables.VEC])
    (block_row,) = list(block(iter([queries])))
    search, search_type = load(_spec(SCALA_MODEL, "nn_search", facts, params))
    assert search_type == struct_from_ddl(tables.found_schema("long", "long"))
    pair = pa.RecordBatch.from_arrays([*block_row.columns, *index_row.columns],
                                      [*block_row.schema.names, *index_row.schema.names])
    (found,) = list(search(iter([pair])))
    assert found.column(tables.FOUND_QID).to_pylist() == [100, 101]
    assert [ids[0] for ids in found.column(tables.INDICES).to_pylist()] == [7, 30]
    assert found.column(tables.DISTANCES).to_pylist()[0][0] == pytest.approx(0.0, abs=1e-5)


def test_bad_params_in_a_spec_fail_with_the_python_message():
    spec = _spec(SCALA_ESTIMATOR, "nn_build", {"id_kind": "long"},
                 {"algoParams": {"ef_search": 5}, "inputCol": "v"})
    with pytest.raises(ValueError, match="algoParams key 'ef_search' is not used by algorithm"):
        load(spec)[0](iter([]))
    with pytest.raises(ValueError, match="unknown k-NN bridge op"):
        from synapseml_ext.bridge.nn import function

        function(ApproximateNearestNeighbors(), "nn_nothing", {})


def test_the_command_the_jvm_writes_unpickles_to_the_build_function():
    spec = _spec(SCALA_ESTIMATOR, "nn_build", {"id_kind": "string"}, {"inputCol": "v"}).encode()
    command = (b"\x80\x02csynapseml_ext.bridge\nload\nX" + len(spec).to_bytes(4, "little") + spec
               + b"\x85R.")
    function, return_type = pickle.loads(command)
    assert function.__qualname__.endswith("build")
    assert return_type == struct_from_ddl(tables.index_schema("string"))


def test_hand_written_stages_are_not_generated():
    hand_written = {s.scala_class for s in STAGES if not s.generated}
    assert hand_written == {SCALA_ESTIMATOR, SCALA_MODEL}
    generated = {str(p) for p in generate(default_root())}
    assert not any("/nn/" in p for p in generated)
