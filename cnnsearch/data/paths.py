"""Where data sets and tensor caches live when the user does not say."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "CNNSEARCH_DATA_DIR"


def user_cache_dir() -> Path:
    """cnnsearch's folder in the user cache: $XDG_CACHE_HOME/cnnsearch, else ~/.cache/cnnsearch."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "cnnsearch"


def default_data_dir() -> Path:
    """The data root used when no --data-dir is given: $CNNSEARCH_DATA_DIR, else <user cache>/data."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "data"


def is_writable_dir(path: Path) -> bool:
    """Whether we may create files in `path`.

    Besides os.access, honour the mode bits: root passes os.access everywhere, but a folder marked
    read-only (like the shared data folder, r-x for all) is a request not to write there.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK) and bool(mode & 0o222)
