"""The engine caches are not a way in: what another user could have written is never loaded,
a cache secret signs shared caches, files are private, and an unwritable cacheDir is one line.

Runs as any user; the tests that give files to another owner need root (chown).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from synapseml_ext.engine import EncoderSpec, EngineError, SentenceEncoder, cache_roots, cache_trust
from synapseml_ext.engine.cache_roots import open_cache_root, private_root
from synapseml_ext.engine.cache_trust import SECRET_ENV
from synapseml_ext.engine.precision import ProbeVerdicts
from synapseml_ext.engine.runtimes.onnx_export import OUTPUT_NAME, load_artifacts
from synapseml_ext.engine.runtimes.tensorrt.engine_cache import (
    EngineCache,
    engine_key,
    local_lock_dir,
)

from helpers import cosines
from tiny_models import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["a cache is a trust boundary", "tensorrt engines are native code"]
NOBODY = 65534
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="giving a file to another user needs root")


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch) -> Path:
    """Each test has its own private default cache (platformdirs follows XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv("SYNAPSEML_EXT_CACHE", raising=False)
    monkeypatch.setattr(cache_roots, "_fallback", None)
    monkeypatch.setattr(cache_roots, "_warned", set())
    return tmp_path / "xdg" / "synapseml-ext"


@pytest.fixture(scope="module")
def model(tmp_path_factory, minilm_dir) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("trust") / "m", minilm_dir)


def _encoder(model: str, cache: Path) -> SentenceEncoder:
    return SentenceEncoder(EncoderSpec(model=model, runtime="onnx", cache_dir=str(cache)))


def _entry(cache: Path) -> Path:
    (entry,) = [p for p in (cache / "onnx").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return entry


def _poison(entry: Path) -> None:
    """What anyone who can write the cache could do: negate the embedding in every graph and
    update meta.json's sizes and sha256s to match."""
    import onnx

    meta = json.loads((entry / "meta.json").read_text())
    for name in meta["files"]:
        graph = onnx.load(str(entry / name))
        for node in graph.graph.node:
            node.output[:] = ["clean" if o == OUTPUT_NAME else o for o in node.output]
        graph.graph.node.append(onnx.helper.make_node("Neg", ["clean"], [OUTPUT_NAME]))
        onnx.save(graph, str(entry / name))
        meta["files"][name] = {"size": (entry / name).stat().st_size,
                               "sha256": cache_trust.sha256_file(entry / name)}
    (entry / "meta.json").write_text(json.dumps(meta))


def _exports(caplog) -> int:
    return sum("exported " in r.getMessage() for r in caplog.records)


# -- ONNX exports ----------------------------------------------------------------------------

def test_poisoned_export_is_loaded_only_from_where_only_you_can_write(
        tmp_path, model, private_home, caplog):
    cache = tmp_path / "cache"
    expected = _encoder(model, cache).encode(TEXTS)
    entry = _entry(cache)
    _poison(entry)
    # The poison works: where only this user can write, the cache trusts what is there.
    assert cosines(_encoder(model, cache).encode(TEXTS), expected).max() < -0.99

    cache.chmod(0o777)  # now every local user could have written it
    assert load_artifacts(entry) is None
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        vectors = _encoder(model, cache).encode(TEXTS)
        _encoder(model, cache)
    assert cosines(vectors, expected).min() >= 0.999999
    warnings = [r.getMessage() for r in caplog.records if "is not used" in r.getMessage()]
    assert len(warnings) == 1 and str(cache) in warnings[0] and SECRET_ENV in warnings[0]
    assert "writable by other users (mode 0777)" in warnings[0]
    assert load_artifacts(_entry(private_home)) is not None  # rebuilt privately


def test_untrusted_entry_in_a_trusted_cache_is_rebuilt(tmp_path, model, caplog):
    cache = tmp_path / "cache"
    expected = _encoder(model, cache).encode(TEXTS)
    entry = _entry(cache)
    _poison(entry)
    entry.chmod(0o777)
    assert load_artifacts(entry) is None
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        again = _encoder(model, cache)
    assert "is not trusted" in caplog.text and "rebuilding it" in caplog.text
    assert cosines(again.encode(TEXTS), expected).min() >= 0.999999
    assert stat.S_IMODE(entry.stat().st_mode) == 0o700 and load_artifacts(entry) is not None


def test_signed_cache_loads_only_entries_signed_with_the_secret(tmp_path, model, monkeypatch,
                                                                private_home, caplog):
    monkeypatch.setenv(SECRET_ENV, "first secret")
    cache = tmp_path / "shared"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)  # like /dbfs: no owners to rely on, the signatures are what count
    with caplog.at_level(logging.INFO, logger="synapseml_ext"):
        expected = _encoder(model, cache).encode(TEXTS)
        entry = _entry(cache)
        assert (entry / "meta.json.sig").exists()
        artifacts = load_artifacts(entry)
        assert artifacts is not None
        # Loaded from a private copy checked while copying, not from the shared folder.
        assert artifacts.raw.parent == private_home / "verified"
        assert cosines(_encoder(model, cache).encode(TEXTS), expected).min() >= 0.999999
    assert _exports(caplog) == 1  # the signed entry was reused

    monkeypatch.setenv(SECRET_ENV, "another secret")
    assert load_artifacts(entry) is None  # mis-signed
    monkeypatch.setenv(SECRET_ENV, "first secret")
    assert load_artifacts(entry) is not None

    _poison(entry)  # graphs and meta.json agree, the signature does not
    assert load_artifacts(entry) is None
    (entry / "meta.json.sig").unlink()  # unsigned
    assert load_artifacts(entry) is None
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="synapseml_ext"):
        vectors = _encoder(model, cache).encode(TEXTS)
    assert "is not signed with SYNAPSEML_EXT_CACHE_SECRET: rebuilding it" in caplog.text
    assert _exports(caplog) == 1 and cosines(vectors, expected).min() >= 0.999999
    assert load_artifacts(entry) is not None  # rebuilt and signed again


@needs_root
def test_export_owned_by_another_user_is_not_loaded(tmp_path, model):
    cache = tmp_path / "cache"
    _encoder(model, cache)
    entry = _entry(cache)
    assert load_artifacts(entry) is not None
    os.chown(entry / "model.ort.onnx", NOBODY, NOBODY)
    assert load_artifacts(entry) is None
    os.chown(entry / "model.ort.onnx", 0, 0)
    os.chown(entry / "meta.json", NOBODY, NOBODY)
    assert load_artifacts(entry) is None
    os.chown(entry / "meta.json", 0, 0)
    os.chown(entry, NOBODY, NOBODY)
    assert load_artifacts(entry) is None
    os.chown(entry, 0, 0)
    assert load_artifacts(entry) is not None


# -- TensorRT engines ------------------------------------------------------------------------

PARTS = {"model": "m" * 24, "precision": "fp16", "tensorrt": "10.13.0"}


def _plan(tag: str = "good") -> bytes:
    return json.dumps({"engine": tag}).encode()


@pytest.fixture
def engines(tmp_path) -> EngineCache:
    return EngineCache(tmp_path / "cache" / "tensorrt", lock_dir=tmp_path / "locks")


def _tamper(engines: EngineCache) -> None:
    """Replace the payload and fix the header's size and sha256 to match."""
    import hashlib

    path = engines.path(engine_key(PARTS))
    _, header, _ = path.read_bytes().split(b"\n", 2)
    header = json.loads(header)
    payload = _plan("evil")
    header.update(size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    path.write_bytes(b"".join([path.read_bytes().split(b"\n", 1)[0], b"\n",
                               json.dumps(header).encode(), b"\n", payload]))


@pytest.mark.parametrize("how", [
    "group_writable", "symlink", pytest.param("other_owner", marks=needs_root)])
def test_engine_others_could_write_is_not_deserialised(engines, tmp_path, how, caplog):
    engines.get_or_build(PARTS, _plan, json.loads)
    path = engines.path(engine_key(PARTS))
    _tamper(engines)
    assert engines.read(engine_key(PARTS))[0] == _plan("evil")  # a checksum is no defence
    if how == "group_writable":
        path.chmod(0o660)
    elif how == "symlink":
        shutil.move(path, tmp_path / "elsewhere.engine")
        path.symlink_to(tmp_path / "elsewhere.engine")
    else:
        os.chown(path, NOBODY, NOBODY)
    assert engines.read(engine_key(PARTS)) is None
    deserialised = []
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        engine, built = engines.get_or_build(
            PARTS, _plan, lambda b: deserialised.append(b) or json.loads(b))
    assert built and engine == {"engine": "good"} and deserialised == [_plan()]
    assert "is not trusted" in caplog.text and "rebuilding it" in caplog.text
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_signed_engines(engines, monkeypatch, caplog):
    key = engine_key(PARTS)
    engines.write(key, _plan(), PARTS)  # unsigned, before the secret was set
    monkeypatch.setenv(SECRET_ENV, "s1")
    assert engines.read(key) is None
    assert engines.get_or_build(PARTS, _plan, json.loads)[1]
    assert engines.read(key) is not None  # rebuilt and signed
    assert not engines.get_or_build(PARTS, _plan, json.loads)[1]  # the signed one is loaded
    monkeypatch.setenv(SECRET_ENV, "s2")
    assert engines.read(key) is None
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        assert engines.get_or_build(PARTS, _plan, json.loads)[1]
    assert "is not signed with SYNAPSEML_EXT_CACHE_SECRET: rebuilding it" in caplog.text
    _tamper(engines)  # payload and checksum agree, the signature does not
    assert engines.read(key) is None
    monkeypatch.delenv(SECRET_ENV)
    assert engines.read(key)[0] == _plan("evil")  # without a secret only owners protect it


def test_symlink_at_the_lock_is_neither_followed_nor_fatal(engines, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    lock = engines.lock_path(engine_key(PARTS))
    lock.parent.mkdir(mode=0o700)
    lock.symlink_to(victim)
    engine, built = engines.get_or_build(PARTS, _plan, json.loads)
    assert built and engine == {"engine": "good"}
    assert victim.read_text() == "keep me" and not lock.is_symlink()
    # A dangling link: its target is not created either.
    engines.discard(engine_key(PARTS))
    lock.unlink()
    lock.symlink_to(tmp_path / "created-by-us")
    assert engines.get_or_build(PARTS, _plan, json.loads)[1]
    assert not (tmp_path / "created-by-us").exists()


def test_default_locks_are_private_and_not_in_tmp(private_home):
    locks = local_lock_dir()
    assert locks == private_home / "locks"
    assert stat.S_IMODE(locks.stat().st_mode) == 0o700
    assert stat.S_IMODE(private_home.stat().st_mode) == 0o700


# -- precision verdicts ----------------------------------------------------------------------

def test_verdicts_others_could_write_or_unsigned_are_ignored(tmp_path, monkeypatch):
    verdicts = ProbeVerdicts(tmp_path / "cache", "model", "cpu", threshold=0.999)
    verdicts.put("bf16", 0.95)
    data = json.loads(verdicts.path.read_text())
    data["verdicts"]["bf16"] = 0.99999  # a forged pass
    verdicts.path.write_text(json.dumps(data))
    assert verdicts.get("bf16").passed  # the owner is trusted
    verdicts.path.chmod(0o666)
    assert verdicts.get("bf16") is None
    verdicts.path.chmod(0o600)

    monkeypatch.setenv(SECRET_ENV, "s1")
    assert verdicts.get("bf16") is None  # unsigned
    verdicts.put("bf16", 0.95)
    assert verdicts.get("bf16").min_cosine == 0.95  # signed
    data = json.loads(verdicts.path.read_text())
    data["verdicts"]["bf16"] = 0.99999
    verdicts.path.write_text(json.dumps(data))
    assert verdicts.get("bf16") is None  # mis-signed
    assert stat.S_IMODE(verdicts.path.stat().st_mode) == 0o600


@needs_root
def test_verdicts_owned_by_another_user_are_ignored(tmp_path):
    verdicts = ProbeVerdicts(tmp_path / "cache", "model", "cpu", threshold=0.9)
    verdicts.put("bf16", 0.95)
    os.chown(verdicts.path, NOBODY, NOBODY)
    assert verdicts.get("bf16") is None


# -- the cache root --------------------------------------------------------------------------

def test_untrusted_cache_dir_is_ignored_with_one_warning(tmp_path, private_home, caplog):
    cache = tmp_path / "cache"
    cache.mkdir()
    assert open_cache_root(str(cache)) == cache
    (cache / "tensorrt").mkdir(mode=0o700)
    (cache / "tensorrt").chmod(0o770)
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        roots = {open_cache_root(str(cache)) for _ in range(3)}
    assert roots == {private_home}
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert str(cache / "tensorrt") in message and "chmod 700" in message
    assert f"spark.executorEnv.{SECRET_ENV}" in message
    # Under a folder that others can write (not sticky, unlike /tmp), it is not trusted either.
    parent = tmp_path / "open"
    parent.mkdir()
    parent.chmod(0o777)
    assert "writable by other users" in cache_trust.why_untrusted(parent / "x")
    parent.chmod(0o777 | stat.S_ISVTX)
    (parent / "x").mkdir(mode=0o700)
    assert cache_trust.why_untrusted(parent / "x") == ""


@needs_root
def test_cache_dir_owned_by_another_user_is_ignored(tmp_path, private_home):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, NOBODY, NOBODY)
    assert open_cache_root(str(cache)) == private_home


def test_shared_looking_cache_dir_warns_once_unless_signed(tmp_path, monkeypatch, caplog):
    shared = tmp_path / "dbfs"
    monkeypatch.setattr(cache_roots, "SHARED_PREFIXES", (str(shared),))
    assert cache_roots.looks_shared(shared / "cache")
    assert not cache_roots.looks_shared(tmp_path / "dbfsx")
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        for _ in range(3):
            assert open_cache_root(str(shared / "cache")) == shared / "cache"
    assert len(caplog.records) == 1
    assert "trust boundary" in caplog.text and "executable code" in caplog.text
    assert SECRET_ENV in caplog.text
    caplog.clear()
    monkeypatch.setenv(SECRET_ENV, "s1")
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        open_cache_root(str(shared / "other"))
    assert not caplog.records


def test_default_cache_is_made_private_or_replaced(private_home, monkeypatch, caplog):
    private_home.mkdir(parents=True, mode=0o700)
    private_home.chmod(0o775)  # made by an older version under umask 002
    assert private_root() == private_home
    assert stat.S_IMODE(private_home.stat().st_mode) == 0o700
    if os.geteuid() != 0:
        return
    os.chown(private_home, NOBODY, NOBODY)
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        fallback = private_root()
    assert fallback != private_home and private_root() == fallback
    assert stat.S_IMODE(fallback.stat().st_mode) == 0o700
    assert "is not private" in caplog.text and str(private_home) in caplog.text


def test_cache_files_are_0600_and_folders_0700_whatever_the_umask(tmp_path, model):
    cache = tmp_path / "cache"
    old = os.umask(0)
    try:
        _encoder(model, cache)
        EngineCache(cache / "tensorrt").get_or_build(PARTS, _plan, json.loads)
        ProbeVerdicts(cache, "model", "cpu").put("bf16", 0.99)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.lstat().st_mode)
             for p in [cache, *cache.rglob("*")]}
    assert len(modes) >= 10
    wrong = {p: f"{m:04o}" for p, m in modes.items()
             if m != (0o700 if (tmp_path / p).is_dir() else 0o600)}
    assert not wrong, wrong


# -- unwritable cacheDir ---------------------------------------------------------------------

def test_unwritable_cache_dir_is_one_line(tmp_path, model, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(EngineError) as e:
        _encoder(model, blocker / "cache")
    assert "\n" not in str(e.value)
    assert f"cacheDir {blocker} is not writable (Not a directory)" in str(e.value)

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):  # a read-only file system, which root cannot chmod away
        if str(path).startswith(str(readonly)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(EngineError) as e:
        _encoder(model, readonly)
    assert "\n" not in str(e.value)
    assert (f"cacheDir {readonly} is not writable (Read-only file system): pass a writable "
            "cacheDir or set SYNAPSEML_EXT_CACHE") in str(e.value)


_READONLY_CHILD = textwrap.dedent("""
    import sys
    from synapseml_ext.engine import EngineError
    from synapseml_ext.engine.runtimes.tensorrt.engine_cache import EngineCache
    from synapseml_ext.engine.paths import cache_root
    try:
        EngineCache(cache_root(sys.argv[1]) / "tensorrt").get_or_build(
            {"k": 1}, lambda: b"x", lambda b: b)
    except EngineError as e:
        print(e)
""")


def test_read_only_mount_is_one_line(tmp_path):
    """A real read-only bind mount, where this machine allows a private mount namespace."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here")
    cache = tmp_path / "ro"
    cache.mkdir(mode=0o700)
    script = (f'mount --bind "{cache}" "{cache}" && mount -o remount,bind,ro "{cache}" && '
              f'exec "{sys.executable}" -c "$0" "{cache}"')
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, _READONLY_CHILD],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith(
        f"cacheDir {cache} is not writable (Read-only file system): pass a writable cacheDir "
        "or set SYNAPSEML_EXT_CACHE to a directory you can write"), out.stdout
    assert len(out.stdout.strip().splitlines()) == 1


def test_signature_binds_kind_name_and_digest(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "s1")
    sig = cache_trust.sign("onnx", "key", "0" * 64)
    assert cache_trust.signature_ok("onnx", "key", "0" * 64, sig)
    for kind, name, digest in [("tensorrt", "key", "0" * 64), ("onnx", "other", "0" * 64),
                               ("onnx", "key", "1" * 64)]:
        assert not cache_trust.signature_ok(kind, name, digest, sig)
    assert not cache_trust.signature_ok("onnx", "key", "0" * 64, None)
    monkeypatch.delenv(SECRET_ENV)
    assert cache_trust.sign("onnx", "key", "0" * 64) is None
    assert cache_trust.signature_ok("onnx", "key", "0" * 64, None)  # owners decide instead
