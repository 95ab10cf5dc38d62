"""What every command-line entry point shares: one-line errors with exit code 2."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["ArgumentParser", "UsageError", "fail", "DATA_DIR_HELP"]

EXIT_USAGE = 2
DATA_DIR_HELP = ("data root (default: $CNNSEARCH_DATA_DIR, else .data/ in a checkout with ../shared/data beside it, "
                 "else the user cache folder)")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (what is wrong, how to get help), not usage + error."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)", prog=self.prog)


def fail(message: str, *, prog: str | None = None) -> NoReturn:
    prog = prog or sys.argv[0]
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "error"
    print(f"{prog}: error: {first_line}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def int_list(text: str) -> tuple[int, ...]:
    """'3,3,3,3' -> (3, 3, 3, 3), for --blocks-per-stage."""
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,2,2,2, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected comma-separated integers such as 2,2,2,2")
    return values
