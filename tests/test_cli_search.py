"""synapseml-ext embed (--limit, --id-col, output formats, progress in rows) and search, run
as a user runs them: subprocesses of the CLI on real reviews with the bundled model. Each run
starts Spark, so each run checks several things."""

from __future__ import annotations

import glob
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import synapseml_ext
from test_cli import _one_line_error, _run

from conftest import seed_texts, shared_data_dir
from helpers import cosines

SAMPLE = Path(synapseml_ext.__file__).parent / "data" / "sample_reviews.csv"
CLOSING = re.compile(
    r"^embedded (\d+) rows \((\d+) null\) into \S+ in [\d.]+s \(start-up [\d.]+s, embedding "
    r"[\d.]+s: [\d.]+ rows/s, \d+ tokens/s\) \[runtime=onnx, precision=fp32\]$")
PROGRESS = re.compile(r"^embedding: (\d+)/(\d+) rows \(\d+%\), [\d.]+ rows/s, \d+ tokens/s$")


def _reviews_csv(tmp: Path) -> Path:
    """The 1000 fine-food reviews (Id, Text as the seed quickstart builds it); without the
    shared data, the sample reviews repeated to as many rows."""
    data = shared_data_dir()
    if data is not None:
        texts = seed_texts(pd.read_csv(data / "fine_food_reviews_1k.csv"))
    else:
        texts = [t for _ in range(21) for t in pd.read_csv(SAMPLE)["Text"]][:1000]
    # Ids that are not row numbers: the search must give these back.
    table = pd.DataFrame({"Id": range(5001, 5001 + len(texts)), "Text": texts})
    path = tmp / "reviews.csv"
    table.to_csv(path, index=False)
    return path


def _read_parts(directory: Path, fmt: str) -> pd.DataFrame:
    """A directory the CLI wrote, as pandas reads it: part files in name order."""
    parts = sorted(glob.glob(str(directory / "part-*")))
    assert parts, f"no part files in {directory}"
    if fmt == "csv":
        return pd.concat([pd.read_csv(p, keep_default_na=False) for p in parts], ignore_index=True)
    if fmt == "jsonl":
        return pd.concat([pd.read_json(p, lines=True) for p in parts], ignore_index=True)
    return pd.read_parquet(directory)


@pytest.fixture(scope="module")
def table(tmp_path_factory, cache_dir):
    """The first 300 reviews embedded into jsonl (from the name) with --id-col, progress shown
    as lines."""
    tmp = tmp_path_factory.mktemp("table")
    source = _reviews_csv(tmp)
    out = tmp / "reviews-table.jsonl"
    done = _run(["embed", "--input", str(source), "--text-col", "Text", "--id-col", "Id",
                 "--limit", "300", "--output", str(out), "--runtime", "onnx",
                 "--progress", "lines"], cache_dir, SYNAPSEML_EXT_PROGRESS_EVERY="0.2")
    return source, out, done


@pytest.mark.spark
def test_embed_first_rows_with_ids_and_progress_in_rows(table):
    source, out, done = table
    assert done.returncode == 0, done.stderr[-3000:]
    closing = done.stdout.strip().splitlines()[-1]
    assert CLOSING.match(closing), closing
    assert closing.startswith("embedded 300 rows (0 null)")
    # Model loading is one line, not one per worker; progress counts rows, to the last one.
    lines = done.stderr.splitlines()
    assert sum(line.startswith("loading model all-MiniLM-L6-v2") for line in lines) == 1
    assert sum(line.startswith("model loaded in ") for line in lines) == 1
    shown = [(int(m[1]), int(m[2])) for m in map(PROGRESS.match, lines) if m]
    assert shown and shown[-1] == (300, 300), done.stderr[-3000:]
    counts = [n for n, _ in shown]
    assert counts == sorted(counts)
    assert any(0 < n < 300 for n in counts), shown  # moved while the tasks ran
    assert "Loading weights" not in done.stderr
    # The first 300 rows, in input order, the id column carried through.
    expected = pd.read_csv(source).head(300)
    result = _read_parts(out, "jsonl")
    assert [int(i) for i in result["Id"]] == expected["Id"].tolist()  # from csv: strings
    assert result["Text"].tolist() == expected["Text"].tolist()
    assert np.array(result["embeddings"].tolist()).shape == (300, 384)
    marker = json.loads((out / "_SYNAPSEML_EXT_OUTPUT").read_text())
    assert marker["id_col"] == "Id" and marker["limit"] == 300 and marker["rows"] == 300
    assert (marker["runtime"], marker["precision"], marker["format"]) == ("onnx", "fp32",
                                                                          "jsonl")


@pytest.mark.spark
def test_search_finds_each_review_itself(table, tmp_path, cache_dir):
    source, out, _ = table
    texts = pd.read_csv(source).head(300)
    picks = [17, 42, 250]
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(texts["Text"][i] for i in picks[1:]) + "\n\n", encoding="utf-8")
    done = _run(["search", "--table", str(out), "--query", texts["Text"][picks[0]],
                 "--queries", str(queries), "--k", "3"], cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["query", "rank", "id", "distance", "text"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:-1]]
    assert len(rows) == 9 and all(len(r) == 5 for r in rows)
    firsts = [r for r in rows if r[1] == "1"]
    # The --query first, then the file's lines; each one's nearest row is itself.
    for pick, (_, _, ident, distance, _) in zip(picks, firsts, strict=True):
        assert texts["Text"][texts["Id"] == int(ident)].iloc[0] == texts["Text"][pick]
        assert float(distance) < 1e-3
    assert [r[1] for r in rows] == ["1", "2", "3"] * 3
    assert lines[-1].startswith("searched 300 items for 3 queries (k=3) in ")
    assert "runtime=onnx, precision=fp32" in lines[-1]  # as the table was embedded


@pytest.mark.spark
def test_formats_read_back_and_search_with_precomputed_queries(table, tmp_path, cache_dir):
    """The same first rows as csv read back as they are in the jsonl table; then the jsonl
    table's vectors as queries over the csv table, results written as parquet."""
    source, as_jsonl, _ = table
    as_csv = tmp_path / "emb.csv"
    done = _run(["embed", "--input", str(source), "--text-col", "Text", "--limit", "48",
                 "--runtime", "onnx", "--output", str(as_csv)], cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert CLOSING.match(done.stdout.strip().splitlines()[-1])
    assert "embedding:" not in done.stderr  # not a terminal: no progress unless asked
    assert json.loads((as_csv / "_SYNAPSEML_EXT_OUTPUT").read_text())["format"] == "csv"

    expected = pd.read_csv(source).head(48)
    csv_rows, jsonl_rows = _read_parts(as_csv, "csv"), _read_parts(as_jsonl, "jsonl").head(48)
    for rows in (csv_rows, jsonl_rows):
        assert [int(i) for i in rows["Id"]] == expected["Id"].tolist()
        assert rows["Text"].tolist() == expected["Text"].tolist()
    # csv has no arrays: the embedding is a JSON array string, every float32 digit kept.
    from_csv = np.array([json.loads(v) for v in csv_rows["embeddings"]], dtype=np.float32)
    from_jsonl = np.array(jsonl_rows["embeddings"].tolist(), dtype=np.float32)
    assert from_csv.shape == (48, 384)
    assert cosines(from_csv, from_jsonl).min() >= 0.99999

    # 300 precomputed queries over the 48-row csv table (no id column: row numbers, 0 first);
    # query i < 48 is row i's own vector.
    results = tmp_path / "results.parquet"
    done = _run(["search", "--table", str(as_csv), "--queries", str(as_jsonl), "--k", "2",
                 "--output", str(results)], cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith(
        f"searched 48 items for 300 queries (k=2) into {results} in ")
    assert done.stdout.strip().endswith("[queries given as embeddings]")
    found = _read_parts(results, "parquet")
    assert list(found.columns) == ["query_id", "query", "rank", "id", "distance", "text"]
    assert len(found) == 600 and found["query_id"].tolist() == sorted(found["query_id"])
    # Row numbers follow the table's order: row r holds the r-th input text.
    assert (expected["Text"][found["id"]].to_numpy() == found["text"].to_numpy()).all()
    first = found[(found["rank"] == 1) & (found["query_id"] < 48)]
    assert (first["query"] == first["text"]).all()  # itself (or a review with the same text)
    assert first["distance"].max() < 1e-3

    # k past the table's 48 items: all of them, and the closing line says why not k
    done = _run(["search", "--table", str(as_csv), "--query", "green tea", "--k", "60"],
                cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 + 48 + 1
    assert lines[-1].startswith("searched 48 items for 1 query (k=60: the table holds fewer "
                                "items, so each query gets 48) in ")


def _fake_table(root: Path) -> Path:
    """A directory with our marker (columns listed) and a parquet part: enough for the
    checks made before Spark starts."""
    table = root / "table"
    table.mkdir()
    pd.DataFrame({"Text": ["a"], "embeddings": [[0.0, 1.0]]}).to_parquet(
        table / "part-00000.parquet")
    marker = {"tool": "synapseml-ext", "text_col": "Text", "output_col": "embeddings",
              "model": "/nowhere", "format": "parquet", "columns": ["Text", "embeddings"],
              "files": ["part-00000.parquet"]}
    (table / "_SYNAPSEML_EXT_OUTPUT").write_text(json.dumps(marker))
    return table


SEARCH_ERRORS = {
    "missing table": (["--table", "{root}/nope", "--query", "x"],
                      "--table '{root}/nope' does not exist: check the path"),
    "table without marker": (["--table", "{root}/plain", "--query", "x"],
                             "has no _SYNAPSEML_EXT_OUTPUT marker", "pass --text-col"),
    "wrong id column": (["--table", "{root}/table", "--query", "x", "--id-col", "Id"],
                        "--id-col 'Id' not found in --table; available columns: Text, "
                        "embeddings"),
    "existing output": (["--table", "{root}/table", "--query", "x", "--output", "{root}/full"],
                        "already exists: pass --overwrite"),
    "existing output not ours": (["--table", "{root}/table", "--query", "x", "--output",
                                  "{root}/full", "--overwrite"],
                                 "is not a synapseml-ext output"),
    "no queries": (["--table", "{root}/table"], "no queries: pass --query TEXT"),
    "table of 0 rows": (["--table", "{root}/empty_table", "--query", "x"],
                        "--table '{root}/empty_table' holds 0 rows",
                        "embed an input with rows first"),
    "empty queries file": (["--table", "{root}/table", "--queries", "{root}/empty.txt"],
                           "holds no query (one per line)"),
    "output inside the table": (["--table", "{root}/table", "--query", "x", "--output",
                                 "{root}/table/out"], "contains or is inside the input"),
    "k below one": (["--table", "{root}/table", "--query", "x", "--k", "0"],
                    "argument --k: must be 1 or more"),
    "the table's model moved": (["--table", "{root}/table", "--query", "x"],
                                "model directory '/nowhere' does not exist",
                                "(from the --table marker: model='/nowhere'", "pass --model"),
}


def test_user_errors_are_one_line_before_spark(tmp_path, cache_dir):
    root = tmp_path
    table = _fake_table(root)
    empty = shutil.copytree(table, root / "empty_table")  # what embed writes for 0 rows
    marker = json.loads((empty / "_SYNAPSEML_EXT_OUTPUT").read_text())
    (empty / "_SYNAPSEML_EXT_OUTPUT").write_text(json.dumps({**marker, "rows": 0}))
    (root / "plain").mkdir()
    pd.DataFrame({"Text": ["a"]}).to_parquet(root / "plain" / "part-00000.parquet")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("keep")
    (root / "empty.txt").write_text("\n  \n")
    state = root / "state"
    for case, (args, *expected) in SEARCH_ERRORS.items():
        argv = ["search", *[a.format(root=root) for a in args]]
        done = _run(argv, cache_dir, XDG_STATE_HOME=str(state))
        try:
            _one_line_error(done, *[e.format(root=root) for e in expected])
        except AssertionError as e:
            raise AssertionError(f"{case}: {e}") from None
    # embed's new options: an --id-col the input lacks, --limit 0.
    for extra, expected in ((["--id-col", "nope"], "--id-col 'nope' not found in --input; "
                             "available columns: id, Score, Summary, Text"),
                            (["--limit", "0"], "argument --limit: must be 1 or more")):
        done = _run(["embed", "--input", str(SAMPLE), "--text-col", "Text", "--output",
                     str(root / "out"), *extra], cache_dir, XDG_STATE_HOME=str(state))
        _one_line_error(done, expected)
    assert not state.exists()  # Spark never started
    assert not (root / "out").exists()
    assert (root / "full" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in (root / "table").iterdir()) == [
        "_SYNAPSEML_EXT_OUTPUT", "part-00000.parquet"]


@pytest.mark.spark
def test_embeddings_column_of_the_wrong_kind_is_one_line(tmp_path, cache_dir, minilm_dir):
    """A table without our marker, following the hint to name the columns: a text column or
    a number column as --embeddings-col says so, instead of "the item DataFrame is empty"."""
    plain = tmp_path / "plain"
    plain.mkdir()
    pd.DataFrame({"Text": ["sweet tea", "salty nuts"], "Score": [5, 1],
                  "Counts": [[1, 2], [3, 4]]}).to_parquet(plain / "part-00000.parquet")
    common = ["search", "--table", str(plain), "--query", "tea", "--text-col", "Text",
              "--model", minilm_dir, "--runtime", "onnx"]
    done = _run([*common, "--embeddings-col", "Score"], cache_dir)
    _one_line_error(done, "--embeddings-col 'Score' is a bigint column of --table, not an "
                          "array of floats: name the column that holds the embeddings")
    done = _run([*common, "--embeddings-col", "Counts"], cache_dir)
    _one_line_error(done, "--embeddings-col 'Counts' is a array<bigint> column of --table")
    done = _run([*common, "--embeddings-col", "Text"], cache_dir)
    _one_line_error(done, "no row of --table has an embedding in --embeddings-col 'Text'")


# -- the progress channel, without Spark ------------------------------------------------------

class _Accumulator:
    """What a task's accumulator does, in this process."""

    def __init__(self) -> None:
        from synapseml_ext.cli_progress import ProgressStats

        self.value = ProgressStats.empty()

    def add(self, term: dict) -> None:
        from synapseml_ext.cli_progress import ProgressStats

        ProgressStats().addInPlace(self.value, term)


@pytest.mark.parametrize("pipelined", [False, True])
def test_tasks_report_rows_and_tokens_after_each_batch(monkeypatch, minilm_dir, cache_dir,
                                                        pipelined):
    """Both task paths (one call per Arrow batch on CPU runtimes; one call per task where the
    runtime overlaps batches, as cuda does) send the driver growing row counts over UDP and
    give the accumulator the task's totals."""
    import time

    from synapseml_ext import cli_progress
    from synapseml_ext.engine import EncoderSpec

    monkeypatch.setattr(cli_progress, "_pipelines_chunks", lambda encoder: pipelined)
    spec = EncoderSpec(model=minilm_dir, runtime="onnx", cache_dir=cache_dir).to_dict()
    texts = pd.read_csv(SAMPLE)["Text"].tolist()[:30]
    batches = [pd.Series(texts[i:i + 10]) for i in range(0, 30, 10)]
    batches[1][3] = None
    stats = _Accumulator()
    seen = []
    with cli_progress.RowProgress("off", 30, stats, "127.0.0.1", "test") as progress:
        for out in cli_progress.embed_reporting(spec, iter(batches), stats, progress.channel):
            assert len(out) == 10
            deadline = time.time() + 5
            while progress.counts()[0] < len(seen) * 10 + 10 and time.time() < deadline:
                time.sleep(0.05)
            seen.append(progress.counts()[0])
        assert progress.first_ready() is not None
    assert seen == [10, 20, 30]  # one count per batch, before the task ended
    value = stats.value
    assert (value["rows"], value["nulls"], value["runtime"]) == (30, 1, {"onnx"})
    assert value["tokens"] > 29 and progress.counts() == (30, value["tokens"])


def test_the_driver_keeps_the_latest_attempt_of_each_partition():
    from synapseml_ext.cli_progress import RowProgress

    stats = _Accumulator()
    progress = RowProgress("off", 100, stats, "127.0.0.1", "test")
    token = progress.channel.token

    def datagram(part: int, attempt: int, rows: int, key: str = token) -> None:
        progress._take(json.dumps({"k": key, "s": 3, "p": part, "a": attempt, "r": rows,
                                   "t": rows * 10}).encode())

    datagram(0, 0, 40)
    datagram(1, 0, 30)
    datagram(0, 0, 20)           # late: counts only grow within an attempt
    assert progress.counts() == (70, 700)
    datagram(1, 1, 5)            # a retried task starts again from zero
    datagram(1, 0, 35)           # the failed attempt's late datagram is ignored
    datagram(0, 0, 99, "forged")  # not the job's token
    assert progress.counts() == (45, 450)
    stats.value["rows"] = 80     # finished tasks' exact counts are the floor
    assert progress.counts()[0] == 80
    progress.sock.close()
