"""Meets the bad inputs and faults of docs/reliability.md as a user would, and writes the
table of what happened: the CLI as installed (`synapseml-ext`), the Python API in one local
Spark session, the ONNX cache and the init scripts. For each case: the exit code (CLI, init
scripts) or exception, how many lines the user reads, the line itself, and whether every file
the user had is still there, unchanged, with nothing left behind.

    .venv/bin/python tools/reliability_trial.py --write docs/reliability.md

rewrites the block between the `trial:begin` / `trial:end` markers of that file (without
--write the table goes to stdout). About 3 minutes on 2 cores. Faults inside a running job
(killed workers and executors) and the Scala API are asserted by the tests the doc names, not
repeated here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- trial:begin -->", "<!-- trial:end -->"


@dataclass
class Outcome:
    result: str        # exit code, exception type or "ok"
    lines: int         # lines the user reads (stderr, or the exception's text)
    message: str       # the line that names the problem (or what happened)
    files: str = "-"   # the user's files afterwards


@dataclass
class Case:
    area: str
    what: str
    expected: str
    run: Callable[[Path], Outcome]


# -- the user's files ------------------------------------------------------------------------

def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and os.access(p, os.R_OK)}


def _files_after(root: Path, before: dict[str, str], names: set[str], output: Path | None,
                 succeeded: bool) -> str:
    """``before``: the files' digests; ``names``: what was in ``root`` before the run. A run
    that succeeded may replace what is under ``output`` (the user asked for it)."""
    after = _snapshot(root)
    written = str(output.relative_to(root)) if succeeded and output is not None else None
    lost = [p for p, digest in before.items() if after.get(p) != digest
            and not (written and Path(p).parts[0] == written)]
    if lost:
        return f"LOST/CHANGED {', '.join(lost[:3])}"
    left = [p.name for p in root.iterdir() if "synapseml-ext-tmp" in p.name
            or "synapseml-ext-old" in p.name]
    if not succeeded and output is not None and output.name not in names and output.exists():
        left.append(output.name)
    return f"left behind: {', '.join(left)}" if left else "all kept, nothing left behind"


# -- the CLI ---------------------------------------------------------------------------------

def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "synapseml-ext"
    full = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([str(exe), *args], env=full, capture_output=True, text=True,
                          timeout=900)


def _cli_outcome(done: subprocess.CompletedProcess, root: Path, before: dict[str, str],
                 names: set[str], output: Path | None) -> Outcome:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("synapseml-ext: error:")]
    message = errors[-1] if errors else (done.stdout.strip().splitlines() or [""])[-1]
    files = _files_after(root, before, names, output, done.returncode == 0)
    return Outcome(f"exit {done.returncode}", len(lines), message, files)


def _reviews(root: Path, rows: int = 6) -> Path:
    import pandas as pd

    source = root / "reviews.csv"
    texts = ["Chocolate cake, rich and moist", "The nuts were rancid", "Great coffee beans",
             "Stale crackers, never again", "My dog loves these treats", "Too salty for me"]
    pd.DataFrame({"Id": range(rows), "Text": [texts[i % 6] for i in range(rows)]}).to_csv(
        source, index=False)
    return source


def cli_case(setup: Callable[[Path], tuple[list[str], Path | None]],
             env: Callable[[Path], dict[str, str]] | None = None
             ) -> Callable[[Path], Outcome]:
    """``setup(root)`` lays out the user's files and returns the CLI arguments and the output
    directory; the outcome checks every file that existed before the run."""
    def run(root: Path) -> Outcome:
        args, output = setup(root)
        before, names = _snapshot(root), {p.name for p in root.iterdir()}
        done = _cli(args, env(root) if env else None)
        return _cli_outcome(done, root, before, names, output)
    return run


def _embed(root: Path, source: Path, output: Path, *extra: str) -> list[str]:
    return ["embed", "--input", str(source), "--text-col", "Text", "--output", str(output),
            "--cache-dir", str(root / "cache"), *extra]


def _issue_data_loss(root: Path):
    danger = root / "danger"
    danger.mkdir()
    shutil.copy(_reviews(root), danger / "mydata.csv")
    (danger / "notes.txt").write_text("notes\n")
    return _embed(root, danger / "mydata.csv", danger, "--overwrite"), danger


def _foreign_output(root: Path):
    out = root / "results"
    out.mkdir()
    (out / "report.xlsx").write_bytes(b"PK\x03\x04 someone's report")
    return _embed(root, _reviews(root), out, "--overwrite"), out


def _existing_output(root: Path):
    out = root / "results"
    out.mkdir()
    (out / "part-0.parquet").write_bytes(b"PAR1")
    return _embed(root, _reviews(root), out), out


def _read_only_parent(root: Path):
    locked = root / "locked"
    locked.mkdir()
    _lock(locked)
    return _embed(root, _reviews(root), locked / "out"), locked / "out"


def _lock(path: Path) -> None:
    if os.geteuid() == 0:  # root writes through mode bits: make it immutable instead
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)


def _unlock(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(path)], capture_output=True)
            path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)


def _latin1(root: Path):
    source = root / "latin.csv"
    source.write_bytes("Id,Text\n1,Café crème brûlée\n".encode("latin-1"))
    return _embed(root, source, root / "out"), root / "out"


def _latin1_declared(root: Path):
    args, out = _latin1(root)
    return [*args, "--encoding", "latin-1"], out


def _symlink_output(root: Path):
    target = root / "real"
    target.mkdir()
    (root / "link").symlink_to(target)
    return _embed(root, _reviews(root), root / "link"), root / "link"


def _output_is_file(root: Path):
    (root / "out").write_text("mine\n")
    return _embed(root, _reviews(root), root / "out"), None


def _model_copy(root: Path) -> Path:
    from synapseml_ext._spark import bundled_model_dir

    model = root / "model"
    shutil.copytree(bundled_model_dir(), model)
    return model


def _truncated_weights(root: Path):
    model = _model_copy(root)
    weights = next(model.rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return [*_embed(root, _reviews(root), root / "out"), "--model", str(model)], root / "out"


def _truncated_tokenizer(root: Path):
    model = _model_copy(root)
    tokenizer = model / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[: tokenizer.stat().st_size // 2])
    return [*_embed(root, _reviews(root), root / "out"), "--model", str(model)], root / "out"


def _model_without_vocabulary(root: Path):
    model = _model_copy(root)
    for name in ("tokenizer.json", "vocab.txt"):
        (model / name).unlink()
    return [*_embed(root, _reviews(root), root / "out"), "--model", str(model)], root / "out"


def _empty_input_file(root: Path):
    (root / "empty.csv").write_bytes(b"")
    return _embed(root, root / "empty.csv", root / "out"), root / "out"


def _empty_model_dir(root: Path):
    (root / "model").mkdir()
    return [*_embed(root, _reviews(root), root / "out"), "--model", str(root / "model")], \
        root / "out"


def _rerun_over_own_output(root: Path):
    source = _reviews(root)
    first = _cli(_embed(root, source, root / "out"))
    assert first.returncode == 0, first.stderr
    return _embed(root, source, root / "out", "--overwrite"), root / "out"


def _failed_rerun_keeps_previous(root: Path):
    source = _reviews(root)
    first = _cli(_embed(root, source, root / "out"))
    assert first.returncode == 0, first.stderr
    return [*_embed(root, source, root / "out", "--overwrite"), "--text-col", "Txt"], \
        root / "out"


def _read_only_cache(root: Path):
    cache = root / "cache-ro"
    cache.mkdir()
    _lock(cache)
    args = _embed(root, _reviews(root), root / "out")
    args[args.index("--cache-dir") + 1] = str(cache)
    return args, root / "out"


def _plain(*args: str):
    return lambda root: (list(args), None)


def _table(root: Path) -> Path:
    """A folder as `embed` writes it (a parquet part and its marker), for `search`."""
    import pandas as pd

    from synapseml_ext._spark import bundled_model_dir

    table = root / "table"
    table.mkdir()
    pd.DataFrame({"Id": [1, 2], "Text": ["Chocolate cake", "Rancid nuts"],
                  "embeddings": [[1.0, 0.0], [0.0, 1.0]]}).to_parquet(table / "part-00000.parquet")
    marker = {"tool": "synapseml-ext", "command": "embed", "text_col": "Text",
              "output_col": "embeddings", "model": bundled_model_dir(), "format": "parquet",
              "id_col": "Id", "columns": ["Id", "Text", "embeddings"],
              "files": ["part-00000.parquet"]}
    (table / "_SYNAPSEML_EXT_OUTPUT").write_text(json.dumps(marker))
    return table


def _search(root: Path, table: Path, *extra: str) -> list[str]:
    return ["search", "--table", str(table), "--query", "chocolate", "--cache-dir",
            str(root / "cache"), *extra]


def _search_foreign_output(root: Path):
    out = root / "results"
    out.mkdir()
    (out / "report.xlsx").write_bytes(b"PK\x03\x04 someone's report")
    return _search(root, _table(root), "--output", str(out), "--overwrite"), out


CLI_CASES = [
    Case("CLI", "`--overwrite` onto the folder that holds the input (the reported data loss)",
         "refused before Spark, input and notes kept", cli_case(_issue_data_loss)),
    Case("CLI", "`--overwrite` onto a folder synapseml-ext did not write",
         "refused: replaces only its own output", cli_case(_foreign_output)),
    Case("CLI", "existing output without `--overwrite`", "refused, names `--overwrite`",
         cli_case(_existing_output)),
    Case("CLI", "`--overwrite` over its own earlier output", "replaced, exit 0",
         cli_case(_rerun_over_own_output)),
    Case("CLI", "a failed `--overwrite` rerun (wrong column)",
         "one line; the earlier output kept", cli_case(_failed_rerun_keeps_previous)),
    Case("CLI", "missing input file", "one line before Spark starts",
         cli_case(lambda r: (_embed(r, r / "nope.csv", r / "out"), r / "out"))),
    Case("CLI", "input with an unknown extension", "one line naming `--format`",
         cli_case(lambda r: (_embed(r, (r / "in.txt", (r / "in.txt").write_text("x"))[0],
                                    r / "out"), r / "out"))),
    Case("CLI", "wrong `--text-col`", "one line naming the columns there are",
         cli_case(lambda r: ([*_embed(r, _reviews(r), r / "out"), "--text-col", "text"],
                             r / "out"))),
    Case("CLI", "Latin-1 bytes in a CSV read as UTF-8", "one line: byte offset, `--encoding`",
         cli_case(_latin1)),
    Case("CLI", "the same file with `--encoding latin-1`", "embedded, text intact",
         cli_case(_latin1_declared)),
    Case("CLI", "unknown `--encoding`", "one line", cli_case(
        lambda r: ([*_embed(r, _reviews(r), r / "out"), "--encoding", "klingon"], r / "out"))),
    Case("CLI", "output parent missing", "one line: create it first", cli_case(
        lambda r: (_embed(r, _reviews(r), r / "no" / "out"), r / "no" / "out"))),
    Case("CLI", "output parent read-only", "one line: choose a writable location",
         cli_case(_read_only_parent)),
    Case("CLI", "output is an existing file", "one line, the file kept",
         cli_case(_output_is_file)),
    Case("CLI", "output is a symbolic link", "one line", cli_case(_symlink_output)),
    Case("CLI", "model directory that does not exist", "one line before Spark starts",
         cli_case(lambda r: ([*_embed(r, _reviews(r), r / "out"), "--model", str(r / "m")],
                             r / "out"))),
    Case("CLI", "empty model directory", "one line: not a usable model",
         cli_case(_empty_model_dir)),
    Case("CLI", "model weights cut in half", "one line: damaged weights",
         cli_case(_truncated_weights)),
    Case("CLI", "`tokenizer.json` cut in half", "one line naming the file (was: the "
         "worker's bare JSONDecodeError)", cli_case(_truncated_tokenizer)),
    Case("CLI", "`--output-col` that the input has already", "one line naming the option "
         "(was: the stage's outputCol)", cli_case(
             lambda r: ([*_embed(r, _reviews(r), r / "out"), "--output-col", "Id"], r / "out"))),
    Case("CLI", "model without its vocabulary (tokenizer.json and vocab.txt deleted)",
         "one line: vocabulary missing (was: vectors of noise, exit 0)",
         cli_case(_model_without_vocabulary)),
    Case("CLI", "empty (0-byte) input file", "one line before Spark starts",
         cli_case(_empty_input_file)),
    Case("CLI", "unknown hub id, no network", "one line: pass a local directory", cli_case(
        lambda r: ([*_embed(r, _reviews(r), r / "out"), "--model", "acme/no-such-model"],
                   r / "out"))),
    Case("CLI", "`--runtime cuda` on a machine without GPU", "one line naming the runtimes",
         cli_case(lambda r: ([*_embed(r, _reviews(r), r / "out"), "--runtime", "cuda"],
                             r / "out"))),
    Case("CLI", "`--runtime onnx --precision fp16`", "one line", cli_case(
        lambda r: ([*_embed(r, _reviews(r), r / "out"), "--runtime", "onnx", "--precision",
                    "fp16"], r / "out"))),
    Case("CLI", "read-only `--cache-dir`", "one line: pass a writable directory",
         cli_case(_read_only_cache)),
    Case("CLI", "embed: `--id-col` the input lacks", "one line naming the columns there are",
         cli_case(lambda r: ([*_embed(r, _reviews(r), r / "out"), "--id-col", "id"],
                             r / "out"))),
    Case("CLI", "search: `--table` that does not exist", "one line before Spark starts",
         cli_case(lambda r: (_search(r, r / "nope"), None))),
    Case("CLI", "search: a folder without the embed marker as `--table`",
         "one line naming the options to pass", cli_case(
             lambda r: (_search(r, (r / "data", (r / "data").mkdir(),
                                    _reviews(r / "data"))[0]), None))),
    Case("CLI", "search: `--id-col` the table lacks", "one line naming the columns there are",
         cli_case(lambda r: (_search(r, _table(r), "--id-col", "id"), None))),
    Case("CLI", "search: `--output` a folder synapseml-ext did not write",
         "refused: replaces only its own output", cli_case(_search_foreign_output)),
]


# -- the Python API, in one Spark session ----------------------------------------------------

PYTHON_CASES = {
    "embedder_missing_model": ("Python", "embedder: `modelName` directory that does not exist",
                               "ValueError-like, one line, at `transform`"),
    "embedder_wrong_column": ("Python", "embedder: `inputCol` not in the DataFrame",
                              "one line naming the columns"),
    "embedder_cuda": ("Python", "embedder: `runtime='cuda'` on local Spark without GPU",
                      "one line at `transform`"),
    "embedder_damaged_weights": ("Python", "embedder: weights cut in half",
                                 "one line at `transform`"),
    "embedder_foreign_weights": ("Python", "embedder: a well-formed weights file of another "
                                 "model (passes the driver's checks)",
                                 "the job fails with our line inside Spark's error"),
    "ann_gpu_backend": ("Python", "k-NN: `backend='gpu'` where no executor has a GPU",
                        "one line at `fit` (was: `cupy` error at search)"),
    "ann_nan_items": ("Python", "k-NN: an item vector holding NaN",
                      "error naming the id, no silent answer"),
    "ann_wrong_dimension": ("Python", "k-NN: queries of another dimension",
                            "error naming the dimension"),
    "saved_part_deleted": ("Saved model", "one of two index files deleted, loaded in a new "
                           "application", "one line at load naming the path"),
    "saved_bytes_flipped": ("Saved model", "570 bytes flipped in an index file, no `.crc` "
                            "(object stores)", "one line naming the path"),
    "saved_items_deleted": ("Saved model", "an item file deleted", "one line at load"),
    "saved_metadata_deleted": ("Saved model", "metadata folder deleted", "one line at load"),
    "cache_tampered_shared": ("Cache", "ONNX export altered (a `Neg` node, meta sha256 "
                              "updated) in a cache others can write", "not trusted: private "
                              "export used, right vectors"),
    "cache_tampered_signed": ("Cache", "the same under `SYNAPSEML_EXT_CACHE_SECRET`",
                              "signature fails: rebuilt, right vectors"),
}


def _python_api_cases(out: Path) -> None:
    """Runs PYTHON_CASES in this process (one Spark session) and writes their outcomes."""
    import numpy as np
    import onnx

    from synapseml_ext._spark import bundled_model_dir, local_spark
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder
    from synapseml_ext.nn import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel

    spark = local_spark("local[2]", "reliability trial", conf={"spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("OFF")
    root = Path(tempfile.mkdtemp(prefix="sx-trial-py-"))
    model = bundled_model_dir()
    texts = spark.createDataFrame([(i, t) for i, t in enumerate(
        ["chocolate cake", "rancid nuts", "great coffee", "stale crackers"])], "id long, text string")
    rng = np.random.default_rng(7)
    items = rng.standard_normal((3000, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)

    def vectors(array, ids=None):
        rows = [(int(i), [float(x) for x in v]) for i, v in zip(
            ids if ids is not None else range(len(array)), array, strict=True)]
        return spark.createDataFrame(rows, "id long, v array<float>")

    def embed(**params):
        stage = HuggingFaceSentenceEmbedder(inputCol="text", outputCol="e", **params)
        return stage.transform(texts).collect()

    def ann(**params):
        return ApproximateNearestNeighbors(k=5, inputCol="v", idCol="id", algorithm="ivfflat",
                                           numPartitions=2, algoParams={"nlist": 8, "nprobe": 8},
                                           **params)

    fitted = ann().fit(vectors(items))
    truth = fitted.kneighbors(vectors(queries))[2]
    truth_rows = sorted(tuple(r[1]) for r in truth.select("query_id", "indices").collect())

    def saved_copy(name):
        path = root / name
        fitted.save(str(path))
        return path

    def load_and_search(path):
        loaded = ApproximateNearestNeighborsModel.load(str(path))
        got = sorted(tuple(r[1]) for r in loaded.kneighbors(vectors(queries))[2]
                     .select("query_id", "indices").collect())
        same = sum(a == b for a, b in zip(got, truth_rows, strict=False))
        return f"searched: {same} of {len(truth_rows)} answers as before"

    def part_deleted():
        path = saved_copy("deleted")
        next((path / "data" / "indexes").glob("part-*.parquet")).unlink()
        return load_and_search(path)

    def bytes_flipped():
        path = saved_copy("flipped")
        index = sorted((path / "data" / "indexes").glob("part-*.parquet"))[0]
        data = bytearray(index.read_bytes())
        for i in range(len(data) // 2, len(data) // 2 + 570):
            data[i] ^= 0xFF
        index.write_bytes(bytes(data))
        (index.parent / f".{index.name}.crc").unlink(missing_ok=True)
        return load_and_search(path)

    def items_deleted():
        path = saved_copy("items")
        files = sorted(p for p in path.rglob("part-*.parquet") if "indexes" not in p.parts)
        files[0].unlink()
        return load_and_search(path)

    def metadata_deleted():
        path = saved_copy("metadata")
        shutil.rmtree(path / "metadata")
        return load_and_search(path)

    def damaged_weights():
        copy = root / "model-damaged"
        shutil.copytree(model, copy)
        weights = next(copy.rglob("model.safetensors"))
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        embed(modelName=str(copy))
        return "embedded"

    def foreign_weights():
        from safetensors.numpy import save_file

        copy = root / "model-foreign"
        shutil.copytree(model, copy)
        weights = next(copy.rglob("model.safetensors"))
        save_file({"classifier.weight": np.zeros((2, 4), np.float32)}, str(weights))
        embed(modelName=str(copy))
        return "embedded"

    def nan_items():
        bad = items.copy()
        bad[1234, 3] = np.nan
        ann().fit(vectors(bad)).kneighbors(vectors(queries))[2].collect()
        return "searched"

    def wrong_dimension():
        fitted.kneighbors(vectors(queries[:, :8]))[2].collect()
        return "searched"

    def tampered_cache(signed):
        cache = root / ("signed" if signed else "shared") / "cache"
        cache.mkdir(parents=True)
        if signed:
            os.environ["SYNAPSEML_EXT_CACHE_SECRET"] = "trial-secret"
        spec = EncoderSpec(model=model, runtime="onnx", cache_dir=str(cache))
        sample = ["chocolate cake", "rancid nuts"]
        right = SentenceEncoder(spec).encode(sample)
        entry = next(cache.glob("onnx/*"))
        meta = json.loads((entry / "meta.json").read_text())
        for name in meta["files"]:  # negate the output of every graph, sha256s updated
            graph = onnx.load(str(entry / name))
            output = graph.graph.output[0].name
            for node in graph.graph.node:
                node.output[:] = ["clean" if o == output else o for o in node.output]
            graph.graph.node.append(onnx.helper.make_node("Neg", ["clean"], [output]))
            onnx.save(graph, str(entry / name))
            data = (entry / name).read_bytes()
            meta["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (entry / "meta.json").write_text(json.dumps(meta))
        if not signed:
            cache.chmod(0o777)  # as a shared folder is: anyone could have done the above
        again = SentenceEncoder(spec).encode(sample)
        os.environ.pop("SYNAPSEML_EXT_CACHE_SECRET", None)
        cos = float(np.min(np.sum(right * again, axis=1)
                           / np.linalg.norm(right, axis=1) / np.linalg.norm(again, axis=1)))
        return f"min cosine to the right vectors {cos:.4f}"

    runs = {
        "embedder_missing_model": lambda: embed(modelName=str(root / "nope")),
        "embedder_wrong_column": lambda: HuggingFaceSentenceEmbedder(
            modelName=model, inputCol="Text").transform(texts),
        "embedder_cuda": lambda: embed(modelName=model, runtime="cuda"),
        "embedder_damaged_weights": damaged_weights,
        "embedder_foreign_weights": foreign_weights,
        "ann_gpu_backend": lambda: ann(backend="gpu").fit(vectors(items)),
        "ann_nan_items": nan_items,
        "ann_wrong_dimension": wrong_dimension,
        "saved_part_deleted": part_deleted,
        "saved_bytes_flipped": bytes_flipped,
        "saved_items_deleted": items_deleted,
        "saved_metadata_deleted": metadata_deleted,
        "cache_tampered_shared": lambda: tampered_cache(signed=False),
        "cache_tampered_signed": lambda: tampered_cache(signed=True),
    }
    results = {}
    for name, run in runs.items():
        try:
            value = run()
            results[name] = {"result": "ok", "lines": 1,
                             "message": value if isinstance(value, str) else "ran"}
        except Exception as e:  # the point: what the user sees
            text = str(e).strip()
            from synapseml_ext.engine.errors import user_message

            ours = user_message(e)
            results[name] = {"result": type(e).__name__, "lines": len(text.splitlines()),
                             "message": ours or text.splitlines()[0] if text else repr(e)}
    spark.stop()
    _unlock(root)
    shutil.rmtree(root, ignore_errors=True)
    out.write_text(json.dumps(results))


def python_outcomes() -> dict[str, Outcome]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "python.json"
        done = subprocess.run([sys.executable, __file__, "--python-api-cases", str(out)],
                              capture_output=True, text=True, timeout=1800,
                              env=dict(os.environ, HF_HUB_OFFLINE="1",
                                       XDG_CACHE_HOME=str(Path(tmp) / "home-cache")))
        if done.returncode:
            raise SystemExit(f"the Python API cases failed to run:\n{done.stderr[-3000:]}")
        raw = json.loads(out.read_text())
    return {name: Outcome(**value) for name, value in raw.items()}


# -- the init scripts ------------------------------------------------------------------------

def _init_script(root: Path, **env: str) -> Outcome:
    import zipfile

    jar = root / "synapseml-ext_2.12-0.1.0.jar"
    with zipfile.ZipFile(jar, "w") as f:
        f.writestr("Marker.txt", "x")
    prefix = root / "prefix"
    values = {k: v.replace("{jar}", str(jar)) for k, v in env.items()}
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "SYNAPSEML_EXT_PREFIX": str(prefix), "PYTHON": sys.executable,
            "WHEEL": "synapseml-ext==0.1.0", **values}
    done = subprocess.run(["bash", str(REPO / "tools/init_scripts/databricks-cpu.sh")],
                          env=full, capture_output=True, text=True, timeout=300)
    shown = done.stdout + done.stderr
    errors = [line for line in shown.splitlines() if "ERROR" in line]
    log = prefix / "var/log/synapseml-ext/init.log"
    secret = "SECRET" in shown or (log.exists() and "SECRET" in log.read_text())
    installed = [p for p in (prefix / "databricks").rglob("*") if p.is_file()] \
        if (prefix / "databricks").exists() else []
    files = ("secret shown!" if secret else "no secret in output or log") + \
        f"; {len(installed)} files installed"
    message = (errors[-1].split("synapseml-ext-init: ", 1)[-1] if errors
               else shown.strip().splitlines()[-1])
    return Outcome(f"exit {done.returncode}", len(errors) or len(shown.splitlines()), message,
                   files)


INIT_CASES = [
    Case("Init script", "`JAR=http://...`", "refused before anything is installed",
         lambda r: _init_script(r, JAR="http://example.org/synapseml-ext_2.12-0.1.0.jar",
                                JAR_SHA256="0" * 64)),
    Case("Init script", "`JAR` without `JAR_SHA256`", "refused, names `sha256sum`",
         lambda r: _init_script(r, JAR="{jar}")),
    Case("Init script", "`JAR` whose sha256 differs", "refused, nothing installed",
         lambda r: _init_script(r, JAR="{jar}", JAR_SHA256="ab" * 32)),
    Case("Init script", "`JAR` URL with a SAS token, host unreachable",
         "fails; the token never printed or logged",
         lambda r: _init_script(r, JAR="https://127.0.0.1:9/libs/synapseml-ext_2.12-0.1.0.jar"
                                "?sv=2024&sig=SECRET", JAR_SHA256="ab" * 32)),
    Case("Init script", "`REQUIREMENTS_LOCK` without hashes", "refused",
         lambda r: _init_script(r, REQUIREMENTS_LOCK=str(
             (r / "lock.txt", (r / "lock.txt").write_text("torch==2.5.1\n"))[0]))),
]


# -- the table -------------------------------------------------------------------------------

def _row(case: Case, outcome: Outcome, seconds: float) -> str:
    message = outcome.message.replace("|", "\\|").replace("\n", " ")
    if len(message) > 160:
        message = message[:157] + "..."
    return (f"| {case.area} | {case.what} | {case.expected} | {outcome.result} | "
            f"{outcome.lines} | {message} | {outcome.files} | {seconds:.0f} |")


def run_all() -> list[str]:
    rows = ["| Area | Bad input or fault | Expected | Result | Lines | What the user reads | "
            "User's files | s |", "|---|---|---|---|---|---|---|---|"]
    for case in [*CLI_CASES, *INIT_CASES]:
        root = Path(tempfile.mkdtemp(prefix="sx-trial-"))
        started = time.perf_counter()
        try:
            outcome = case.run(root)
        except Exception as e:
            outcome = Outcome("trial error", 0, f"{type(e).__name__}: {e}")
        finally:
            _unlock(root)
            shutil.rmtree(root, ignore_errors=True)
        rows.append(_row(case, outcome, time.perf_counter() - started))
        print(rows[-1], file=sys.stderr, flush=True)
    started = time.perf_counter()
    outcomes = python_outcomes()
    each = (time.perf_counter() - started) / max(len(outcomes), 1)
    for name, (area, what, expected) in PYTHON_CASES.items():
        rows.append(_row(Case(area, what, expected, lambda r: None), outcomes[name], each))
    return rows


def _write(doc: Path, rows: list[str]) -> None:
    text = doc.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + BEGIN + "\n" + "\n".join(rows) + "\n" + END + tail, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="the doc whose trial block to rewrite")
    parser.add_argument("--python-api-cases", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_api_cases:
        _python_api_cases(args.python_api_cases)
        return
    rows = run_all()
    if args.write:
        _write(args.write, rows)
    else:
        print("\n".join(rows))


if __name__ == "__main__":
    main()
