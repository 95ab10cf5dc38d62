"""The experiment folder: claimed by one run, checked writable before Ray starts.

A new experiment claims `STORAGE/NAME` with an exclusive create (`os.mkdir` fails when the folder
exists), so of two runs started at once with the same --name exactly one gets it. While a run (new or
--resume) goes on, it holds an advisory lock on the folder itself: a second --resume of the same
experiment is refused, and the kernel drops the lock when the driver dies, even by SIGKILL. Object
stores (s3://, gs://) have neither: there the claim is a check and then a write, so two runs started
within the same second can still meet.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from pyarrow import fs as pafs

from search_spaces import STATE_FILE

from .options import RunError

__all__ = ["claim_folder"]

# What a new experiment folder holds before Tune saves its first state (nothing --resume could use).
_BEFORE_TUNE_STATE = {STATE_FILE, "tuner.pkl", ".validate_storage_marker"}


@contextlib.contextmanager
def claim_folder(filesystem: pafs.FileSystem, exp_path: str, *, resume: bool, shown: str) -> Iterator[None]:
    """Hold the experiment folder `exp_path` for the duration of the block: a new one is created
    (RunError if it exists), an existing one (`resume`) is locked (RunError if another run holds it).
    Either way the folder must take a file, so unwritable storage fails here, before Ray starts. A new
    folder in which Tune has saved nothing yet when the block raises is removed again, so the name
    stays free for the next try. `shown`: how messages name the folder."""
    local = filesystem.type_name == "local"
    if not resume:
        _create(filesystem, exp_path, shown, local=local)
    try:
        _probe(filesystem, exp_path, shown)
        with _lock(exp_path, shown) if local else contextlib.nullcontext():
            yield
    except BaseException:
        if not resume:
            _release(filesystem, exp_path)
        raise


def _create(filesystem: pafs.FileSystem, exp_path: str, shown: str, *, local: bool) -> None:
    taken = RunError(f"{shown} already exists; pass --resume to finish it, or choose another --name")
    try:
        if local:
            os.makedirs(os.path.dirname(exp_path), exist_ok=True)
            os.mkdir(exp_path)  # atomic: exactly one of two runs racing for this name gets it
            return
        if filesystem.get_file_info(exp_path).type != pafs.FileType.NotFound:
            raise taken
        filesystem.create_dir(exp_path, recursive=True)
    except FileExistsError:
        raise taken from None
    except OSError as exc:
        raise RunError(f"--storage: cannot create {shown} ({_reason(exc)})") from None


def _probe(filesystem: pafs.FileSystem, exp_path: str, shown: str) -> None:
    """Write and delete a file in the folder: Ray would otherwise find out after its 20 s start."""
    path = f"{exp_path}/.cnnsearch-probe-{uuid.uuid4().hex}"
    try:
        with filesystem.open_output_stream(path) as f:
            f.write(b"")
        filesystem.delete_file(path)
    except OSError as exc:
        raise RunError(f"--storage: cannot write into {shown} ({_reason(exc)})") from None


@contextlib.contextmanager
def _lock(exp_path: str, shown: str) -> Iterator[None]:
    import fcntl

    fd = os.open(exp_path, os.O_RDONLY | os.O_DIRECTORY)  # a lock on the folder: no file to leave behind
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{shown} is in use by a run that is still going; wait for it to end, or stop it "
                           "first") from None
        yield
    finally:
        os.close(fd)  # drops the lock


def _release(filesystem: pafs.FileSystem, exp_path: str) -> None:
    """Remove a folder this run created if Tune has saved nothing in it yet."""
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(exp_path))
        if {e.base_name for e in entries} <= _BEFORE_TUNE_STATE:
            filesystem.delete_dir(exp_path)
    except OSError:
        pass  # best effort: a folder left behind is refused by name, never overwritten


def _reason(exc: OSError) -> str:
    return exc.strerror or " ".join(str(exc).split())[:200] or type(exc).__name__
