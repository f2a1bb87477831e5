"""A saved k-NN model proves its integrity: a missing or altered index partition, or missing
items, is an error at load naming the path, never a smaller or different answer; in the
application that saved it (whose executors hold local copies of the good bytes) and in a new
one. Local copies are the store's own (0700/0600, never a shared directory) and checked."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synapseml_ext.nn import (
    ApproximateNearestNeighbors,
    ApproximateNearestNeighborsModel,
    local_store,
    packing,
    tables,
)
from synapseml_ext.nn.integrity import file_digest, partition_digest

from conftest import REPO
from nn_data import brute_force, knn_arrays, vector_df

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def saved(spark, tmp_path_factory):
    """A fitted model in 2 index partitions saved once; each test damages its own copy."""
    rng = np.random.default_rng(11)
    items = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    model = ApproximateNearestNeighbors(k=5, algorithm="ivfflat", inputCol="v", idCol="id",
                                        backend="cpu", numPartitions=2,
                                        algoParams={"nlist": 8, "nprobe": 8}).fit(
        vector_df(spark, items))
    path = tmp_path_factory.mktemp("integrity") / "model"
    model.save(str(path))
    truth, _ = brute_force(items, queries, 5, "euclidean")
    return model, path, queries, truth


def _copy(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(path, target)
    return target


def _index_files(path: Path) -> list[Path]:
    return sorted((path / "data" / "indexes").glob("part-*.parquet"))


def _flip_bytes(file: Path, count: int = 570) -> None:
    """Flip ``count`` bytes in the middle of ``file`` and drop its ``.crc`` sidecar, as on
    object stores, where none exists."""
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))
    (file.parent / f".{file.name}.crc").unlink(missing_ok=True)


def test_the_summary_records_a_digest_per_partition(saved):
    model, path, queries, truth = saved
    summary = model.buildSummary
    assert summary["parts"] == [0, 1] and sorted(summary["digests"]) == ["0", "1"]
    assert all(len(d) == 64 for d in summary["digests"].values())
    loaded = ApproximateNearestNeighborsModel.load(str(path))
    assert loaded.buildSummary["digests"] == summary["digests"]
    # A token per load: the build's local copies (same bytes) are not taken for the loaded model.
    assert loaded.buildSummary["token"] != summary["token"]
    assert knn_arrays(loaded.kneighbors(vector_df(loaded._item_df.sparkSession, queries))[2]
                      )[1] == truth.tolist()


def test_a_deleted_index_file_fails_the_load(saved, tmp_path):
    _, path, _, _ = saved
    broken = _copy(path, tmp_path)
    doomed = _index_files(broken)[1]
    doomed.unlink()
    (doomed.parent / f".{doomed.name}.crc").unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"lacks index partition\(s\) 1 of the 2 recorded") as e:
        ApproximateNearestNeighborsModel.load(str(broken))
    assert str(broken) in str(e.value) and "\n" not in str(e.value)


def test_flipped_bytes_in_an_index_file_fail_the_load(saved, tmp_path):
    _, path, _, _ = saved
    broken = _copy(path, tmp_path)
    _flip_bytes(_index_files(broken)[0])
    with pytest.raises(ValueError, match="damaged") as e:
        ApproximateNearestNeighborsModel.load(str(broken))
    assert str(broken) in str(e.value) and "\n" not in str(e.value)
    assert "Job aborted" not in str(e.value)  # the root cause, not Spark's wrapper


def test_an_altered_partition_with_consistent_parquet_fails_its_digest(saved, tmp_path):
    """Bytes changed and the parquet rewritten (so no page checksum can catch it): only the
    digest recorded at fit in the metadata can tell."""
    _, path, _, _ = saved
    broken = _copy(path, tmp_path)
    files = _index_files(broken)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    rows = table.to_pylist()
    first = next(r for r in rows if r["__part"] == 0 and r["__chunk"] == 0)
    blob = bytearray(first["__index"])
    blob[len(blob) // 2] ^= 0x01
    first["__index"] = bytes(blob)
    for f in files:
        f.unlink()
        (f.parent / f".{f.name}.crc").unlink(missing_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema),
                   broken / "data" / "indexes" / "part-00000.parquet")
    with pytest.raises(ValueError, match=r"index partition 0 of the saved model at .* does not "
                                         "match the checksum recorded at fit"):
        ApproximateNearestNeighborsModel.load(str(broken))


def test_a_model_saved_before_packing_loads_and_answers_the_same(saved, tmp_path):
    """The index table is saved packed; a model saved before that holds raw faiss bytes
    and no codec in the info: it loads, and searches as the fitted model does."""
    _, path, queries, truth = saved
    old = _copy(path, tmp_path)
    files = _index_files(old)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    rows = sorted(table.to_pylist(), key=lambda r: (r["__part"], r["__chunk"]))
    unpacked = []
    for part in sorted({r["__part"] for r in rows}):
        pieces = [r for r in rows if r["__part"] == part]
        info = json.loads(pieces[0]["__info"])
        assert info.pop(packing.CODEC) == packing.SHUFFLED_ZSTD
        raw = packing.unpack(pa.py_buffer(b"".join(r["__index"] for r in pieces)),
                             info.pop(packing.RAW_BYTES))
        assert raw.size > sum(len(r["__index"]) for r in pieces)  # it was packed smaller
        unpacked.append({**pieces[0], "__index": raw.to_pybytes(),
                         "__info": json.dumps({**info, "pieces": 1})})
    for f in files:
        f.unlink()
        (f.parent / f".{f.name}.crc").unlink(missing_ok=True)
    pq.write_table(pa.Table.from_pylist(unpacked, schema=table.schema),
                   old / "data" / "indexes" / "part-00000.parquet")
    loaded = ApproximateNearestNeighborsModel.load(str(old))
    assert knn_arrays(loaded.kneighbors(vector_df(loaded._item_df.sparkSession, queries))[2]
                      )[1] == truth.tolist()


def test_packing_keeps_every_byte_and_refuses_damaged_bytes(monkeypatch):
    rng = np.random.default_rng(3)
    many = rng.standard_normal((20000, 16)).astype(np.float32) * 0.1
    assert len(packing.pack(many)) < 0.9 * many.nbytes  # the exponent bytes compress
    monkeypatch.setattr(packing, "FRAME_BYTES", 1 << 10)  # several frames, and a short tail
    vectors = many[:100]
    for raw in (vectors.tobytes() + b"tail!", b"x", vectors.tobytes()):
        packed = packing.pack(raw)
        assert packing.unpack(pa.py_buffer(packed), len(raw)).to_pybytes() == raw
    packed = packing.pack(vectors.tobytes())
    for damaged in (packed[:-7], packed + b"\0", packed[:8] + b"\xff" * 8 + packed[16:]):
        with pytest.raises(packing.DamagedPackError):
            packing.unpack(pa.py_buffer(bytes(damaged)), vectors.nbytes)


def test_a_model_saved_in_a_newer_format_is_one_line_naming_the_upgrade(saved, tmp_path):
    """A version that cannot read a save's format says so, rather than calling bytes it
    cannot unpack damaged."""
    _, path, _, _ = saved
    newer = _copy(path, tmp_path)
    metadata_file = next((newer / "metadata").glob("part-*"))
    metadata = json.loads(metadata_file.read_text())
    assert metadata["synapsemlExtFormat"] == 2
    metadata_file.write_text(json.dumps({**metadata, "synapsemlExtFormat": 3,
                                         "synapsemlExtVersion": "9.9.9"}))
    (metadata_file.parent / f".{metadata_file.name}.crc").unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"saved by synapseml-ext 9\.9\.9 in save format 3, "
                                         r"which this version .* cannot read: upgrade") as e:
        ApproximateNearestNeighborsModel.load(str(newer))
    assert "\n" not in str(e.value)
    metadata_file.write_text(json.dumps({**metadata, "synapsemlExtFormat": "2"}))
    with pytest.raises(ValueError, match=r"records save format '2'\): it is damaged"):
        ApproximateNearestNeighborsModel.load(str(newer))


def test_a_deleted_items_file_fails_the_load(saved, tmp_path):
    _, path, _, _ = saved
    broken = _copy(path, tmp_path)
    files = sorted((broken / "data" / "items").glob("part-*.parquet"))
    assert len(files) > 1
    files[-1].unlink()
    with pytest.raises(ValueError, match="items where 2000 were saved"):
        ApproximateNearestNeighborsModel.load(str(broken))


def test_a_missing_model_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"cannot be read .*restore it") as e:
        ApproximateNearestNeighborsModel.load(str(tmp_path / "nowhere"))
    assert "\n" not in str(e.value)


NEW_APPLICATION = """
import sys
from pyspark.sql import SparkSession
from synapseml_ext.nn import ApproximateNearestNeighborsModel
spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
for path in sys.argv[1:]:
    try:
        ApproximateNearestNeighborsModel.load(path)
        print("LOADED", path)
    except ValueError as e:
        print("REFUSED", path, str(e).replace(chr(10), " "))
spark.stop()
"""


def test_damaged_models_fail_in_a_new_application(saved, tmp_path):
    _, path, _, _ = saved
    deleted = _copy(path, tmp_path / "deleted")
    _index_files(deleted)[1].unlink()
    flipped = _copy(path, tmp_path / "flipped")
    _flip_bytes(_index_files(flipped)[1])
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    done = subprocess.run([sys.executable, "-c", NEW_APPLICATION, str(path), str(deleted),
                           str(flipped)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split()[1]: line for line in done.stdout.splitlines()
             if line.startswith(("LOADED", "REFUSED"))}
    assert lines[str(path)].startswith("LOADED")
    assert lines[str(deleted)].startswith("REFUSED") and "lacks index partition" in lines[
        str(deleted)]
    assert lines[str(flipped)].startswith("REFUSED")


# -- the local store ------------------------------------------------------------------------


def _row(part: int, blob: bytes, ids: list[int]) -> pa.RecordBatch:
    id_array = pa.array([ids], pa.list_(pa.int64()))
    info = {"n": len(ids), "sha256": partition_digest(blob, id_array[0].values)}
    return pa.RecordBatch.from_arrays(
        [pa.array([part], pa.int32()), id_array, pa.array([blob], pa.binary()),
         pa.array([json.dumps(info)])], ["__part", "__ids", "__index", "__info"])


@pytest.fixture
def store_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    monkeypatch.setattr(local_store, "_checked", {})
    return tmp_path / "synapseml-ext-nn"


def test_copies_are_private(store_root):
    assert local_store.write(TOKEN, 0, _row(0, b"x" * 100, [1, 2]), local_store.AUTO)
    assert stat.S_IMODE(store_root.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in store_root.iterdir()} == {0o600}


def test_a_store_directory_others_can_write_is_not_used(store_root):
    store_root.mkdir(mode=0o777)
    os.chmod(store_root, 0o777)  # as another local user who created it first would leave it
    assert not local_store.write(TOKEN, 0, _row(0, b"x" * 100, [1, 2]), local_store.AUTO)
    assert list(store_root.iterdir()) == []
    os.chown(store_root, 65534, 65534)
    os.chmod(store_root, 0o700)
    assert not local_store.write(TOKEN, 0, _row(0, b"x" * 100, [1, 2]), local_store.AUTO)


def test_without_spark_the_store_is_per_user(monkeypatch):
    monkeypatch.delenv("SPARK_LOCAL_DIRS", raising=False)
    assert local_store.root().name == f"synapseml-ext-nn-{os.geteuid()}"


def test_an_altered_copy_is_dropped_and_an_intact_one_read(store_root):
    blob = bytes(range(256)) * 4
    assert local_store.write(TOKEN, 0, _row(0, blob, [7, 8, 9]), local_store.AUTO)
    local_store._checked.clear()  # as another worker process, which has not hashed it yet
    batch, index = local_store.read(TOKEN, 0)
    assert index.read_bytes() == blob
    assert file_digest(index, batch.column("__ids")[0].values) == partition_digest(
        blob, batch.column("__ids")[0].values)
    altered = bytearray(blob)
    altered[10] ^= 0x01
    index.write_bytes(bytes(altered))  # same size, other bytes, a new file: hashed again
    assert local_store.read(TOKEN, 0) is None
    assert not (store_root / f"{TOKEN}-0.arrow").exists()


def _packed(raw: bytes, ids: list[int], digest_of: bytes | None = None) -> pa.RecordBatch:
    """The index row of ``raw`` packed, its digest that of ``digest_of`` (default ``raw``)."""
    row = _row(0, raw, ids)
    if digest_of is not None:
        row = packing._with(row, row.column("__index"), {
            **json.loads(row.column("__info")[0].as_py()),
            "sha256": partition_digest(digest_of, row.column("__ids")[0].values)})
    return packing.packed_row(row)


@pytest.mark.parametrize("store_on", [True, False])
def test_packed_bytes_are_unpacked_into_the_copy_and_checked_first(store_root, monkeypatch,
                                                                   store_on):
    """``load()`` and a search miss unpack frame by frame into the local copy; the digest
    is checked before a copy is kept, and checked too where the store keeps none."""
    from synapseml_ext.nn.integrity import check_partition
    from synapseml_ext.nn.task_config import LocalStore
    from synapseml_ext.nn.unpacked import keep_unpacked

    monkeypatch.setattr(packing, "FRAME_BYTES", 1 << 10)  # several frames and a short tail
    raw = np.random.default_rng(5).standard_normal(1000).astype(np.float32).tobytes() + b"end"
    store = LocalStore(TOKEN if store_on else None)

    def check(row):
        recorded = json.loads(row.column("__info")[0].as_py())["sha256"]
        return lambda actual: check_partition(0, actual, recorded, "the test model")

    good = _packed(raw, [1, 2, 3])
    assert keep_unpacked(store, 0, good, check(good)) is store_on
    if store_on:
        batch, index = local_store.read(TOKEN, 0)
        assert index.read_bytes() == raw
        assert packing.CODEC not in json.loads(batch.column("__info")[0].as_py())
        shutil.rmtree(store_root)
    altered = _packed(raw, [1, 2, 3], digest_of=raw[:-1] + b"!")
    with pytest.raises(ValueError, match="does not match the checksum recorded at fit"):
        keep_unpacked(store, 0, altered, check(altered))
    cut = packing._with(good, tables.binary_array(pa.py_buffer(
        good.column("__index")[0].as_py()[:-5])), json.loads(good.column("__info")[0].as_py()))
    with pytest.raises(packing.DamagedPackError):
        keep_unpacked(store, 0, cut, check(cut))
    assert not store_root.exists() or [f.name for f in store_root.iterdir()] == []


@pytest.mark.parametrize("store_on", [True, False])
def test_a_search_task_given_packed_bytes_maps_its_new_copy_or_unpacks_in_memory(
        store_root, store_on):
    """A search miss: the partition's packed bytes become the local copy, which the task
    maps; without a store they are unpacked in memory. Both answer as the built index."""
    from synapseml_ext.nn import build_task, search_tasks
    from synapseml_ext.nn.task_config import BuildTask, LocalStore, SearchTask

    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    items = pa.RecordBatch.from_arrays(
        [pa.array(np.arange(300, dtype=np.int64)),
         pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8)], ["__id", "__vec"])
    packed = next(build_task.make_build_fn(BuildTask("long", "v", "exact", "l2", {}, 5, 1))(
        iter([items])))
    store = LocalStore(TOKEN if store_on else None)
    loaded = search_tasks._LoadedIndex(SearchTask("long", "long", "l2", 5, 8, store=store))
    loaded.load(0, packed, 0)
    assert (local_store.read(TOKEN, 0) is not None) is store_on
    _, labels = loaded.index.search(vectors[:20], 5)
    truth, _ = brute_force(vectors, vectors[:20], 5, "euclidean")
    assert loaded.ids[labels].tolist() == truth.tolist()


def test_binary_values_are_views_of_the_right_bytes():
    values = [b"first", b"", b"third value"]
    for kind in (pa.binary(), pa.large_binary()):
        array = pa.array(values, kind)
        for offset in (0, 1):
            sliced = array.slice(offset)
            for row in range(len(sliced)):
                view = tables.binary_value(sliced, row)
                assert view.to_pybytes() == values[offset + row]
                if view.size:
                    assert array.buffers()[2].address <= view.address
