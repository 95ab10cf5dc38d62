"""Package attributes that load on first use (PEP 562), so a command answers bad flags before the
heavy imports (torch, Ray, pandas) its package's modules need."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose public names live in the modules `homes` maps
    them to (relative names, e.g. {"fit": "engine"})."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{homes[name]}", package), name)

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__
