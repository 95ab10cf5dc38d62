"""A metric's mode, "max" or "min": checked in one place, and the best value picked by it.

`tune/` and `analysis/` pick bests the same way through these, whether over plain values, rows or a
pandas Series.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["MODES", "mode_error", "best_of", "best_index", "is_better"]

MODES = ("max", "min")

T = TypeVar("T")


def mode_error(mode: object) -> str | None:
    """None if `mode` is "max" or "min", else the complaint, worded to follow the name of the field."""
    return None if mode in MODES else f"must be max or min, got {mode!r}"


def best_of(items: Iterable[T], mode: str, *, key: Callable[[T], Any] | None = None) -> T:
    """The largest of `items` (by `key`) for mode "max", the smallest for "min"; the first of any tie.
    Empty `items` raise ValueError, as `max` does."""
    return (max if mode == "max" else min)(items, key=key)


def best_index(series: Any, mode: str) -> Any:
    """The label of the best value of a pandas Series (NaN skipped): `idxmax` for "max", `idxmin` for "min"."""
    return series.idxmax() if mode == "max" else series.idxmin()


def is_better(value: float, than: float, mode: str) -> bool:
    """Whether `value` is strictly better than `than`: a tie is not an improvement."""
    return value > than if mode == "max" else value < than
