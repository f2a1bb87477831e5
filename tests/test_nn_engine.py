"""The Spark-free per-partition engine: every index kind reaches its recall target, survives
serialisation unchanged, and small partitions are searched exactly."""

from __future__ import annotations

import numpy as np
import pytest

from synapseml_ext.nn import engine, index_build, index_tuning

from nn_data import brute_force, clustered_latent, recall


@pytest.fixture(scope="module")
def data():
    x = clustered_latent(12_300, dim=32, clusters=150)
    return x[:-300], x[-300:]


@pytest.mark.parametrize("algorithm", ["ivfflat", "ivfpq", "hnsw"])
def test_each_index_kind_reaches_its_target_and_round_trips(data, algorithm):
    items, queries = data
    built = index_build.build_index(items, algorithm, "euclidean", {}, k=10)
    assert built.info.kind == algorithm and built.info.n == len(items)
    assert built.info.calibration_recall >= 0.95
    prepared = engine.prepare_vectors(queries, "euclidean")
    distances, labels = built.search(prepared, 10)
    truth, _ = brute_force(items, queries, 10, "euclidean")
    found = built.order[labels]
    assert recall(found.tolist(), truth) >= 0.90
    # distances are the true L2 distances of the returned items (ivfpq is re-ranked)
    exact = np.linalg.norm(items[found] - queries[:, None, :], axis=2)
    np.testing.assert_allclose(distances, exact, rtol=1e-3, atol=1e-4)
    again = engine.deserialize(engine.serialize(built), built.info)
    assert (again.search(prepared, 10)[1] == labels).all()


@pytest.mark.parametrize("algorithm", ["exact", "ivfflat", "hnsw"])
def test_a_local_copy_read_from_its_file_answers_as_the_built_index(data, algorithm, tmp_path):
    items, queries = data
    built = index_build.build_index(items, algorithm, "euclidean", {}, k=10)
    path = tmp_path / "part.faiss"
    path.write_bytes(engine.serialize(built).tobytes())
    prepared = engine.prepare_vectors(queries, "euclidean")
    mapped = engine.read_mapped(str(path), built.info)
    for got, want in zip(mapped.search(prepared, 10), built.search(prepared, 10), strict=True):
        np.testing.assert_array_equal(got, want)


def test_read_ahead_leaves_empty_and_missing_files_to_faiss(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    engine._read_ahead(str(tmp_path / "empty"))
    engine._read_ahead(str(tmp_path / "missing"))
    with pytest.raises(RuntimeError):
        engine.read_mapped(str(tmp_path / "empty"), engine.BuildInfo("flat", 0, 32, "l2"))


def test_small_partitions_are_exact_and_padded():
    rng = np.random.default_rng(0)
    items = rng.standard_normal((30, 8)).astype(np.float32)
    built = index_build.build_index(items, "ivfflat", "inner_product", {}, k=40)
    assert built.info.kind == "flat" and "searched exactly" in built.info.reason
    distances, labels = built.search(engine.prepare_vectors(items[:2], "inner_product"), 40)
    assert (labels[:, 30:] == -1).all() and np.isneginf(distances[:, 30:]).all()
    truth, _ = brute_force(items, items[:2], 30, "inner_product")
    assert labels[:, :30].tolist() == truth.tolist()


def test_default_nlist_grows_with_sqrt_n():
    assert index_build.default_nlist(10_000) == 100
    assert index_build.default_nlist(1_000_000) == 1000
    assert index_build.default_nlist(100) == 2  # 10, capped: at least 39 training points per list


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "inner_product"])
def test_list_major_scan_finds_what_faiss_finds(data, metric):
    """A large query block goes list by list (ivf_scan); a block of one query goes through
    faiss' own scan: with the same nprobe both return the same neighbours and distances."""
    from synapseml_ext.nn import ivf_scan

    items, queries = data
    built = index_build.build_index(items, "ivfflat", metric, {"nprobe": 6}, k=10)
    ivf = built.index
    prepared = engine.prepare_vectors(np.vstack([queries, items[:2700]]), metric)
    assert ivf_scan.worth_it(len(prepared), 6, ivf.nlist)
    assert not ivf_scan.worth_it(1, 6, ivf.nlist)
    distances, labels = built.search(prepared, 10, {"nprobe": 6})
    one_by_one = [built.search(prepared[i: i + 1], 10, {"nprobe": 6}) for i in range(len(prepared))]
    faiss_d = np.vstack([d for d, _ in one_by_one])
    faiss_l = np.vstack([lab for _, lab in one_by_one])
    assert np.mean(labels == faiss_l) > 0.99  # ties may swap places
    np.testing.assert_allclose(distances, faiss_d, rtol=1e-4, atol=1e-5)
    if metric == "euclidean":  # a stored item finds itself at distance 0, not rounding noise
        d0, l0 = built.search(engine.prepare_vectors(items[:500], metric), 1, {"nprobe": 6})
        assert (built.order[l0[:, 0]] == np.arange(500)).mean() > 0.99
        assert float(np.median(d0)) == 0.0


def test_list_major_scan_gives_the_same_answer_on_several_threads(data):
    """faiss updates the per-query heaps in parallel when it has threads (spark.task.cpus >
    1); a list's rows are distinct queries, so the answer must not change."""
    import faiss

    from synapseml_ext.nn import ivf_scan

    items, queries = data
    # few, long lists: each heap update covers > 100k scores, where faiss goes parallel
    built = index_build.build_index(items, "ivfflat", "euclidean", {"nlist": 16, "nprobe": 4}, k=10)
    prepared = engine.prepare_vectors(np.vstack([queries, items[:4000]]), "euclidean")
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = ivf_scan.list_major_search(built.index, prepared, 10, 4, True)
        faiss.omp_set_num_threads(4)
        four = ivf_scan.list_major_search(built.index, prepared, 10, 4, True)
    finally:
        faiss.omp_set_num_threads(before)
    order_one, order_four = np.argsort(one[0], axis=1), np.argsort(four[0], axis=1)
    assert (np.take_along_axis(one[0], order_one, 1)
            == np.take_along_axis(four[0], order_four, 1)).all()
    np.testing.assert_array_equal(np.take_along_axis(one[1], order_one, 1),
                                  np.take_along_axis(four[1], order_four, 1))


def test_list_major_scan_pads_when_the_probed_lists_hold_fewer_than_k():
    from synapseml_ext.nn import ivf_scan

    items = clustered_latent(12_300, dim=32, clusters=150)[:-300]
    built = index_build.build_index(items, "ivfflat", "euclidean", {"nlist": 300}, k=5)
    prepared = engine.prepare_vectors(items[:2000], "euclidean")
    sizes = [built.index.invlists.list_size(i) for i in range(built.index.nlist)]
    k = max(sizes) + 5  # more than any one list holds: nprobe=1 must pad
    labels, scores = ivf_scan.list_major_search(built.index, prepared, k, 1, True)
    assert ((labels == -1).sum(axis=1) >= 5).all()
    assert (scores[labels == -1] == 0).all()
    # every found label comes with its own squared distance (label -> input row: built.order)
    rows, cols = np.nonzero(labels >= 0)
    stored = engine.prepare_vectors(items, "euclidean")[built.order[labels[rows, cols]]]
    np.testing.assert_allclose(scores[rows, cols], ((stored - prepared[rows]) ** 2).sum(axis=1),
                               rtol=1e-5, atol=1e-6)
    distances, found = built.search(prepared, k, {"nprobe": 1})
    assert (found == -1).sum() == (labels == -1).sum()
    assert (distances[found == -1] == engine.worst_distance("euclidean")).all()


@pytest.mark.parametrize(("metric", "params"), [("euclidean", {}), ("cosine", {}),
                                                ("inner_product", {"target_recall": 0.99}),
                                                ("euclidean", {"nprobe": 3})])
def test_ivfflat_breadth_from_list_ranks_equals_searching_each_breadth(data, metric, params):
    """The IVF-Flat tuning reads each nprobe's recall off the lists that hold the held-out
    queries' true neighbours; the search-per-breadth tuning of the other kinds, run on an
    index trained the same way, must choose the same nprobe with the same recall, and both
    indexes must hold the same lists."""
    items, _ = data
    x = engine.prepare_vectors(items, metric)
    base, probe = x[:-400], x[-400:]
    made = [index_build._new_index(base, "ivfflat", metric, {}, np.random.default_rng(3))
            for _ in range(2)]
    (searched, searched_info), (ranked, ranked_info) = made
    searched.add(base)
    index_tuning._tune(searched, searched_info, base, probe, 10, params.get("target_recall", 0.95),
                 params)
    index_tuning._add_and_tune_ivfflat(ranked, ranked_info, base, probe, 10,
                                 params.get("target_recall", 0.95), params)
    assert ranked_info.search == searched_info.search
    assert ranked_info.calibration_recall == searched_info.calibration_recall
    assert ranked.nprobe == searched.nprobe
    for index in (searched, ranked):
        index.nprobe = 4
    assert (ranked.search(probe, 10)[1] == searched.search(probe, 10)[1]).all()
