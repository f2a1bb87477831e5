"""Writes the Scala stubs of the bridged Python stages (the reverse of SynapseML's
Scala -> Python codegen), and docs/reference.md (every Param and CLI flag).

For each stage in :data:`synapseml_ext.contract.names.STAGES` it reads the Python class's
Params (name, doc, typeConverter, default, whether unset is meaningful) and writes
``scala/src/main/scala/<package>/<Stage>.scala``. Generated files say so in their first line; ``python -m synapseml_ext.codegen --check`` fails on any difference
(CI and the pytest suite run it).
"""

from __future__ import annotations

from pathlib import Path

from synapseml_ext.codegen.model import read_stage
from synapseml_ext.codegen.reference import render_reference
from synapseml_ext.codegen.scala import HEADER
from synapseml_ext.codegen.scala_driver import render_stage
from synapseml_ext.contract.names import STAGES

__all__ = ["HEADER", "default_root", "generate", "stale_files"]

SCALA_SOURCES = Path("scala") / "src" / "main" / "scala"
REFERENCE = Path("docs") / "reference.md"  # every Param and CLI flag, from the code


def default_root() -> Path:
    """The checkout this package was imported from (``python/synapseml_ext/codegen``)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "build.sbt").exists():
        raise SystemExit(f"{root} is not a synapseml-ext checkout (no build.sbt); pass --root")
    return root


def generate(root: Path) -> dict[Path, str]:
    """Every generated file: path under ``root`` -> its text."""
    files = {}
    for bridged in STAGES:
        stage = read_stage(bridged)
        path = root / SCALA_SOURCES / Path(*bridged.scala_class.split(".")).with_suffix(".scala")
        files[path] = render_stage(stage, bridged)
    files[root / REFERENCE] = render_reference()
    return files


def stale_files(root: Path, files: dict[Path, str]) -> list[Path]:
    """Generated files on disk that no stage generates any more."""
    found = []
    for path in sorted((root / SCALA_SOURCES).rglob("*.scala")):
        with path.open(encoding="utf-8") as handle:
            first = handle.readline().rstrip("\n")
        if first == HEADER and path not in files:
            found.append(path)
    return found
