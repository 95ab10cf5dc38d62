"""`python -m cnnsearch.models`: the registered models and the options each takes (with defaults)."""
from __future__ import annotations

from . import list_models, model_options


def main() -> None:
    for name in list_models():
        options = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items())
        print(f"{name:14s} {options}")


if __name__ == "__main__":
    main()
