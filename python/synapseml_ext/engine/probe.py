"""The fixed probe texts shipped with the package (exports and precision are checked on them)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def probe_texts() -> tuple[str, ...]:
    raw = resources.files("synapseml_ext").joinpath("data/probe_texts.json").read_text("utf-8")
    return tuple(json.loads(raw)["texts"])
