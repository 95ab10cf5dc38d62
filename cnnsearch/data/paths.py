"""Where data sets and tensor caches live when the user does not say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .types import DataError

DATA_DIR_ENV = "CNNSEARCH_DATA_DIR"


def _checkout_root() -> Path | None:
    """The source checkout this package runs from (pyproject.toml above cnnsearch/), or None when installed."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


# On this project's machines the real data sets are kept beside the checkout, with a script that makes a
# data root of them (../shared/data/unpack.sh DEST); the tests find them there too (tests/conftest.py).
CHECKOUT = _checkout_root()
SHARED_DATA = CHECKOUT.parent / "shared" / "data" if CHECKOUT is not None else None


def user_cache_dir() -> Path:
    """cnnsearch's folder in the user cache: $XDG_CACHE_HOME/cnnsearch, else ~/.cache/cnnsearch."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "cnnsearch"


def default_data_dir(*, unpack: bool = False) -> Path:
    """The data root used when no --data-dir is given.

    1. $CNNSEARCH_DATA_DIR. Set but empty, or naming something that is not a folder, is a DataError:
       `export CNNSEARCH_DATA_DIR=$(command)` exports an empty value when the command fails, and falling
       back to another folder then would hide that.
    2. In a checkout with the shared data beside it (../shared/data/unpack.sh), the checkout's .data/;
       with `unpack`, the shared data is unpacked there first if it is not yet (a few seconds, once).
    3. The user cache folder's data/ (where torchvision downloads to).
    """
    if DATA_DIR_ENV in os.environ:
        value = os.environ[DATA_DIR_ENV]
        if not value.strip():
            raise DataError(f"{DATA_DIR_ENV} is set but empty (did the command that set it fail?); set it to a "
                            "data folder, unset it, or pass --data-dir")
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise DataError(f"{DATA_DIR_ENV}={value} is not a folder; set it to a data folder or pass --data-dir")
        return path
    if SHARED_DATA is not None and (SHARED_DATA / "unpack.sh").is_file():
        local = CHECKOUT / ".data"
        if unpack:
            _unpack_shared(local)
        return local
    return user_cache_dir() / "data"


def _unpack_shared(dest: Path) -> None:
    """Run the shared data's unpack.sh into `dest` (idempotent: a quick check once it has run)."""
    if not dest.exists():
        print(f"cnnsearch: unpacking the data in {SHARED_DATA} into {dest} (first use; a few seconds)",
              file=sys.stderr, flush=True)
    done = subprocess.run(["bash", str(SHARED_DATA / "unpack.sh"), str(dest)], capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise DataError(f"unpacking {SHARED_DATA} into {dest} failed ({why}); set {DATA_DIR_ENV} to a data folder "
                        "or pass --data-dir")


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
