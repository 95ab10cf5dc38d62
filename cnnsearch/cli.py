"""What every command-line entry point shares: one-line errors with exit code 2 (credentials redacted),
and SIGINT/SIGTERM as an exception the command ends on in one line (exit 130/143)."""
from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

__all__ = ["ArgumentParser", "UsageError", "Interrupt", "fail", "redact", "stop_on_signals", "DATA_DIR_HELP"]

EXIT_USAGE = 2
DATA_DIR_HELP = ("data root (default: $CNNSEARCH_DATA_DIR, else .data/ in a checkout with ../shared/data beside it, "
                 "else the user cache folder)")

# Credentials a storage URI can carry: user:password@ (s3://KEY:SECRET@bucket) and query parameters
# such as ?access_key=...&secret_key=...&session_token=... (AWS secrets may contain '/').
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s@/?#]*(?:/[^\s@/?#]*)*@")
_SECRET_PARAM = re.compile(r"([?&;][^=&\s]*(?:key|secret|token|passw|credential|signature|sig)[^=&\s]*=)[^&\s]*",
                           re.IGNORECASE)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (what is wrong, how to get help), not usage + error."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)", prog=self.prog)


def redact(text: str) -> str:
    """`text` with the credentials of any URI in it replaced by ***, for messages, records and reports."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def fail(message: str, *, prog: str | None = None) -> NoReturn:
    """Print `prog: error: MESSAGE` (its first line, credentials redacted) and exit with 2."""
    prog = prog or sys.argv[0]
    first_line = redact(str(message).strip().splitlines()[0]) if str(message).strip() else "error"
    print(f"{prog}: error: {first_line}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


class Interrupt(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM, raised wherever the program was; `code` is the exit status a shell
    reports for that signal (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.code = signum, 128 + signum

    @property
    def how(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM raise Interrupt, so a command ends on its own terms (files
    closed, temporary files removed, one line said) instead of a traceback or a silent kill. The
    exception lands wherever the program is, and library code caught half-way may fail on its own
    while it unwinds (tqdm does, if the signal comes while it makes its lock): once a signal came,
    whatever leaves the block is the Interrupt."""
    received: list[int] = []

    def handler(signum: int, frame) -> None:
        received.append(signum)
        raise Interrupt(signum)

    with _handling(handler):
        try:
            yield
        except Interrupt:
            raise
        except BaseException:
            if received:
                raise Interrupt(received[0]) from None
            raise


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then `stop_on_signals` raises as usual): for writes that
    must land together, such as the checkpoints of seeds trained fused, which resume only from one epoch."""
    # A handler that notes the signal, not a blocked signal mask: torch's threads would take a signal the
    # main thread blocks, and Python runs its handler in the main thread all the same.
    pending: list[int] = []
    try:
        with _handling(lambda signum, frame: pending.append(signum)):
            yield
    finally:
        if pending:
            signal.raise_signal(pending[0])  # now, to the handler that was there before


@contextlib.contextmanager
def _handling(handler) -> Iterator[None]:
    """`handler` for SIGINT and SIGTERM inside the block, the previous handlers after it. Only the main
    thread may set handlers: elsewhere the block runs with them as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


def int_list(text: str) -> tuple[int, ...]:
    """'3,3,3,3' -> (3, 3, 3, 3), for --blocks-per-stage."""
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,2,2,2, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected comma-separated integers such as 2,2,2,2")
    return values
