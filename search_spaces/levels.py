"""Factor levels in their three forms: the canonical key that compares, the label people read, and
the JSON or frozen value a config holds. One home for the space, the runner and the analysis, so a
level from YAML, from a trial's params.json and from a claims file compares equal.

`3` and `3.0` are one level, `true` is not `1`, `[2, 2, 2, 2]` is `"[2,2,2,2]"`, and a multi-key level
`{optimizer: sgd, lr: 0.001}` is `"lr=0.001,optimizer=sgd"` (keys sorted, so their order does not
matter); its label keeps the order the space writes: `optimizer=sgd,lr=0.001`.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NoReturn

__all__ = ["level_key", "level_label", "jsonable", "freeze", "FrozenDict"]


def level_key(value: Any) -> str:
    """The canonical text of a level: YAML-like, no spaces; equal levels have equal keys."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, numbers.Real):
        text = repr(float(value))
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(level_key(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={level_key(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    return str(value)


def level_label(value: Any) -> str:
    """A level as people read it and as point labels write it: `level_key`, but a float keeps its
    point (`1.0`), an int its digits, and a mapping its own key order. For display only; compare keys."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={level_label(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(level_label(v) for v in value) + "]"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 1.0 stays 1.0 (lr_decay), 0.001 stays 0.001
    return level_key(value)


def jsonable(value: Any) -> Any:
    """Tuples -> lists and mappings -> plain dicts, recursively (what a config dict holds)."""
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    return value


class FrozenDict(dict):
    """A read-only dict: JSON-able and picklable (Ray copies params), unlike MappingProxyType."""

    def _readonly(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("search space values are read-only; copy with dict(...) to change them")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly  # type: ignore

    def __reduce__(self) -> tuple:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(level_key(self))


def freeze(value: Any) -> Any:
    """YAML values as immutable ones: lists -> tuples, mappings -> read-only dicts."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    return value
