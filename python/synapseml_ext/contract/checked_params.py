"""Params whose setters validate: one check path for the constructor, the setters, and a
stage rebuilt from saved metadata (a Python load or a Scala stage's Params)."""

from __future__ import annotations

from typing import Any

from pyspark.ml.param import Params

__all__ = ["CheckedParams"]


class CheckedParams(Params):
    """A stage's Params mixin implements ``_set_checked(**values)`` (validate, then set)."""

    def _set_checked(self, **values: Any) -> Any:  # pragma: no cover - every stage overrides
        raise NotImplementedError

    def checkParams(self) -> None:
        """Pass every explicitly set Param through the setters' checks: a damaged saved
        value fails here with the setter's message, never later as a wrong answer."""
        values = {param.name: self.getOrDefault(param) for param in self.params
                  if self.isSet(param)}
        if values:
            self._set_checked(**values)
