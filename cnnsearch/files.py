"""Files that are replaced whole or not at all (checkpoints, metrics): written beside the target, then renamed."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["replaced"]


@contextlib.contextmanager
def replaced(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path` to write; when the block ends without an error it takes
    `path`'s place (one rename), so a full disk or a kill never leaves `path` half-written. The
    temporary file goes whatever happens."""
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
