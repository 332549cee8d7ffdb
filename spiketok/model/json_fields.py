"""Typed reads of a JSON object read from a file, each refusal naming the key: `'latents.step' is missing`,
`'dims' is a string, not a whole number > 0` (the export sidecar's reader, spiketok.model.sidecar)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

MISSING = object()  # `default=MISSING`: the key is required


def kind(v: Any) -> str:
    """A JSON value's kind, in JSON's words."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "a mapping"}.get(type(v), type(v).__name__)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_positive(v: Any) -> bool:
    return is_num(v) and math.isfinite(v) and v > 0


def list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


class JsonFields:
    """The JSON object `d` at `path` (dotted keys, `[i]` for list items) in what `source` names: typed gets of its
    keys; a missing or wrong-typed one raises `error` with the key's full path."""

    def __init__(self, d: Any, path: str, source: str, error: type[Exception]):
        self.path, self.source, self.error_type = path, source, error
        if not isinstance(d, dict):
            raise self.error(path, f"is {kind(d)}, not a mapping")
        self.d = d

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, path: str, what: str) -> Exception:
        return self.error_type(f"{self.source}: '{path or '(top level)'}' {what}")

    def has(self, name: str) -> bool:
        return name in self.d

    def get(self, name: str, check: Callable[[Any], bool], expected: str, default: Any = MISSING) -> Any:
        """The value of key `name` if it passes `check`; `default` when it is absent (MISSING: it is required)."""
        if name not in self.d:
            if default is not MISSING:
                return default
            raise self.error(self.key(name), "is missing")
        v = self.d[name]
        if not check(v):
            raise self.error(self.key(name), f"is {kind(v)}, not {expected}")
        return v

    def text(self, name: str, default: Any = MISSING) -> str:
        return self.get(name, lambda v: isinstance(v, str), "a string", default)

    def obj(self, name: str) -> JsonFields:
        d = self.get(name, lambda v: isinstance(v, dict), "a mapping")
        return JsonFields(d, self.key(name), self.source, self.error_type)

    def items(self, name: str) -> list[JsonFields]:
        """A list of JSON objects, each read as JsonFields (path `name[i]`)."""
        values = self.get(name, lambda v: isinstance(v, list), "a list")
        return [JsonFields(v, f"{self.key(name)}[{i}]", self.source, self.error_type) for i, v in enumerate(values)]

    def mapping(self, name: str, check: Callable[[Any], bool], expected: str) -> dict[str, Any]:
        """A copy of the mapping at `name`, whose every value passes `check` (a wrong one named by its key)."""
        inner = self.obj(name)
        for k in inner.d:
            inner.get(k, check, expected)
        return copy.deepcopy(inner.d)
