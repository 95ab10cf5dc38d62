"""Factor levels as canonical strings, so a level from YAML, JSON or a trial's config compares equal.

`3` and `3.0` are the same level, `true` is not `1`, `[2, 2, 2, 2]` is `"[2,2,2,2]"`, and a multi-key
level `{optimizer: sgd, lr: 0.001}` is `"lr=0.001,optimizer=sgd"` (keys sorted, so order does not matter).
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["level_key", "level_label", "level_labels", "factor_levels", "factor_keys", "is_continuous"]

CONTINUOUS = ("uniform", "loguniform", "randint")  # sampled numbers: no levels, importance only


def level_key(value: Any) -> str:
    """The canonical text of a level: YAML-like, no spaces."""
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
    """A level as people read it: `level_key`, but a float keeps its point (`1.0`) and a mapping its own
    key order (`optimizer=sgd,lr=0.001`, as the space writes it). For display only; compare keys."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={level_label(v)}" for k, v in value.items())
    if isinstance(value, float):
        return repr(value)  # 1.0 stays 1.0 (lr_decay), 0.001 stays 0.001
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(level_label(v) for v in value) + "]"
    return level_key(value)


def level_labels(factor: Mapping[str, Any]) -> dict[str, str]:
    """level key -> display label, for a factor's levels (or choices)."""
    values = factor["levels"] if factor.get("levels") is not None else factor["distribution"][1]
    return {level_key(v): level_label(v) for v in values} if not is_continuous(factor) else {}


def is_continuous(factor: Mapping[str, Any]) -> bool:
    """Whether a factor (as cnnsearch.json stores it) is drawn from a numeric distribution."""
    distribution = factor.get("distribution")
    return factor.get("levels") is None and bool(distribution) and distribution[0] in CONTINUOUS


def factor_levels(factor: Mapping[str, Any]) -> list[str] | None:
    """The level keys of a factor in the space's order (a choice's values for sampled ones);
    None for a continuous distribution."""
    if factor.get("levels") is not None:
        return [level_key(v) for v in factor["levels"]]
    kind, values = factor["distribution"]
    return [level_key(v) for v in values] if kind == "choice" else None


def factor_keys(factor: Mapping[str, Any], train_keys: tuple[str, ...]) -> tuple[str, ...]:
    """The TrainConfig keys a factor sets: its own name, or the keys of its mapping levels."""
    if factor["name"] in train_keys:
        return (factor["name"],)
    values = factor["levels"] if factor.get("levels") is not None else factor["distribution"][1]
    return tuple(dict.fromkeys(k for v in values if isinstance(v, Mapping) for k in v))
