"""The decoded-tensor cache: one file per data set, checked before use, written atomically.

File layout (all integers little-endian):
    8 bytes   magic b"CNNSDATA"
    8 bytes   header length L (uint64)
    4 bytes   zlib.crc32 of the header
    L bytes   UTF-8 JSON header: format version, source key, metadata, and per tensor its name, dtype, shape, crc32
    ...       the tensors' raw bytes, in header order

The source key digests the source files' names, sizes and mtimes plus the format version, so editing, adding
or removing a data file, or a new cache format, misses the cache. A file whose checksums or length do not match
is reported with a warning and rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import torch

from .paths import is_writable_dir, user_cache_dir

FORMAT_VERSION = 1
CACHE_FOLDER = ".cnnsearch-cache"  # made inside the data root, when that is writable
_MAGIC = b"CNNSDATA"
_PREAMBLE = struct.Struct("<8sQI")  # magic, header length, header crc32
_DTYPES = {"uint8": torch.uint8, "int64": torch.int64}
_STALE_TEMP_S = 3600  # temp files older than this were left by a killed writer


def source_key(fingerprint: object, layout: str) -> str:
    """Digest of the cache format, the layout and the source files' fingerprint (names, sizes, mtimes)."""
    # repr of nested tuples/lists/dicts of str and int is deterministic, and one C call for 60,000 files
    text = f"cnnsearch-data-cache v{FORMAT_VERSION} {layout}\n{fingerprint!r}"
    return hashlib.sha256(text.encode()).hexdigest()


def cache_files(root: Path, layout: str) -> list[Path]:
    """Where a cache for data under `root` may live, in order of preference.

    Beside the data first (it moves and is deleted with the data), else in the user cache folder, named with a
    digest of the absolute root so that two data roots never share a file.
    """
    root_digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [root / CACHE_FOLDER / f"{layout}.tensors", user_cache_dir() / "tensors" / f"{layout}-{root_digest}.tensors"]


def read(path: Path, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The tensors and metadata cached at `path` for source `key`, or None when absent, stale or damaged."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as e:
        _warn(f"cannot open the data cache {path} ({e}); decoding again")
        return None
    with f:
        try:
            return _read_open(f, key)
        except (_Damaged, KeyError, TypeError, ValueError) as e:  # the last three: a header that is not ours
            detail = e if isinstance(e, _Damaged) else f"unreadable header, {type(e).__name__}: {e}"
            _warn(f"the data cache {path} is damaged ({detail}); decoding again and rewriting it")
            return None


def write(paths: list[Path], key: str, tensors: dict[str, torch.Tensor], meta: dict) -> Path | None:
    """Write the cache to the first of `paths` whose folder we may write; the path written, or None."""
    tensors = {name: t.contiguous() for name, t in tensors.items()}
    header = json.dumps(
        {
            "version": FORMAT_VERSION,
            "key": key,
            "meta": meta,
            "tensors": [
                {
                    "name": name,
                    "dtype": str(t.dtype).removeprefix("torch."),
                    "shape": list(t.shape),
                    "crc32": zlib.crc32(_bytes_view(t)),
                }
                for name, t in tensors.items()
            ],
        }
    ).encode()
    errors = []
    for path in paths:
        try:
            if not _prepare_folder(path.parent):
                errors.append(f"{path.parent} is read-only")
                continue
            _write_atomically(path, header, tensors)
            return path
        except OSError as e:
            errors.append(f"{path}: {e}")
    _warn(f"could not write the data cache ({'; '.join(errors)}); the next load will decode again")
    return None


class _Damaged(Exception):
    pass


def _read_open(f: BinaryIO, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    preamble = f.read(_PREAMBLE.size)
    if len(preamble) < _PREAMBLE.size:
        raise _Damaged("truncated header")
    magic, header_len, header_crc = _PREAMBLE.unpack(preamble)
    if magic != _MAGIC:
        raise _Damaged("not a cnnsearch cache file")
    file_len = os.fstat(f.fileno()).st_size
    if header_len > file_len:  # a flipped length byte must not make us allocate petabytes
        raise _Damaged("header length beyond the end of the file")
    header_bytes = f.read(header_len)
    if len(header_bytes) != header_len or zlib.crc32(header_bytes) != header_crc:
        raise _Damaged("header checksum mismatch")
    header = json.loads(header_bytes)
    if header.get("version") != FORMAT_VERSION or header.get("key") != key:
        return None  # written by another format version or for other source files: stale, not damaged
    specs = header["tensors"]
    shapes = [tuple(s["shape"]) for s in specs]
    data_len = sum(math.prod(shape) * _DTYPES[s["dtype"]].itemsize for s, shape in zip(specs, shapes))
    if file_len != _PREAMBLE.size + header_len + data_len:
        raise _Damaged(f"{file_len} bytes where the header promises {_PREAMBLE.size + header_len + data_len}")
    tensors = {}
    for spec, shape in zip(specs, shapes):
        tensor = torch.empty(shape, dtype=_DTYPES[spec["dtype"]])
        # Read straight into the tensor's memory: no intermediate copy of the ~180 MB of CIFAR pixels.
        view = _bytes_view(tensor)
        if f.readinto(view) != len(view):
            raise _Damaged(f"tensor {spec['name']} is truncated")
        if zlib.crc32(view) != spec["crc32"]:
            raise _Damaged(f"checksum mismatch in tensor {spec['name']}")
        tensors[spec["name"]] = tensor
    return tensors, header["meta"]


def _write_atomically(path: Path, header: bytes, tensors: dict[str, torch.Tensor]) -> None:
    # Write under a temporary name in the same folder, then rename: a reader sees the old file or the whole new
    # one, and a writer killed midway leaves only a temp file that never carries the cache's name.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".tensors")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private; give it its folder's read/write bits, which the umask shaped
            os.fchmod(f.fileno(), path.parent.stat().st_mode & 0o666)
            f.write(_PREAMBLE.pack(_MAGIC, len(header), zlib.crc32(header)))
            f.write(header)
            for tensor in tensors.values():
                f.write(_bytes_view(tensor))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _prepare_folder(folder: Path) -> bool:
    """Create `folder` if needed; whether we may write there. Also sweeps temp files of killed writers."""
    if not folder.is_dir():
        parent = folder.parent
        if folder.name == CACHE_FOLDER and not is_writable_dir(parent):
            return False  # never create a cache folder inside a read-only data root
        folder.mkdir(parents=True, exist_ok=True)
    if not is_writable_dir(folder):
        return False
    now = time.time()
    for stale in folder.glob(".tmp-*.tensors"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > _STALE_TEMP_S:
                stale.unlink()
    return True


def _bytes_view(tensor: torch.Tensor) -> memoryview:
    """The tensor's memory as a flat, writable byte view (tensor must be contiguous and on the CPU)."""
    return memoryview(tensor.numpy()).cast("B")


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)
