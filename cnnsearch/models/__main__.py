"""`python -m cnnsearch.models`: the registered models and the options each takes (with defaults)."""
from __future__ import annotations

import sys

from ..cli import ArgumentParser
from . import list_models, model_options


def main(argv: list[str] | None = None) -> int:
    ArgumentParser(prog="python -m cnnsearch.models",
                   description="List the registered models and the options each takes, with their defaults "
                               "(the names `--arch` and a space's `model` accept).").parse_args(argv)
    for name in list_models():
        options = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items())
        print(f"{name:14s} {options}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
