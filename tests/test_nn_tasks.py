"""The executor functions of the k-NN search, called on Arrow batches as mapInArrow calls them
(no Spark): query blocks are cut to size, and a search task that gets its index bytes on its
first row only searches every block against that index."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from synapseml_ext.nn import engine, index_build, search_tasks, tables
from synapseml_ext.nn.task_config import BlockTask, SearchTask

from nn_data import brute_force, clustered_latent


def query_batch(ids: list[int], vectors: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(vectors.tolist(), pa.list_(pa.float32()))],
        [tables.ID, tables.VEC])


def test_blocks_are_cut_to_block_bytes_and_keep_every_query_in_order():
    vectors = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    block = search_tasks.make_block_fn(BlockTask("long", "v", 4,
                                                 block_bytes=3 * 4 * 4))  # 3 queries a block
    rows = list(block(iter([query_batch(list(range(100, 110)), vectors)])))
    assert [len(r.column(tables.QIDS)[0].values) for r in rows] == [3, 3, 3, 1]
    ids = [i for r in rows for i in r.column(tables.QIDS)[0].values.to_pylist()]
    assert ids == list(range(100, 110))
    got = np.vstack([np.frombuffer(r.column(tables.QVECS)[0].as_buffer(), np.float32).reshape(-1, 4)
                     for r in rows])
    np.testing.assert_array_equal(got, vectors)


def pair_rows(built: engine.PartitionIndex, item_ids: np.ndarray, blocks: list[np.ndarray],
              first_qid: int) -> pa.RecordBatch:
    """(index partition 3, block) rows as the plan builds them: index bytes and ids on the
    first row only."""
    blob = engine.serialize(built).tobytes()
    ids_in_label_order = item_ids if built.order is None else item_ids[built.order]
    n = len(blocks)
    qids, qvecs, next_id = [], [], first_qid
    for b in blocks:
        qids.append(list(range(next_id, next_id + len(b))))
        qvecs.append(b.tobytes())
        next_id += len(b)
    return pa.RecordBatch.from_arrays(
        [pa.array([3] * n, pa.int32()),
         pa.array([ids_in_label_order.tolist()] + [None] * (n - 1), pa.list_(pa.int64())),
         pa.array([blob] + [None] * (n - 1), pa.binary()),
         pa.array([json.dumps(built.info.to_dict())] * n, pa.string()),
         pa.array(qids, pa.list_(pa.int64())),
         pa.array(qvecs, pa.binary())],
        [tables.PART, tables.IDS, tables.INDEX, tables.INFO, tables.QIDS, tables.QVECS])


@pytest.mark.parametrize("search_bytes", [1, 64 << 20])
def test_search_task_uses_the_first_rows_index_for_every_block(search_bytes):
    x = clustered_latent(3_000, dim=16, clusters=40)
    items, queries = x[:2_500], x[2_500:]
    built = index_build.build_index(items, "exact", "euclidean", {}, k=5)
    item_ids = np.arange(1000, 1000 + len(items), dtype=np.int64)
    blocks = [queries[:200], queries[200:201], queries[201:]]
    search = search_tasks.make_search_fn(SearchTask("long", "long", "euclidean", k=5, dim=16,
                                                    search_bytes=search_bytes))
    out = pa.Table.from_batches(list(search(iter([pair_rows(built, item_ids, blocks, 0)]))))
    assert out.column(tables.FOUND_QID).to_pylist() == list(range(len(queries)))
    truth, truth_d = brute_force(items, queries, 5, "euclidean")
    found = np.array(out.column(tables.INDICES).to_pylist())
    np.testing.assert_array_equal(found, item_ids[truth])
    np.testing.assert_allclose(np.array(out.column(tables.DISTANCES).to_pylist()), truth_d,
                               rtol=1e-4, atol=1e-5)


def test_search_task_refuses_a_partition_whose_bytes_never_came():
    x = clustered_latent(300, dim=8, clusters=5)
    built = index_build.build_index(x, "exact", "euclidean", {}, k=2)
    batch = pair_rows(built, np.arange(300, dtype=np.int64), [x[:2]], 0)
    no_bytes = batch.set_column(2, tables.INDEX, pa.array([None], pa.binary()))
    search = search_tasks.make_search_fn(SearchTask("long", "long", "euclidean", k=2, dim=8))
    with pytest.raises(RuntimeError, match="index partition 3 reached its search task without"):
        list(search(iter([no_bytes])))


def test_task_configs_are_frozen_and_reach_an_executor_intact():
    import dataclasses

    from pyspark import cloudpickle

    from synapseml_ext.nn.task_config import BuildTask, LocalStore

    cfg = BuildTask("long", "v", "ivfflat", "cosine", {"nlist": 4}, k=5, partitions=2,
                    store=LocalStore("t0", 1 << 20), label_kind="string", label_col="lab")
    assert cloudpickle.loads(cloudpickle.dumps(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 6  # type: ignore[misc]


@pytest.mark.parametrize("filtered", [False, True])
@pytest.mark.parametrize("metric", ["euclidean", "inner_product"])
def test_ties_at_the_kth_place_are_broken_by_item_id_as_the_merge_does(metric, filtered):
    rng = np.random.default_rng(9)
    items = rng.standard_normal((300, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    copies = [0, 3, 40, 77, 150, 299]  # six identical items, ids falling as labels rise
    items[copies] = items[0]
    item_ids = np.arange(5000, 5000 - len(items), -1, dtype=np.int64)
    built = index_build.build_index(items, "exact", metric, {}, k=2)
    rows = pair_rows(built, item_ids, [items[[0]]], 0)
    if filtered:  # copy 40 carries label 1, which the query does not allow (it allows 0, 2)
        item_labels = np.arange(300) % 3
        ordered = item_labels if built.order is None else item_labels[built.order]
        rows = rows.append_column(tables.LABELS, pa.array([ordered.tolist()],
                                                          pa.list_(pa.int64())))
        rows = rows.append_column(tables.QCONDS, pa.array([[[0, 2]]],
                                                          pa.list_(pa.list_(pa.int64()))))
        copies = [c for c in copies if item_labels[c] != 1]
    search = search_tasks.make_search_fn(SearchTask("long", "long", metric, k=2, dim=8,
                                                    label_kind="long" if filtered else None))
    out = pa.Table.from_batches(list(search(iter([rows]))))
    tied = sorted(item_ids[copies].tolist())
    # The merge sorts (distance, id) ascending, and descending for inner_product.
    expected = tied[:2] if metric == "euclidean" else tied[::-1][:2]
    assert out.column(tables.INDICES).to_pylist()[0] == expected
