"""``python -m synapseml_ext.codegen [--check] [--root DIR]``: write the Scala stubs and
docs/reference.md, or with
``--check`` fail (exit 1, showing the diff) when the checked-in files differ."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from synapseml_ext.codegen import default_root, generate, stale_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synapseml_ext.codegen",
                                     description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if any generated file differs")
    parser.add_argument("--root", type=Path, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root = (args.root or default_root()).resolve()
    files = generate(root)
    stale = stale_files(root, files)
    if args.check:
        return _check(root, files, stale)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(root)}")
    for path in stale:
        path.unlink()
        print(f"removed {path.relative_to(root)} (no stage generates it)")
    return 0


def _check(root: Path, files: dict[Path, str], stale: list[Path]) -> int:
    problems = 0
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            problems += 1
            rel = str(path.relative_to(root))
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                f"a/{rel} (checked in)", f"b/{rel} (generated)"))
    for path in stale:
        problems += 1
        print(f"{path.relative_to(root)}: generated file that no stage generates any more")
    if problems:
        print(f"\n{problems} generated file(s) out of date: run "
              "`python -m synapseml_ext.codegen` and commit the result", file=sys.stderr)
        return 1
    print(f"generated files up to date ({len(files)} checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
