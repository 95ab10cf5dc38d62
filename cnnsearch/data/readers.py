"""File formats: CIFAR python pickles, MNIST IDX files and folders of image files, decoded to uint8 tensors.

Every reader raises DataError (one line, naming the file) for a file it cannot use.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from .types import DataError

# The suffixes torchvision's ImageFolder accepts; anything else in a class folder (.DS_Store, notes) is skipped.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_JPEG_SUFFIXES = (".jpg", ".jpeg")
FileStat = tuple[str, int, int]  # (file name, size in bytes, mtime in ns)
_DECODE_CHUNK = 4096  # files per batched decode_jpeg call: bounds the list of encoded buffers held at once


# --- CIFAR python pickles ------------------------------------------------------------------------------------

# A pickle can run arbitrary code; CIFAR batches only need numpy arrays, lists and strings, so allow only the
# globals that rebuild an ndarray (numpy 1.x and 2.x spellings).
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle protocol)
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict[str, object]:
    """One file of cifar-10-batches-py / cifar-100-python, with its keys as str.

    The official files were pickled by Python 2; latin1 turns their byte strings back into str losslessly.
    """
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"cannot read CIFAR pickle {path}: {_one_line(e)}") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR pickle (expected a dict, got {type(entry).__name__})")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def read_cifar_batches(paths: Sequence[Path], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate CIFAR pickle batches into images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    images, labels = [], []
    for path in paths:
        entry = read_cifar_pickle(path)
        if "data" not in entry or label_key not in entry:
            raise DataError(f"{path} lacks the CIFAR keys 'data' and {label_key!r} (has {sorted(entry)})")
        data = np.asarray(entry["data"])
        batch_labels = np.asarray(entry[label_key], dtype=np.int64)
        # Rows are 3072 bytes: the 1024 red values, then green, then blue, each row-major 32x32.
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch_labels):
            raise DataError(
                f"{path}: expected 'data' of shape (N, 3072) uint8 with N labels, "
                f"got {data.dtype} {data.shape} and {len(batch_labels)} labels"
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(batch_labels))
    return torch.cat(images), torch.cat(labels)


# --- MNIST IDX files -------------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format), plain or .gz, as an array of its declared shape."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {_one_line(e)}") from None
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each
    # dimension as a big-endian uint32.
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)) if len(raw) >= header else ()
    if len(raw) < header or len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path}: IDX file is {len(raw)} bytes, which does not match its header (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


# --- folders of image files ------------------------------------------------------------------------------------


def list_class_folder(split_dir: Path) -> dict[str, list[FileStat]]:
    """Image files per class folder of `split_dir`: class name -> (name, size, mtime) of its files, sorted by name.

    Hidden entries are skipped. Plain os.scandir and tuples rather than pathlib: listing and stat-ing CIFAR-10's
    60,000 files is most of a cache hit's time (~0.4 s of ~0.8 s).
    """
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is not a folder")
    with os.scandir(split_dir) as entries:
        class_dirs = sorted((e.name, e.path) for e in entries if e.is_dir() and not e.name.startswith("."))
    files = {}
    for class_name, path in class_dirs:
        found = []
        with os.scandir(path) as entries:
            for e in entries:
                name = e.name
                if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES) and e.is_file():
                    st = e.stat()
                    found.append((name, st.st_size, st.st_mtime_ns))
        found.sort()
        files[class_name] = found
    return files


def probe_mode(path: str | Path) -> ImageReadMode:
    """GRAY when the image at `path` has one channel (plus maybe alpha), else RGB."""
    return ImageReadMode.GRAY if probe_shape(path)[0] in (1, 2) else ImageReadMode.RGB


def probe_shape(path: str | Path) -> tuple[int, int, int]:
    """(channels, height, width) of the image at `path`, as stored (alpha included)."""
    with _torchvision_decoders():
        return tuple(_decode_one(path, _read_bytes(path), ImageReadMode.UNCHANGED).shape)


def decode_files(paths: Sequence[str | Path], mode: ImageReadMode) -> torch.Tensor:
    """Decode image files to one (N, C, H, W) uint8 tensor, C = 1 for GRAY and 3 for RGB.

    JPEGs go through torchvision's batched decode_jpeg (about 40 us per 32x32 image here); other formats through
    decode_image, with PIL as a last resort for the ones it lacks (BMP, TIFF, PPM). All images must be one size.
    """
    if not paths:
        raise DataError("no image files to decode")
    decoded: list[torch.Tensor] = []  # each (C, H, W) uint8
    with _torchvision_decoders():
        for start in range(0, len(paths), _DECODE_CHUNK):
            chunk = paths[start : start + _DECODE_CHUNK]
            buffers = [_read_bytes(p) for p in chunk]
            if all(str(p).lower().endswith(_JPEG_SUFFIXES) for p in chunk):
                try:
                    decoded.extend(decode_jpeg(buffers, mode=mode))
                    continue
                except RuntimeError:
                    pass  # a bad or mislabelled file: decode one by one below to name it
            decoded.extend(_decode_one(p, b, mode) for p, b in zip(chunk, buffers))
    _check_one_size(paths, decoded)
    return torch.stack(decoded)


@contextlib.contextmanager
def _torchvision_decoders() -> Iterator[None]:
    # torchvision 0.29 deprecates its image codecs in favour of TorchCodec and warns on every call (60,000 times
    # for CIFAR-10). They still work, and TorchCodec is not a dependency, so silence just that warning here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
        yield


def _read_bytes(path: str | Path) -> torch.Tensor:
    try:
        with open(path, "rb") as f:
            data = bytearray(f.read())  # writable, as torch.frombuffer wants
    except OSError as e:
        raise DataError(f"cannot read image {path}: {_one_line(e)}") from None
    if not data:  # torch.frombuffer refuses an empty buffer with a message that names no file
        raise DataError(f"cannot decode image {path}: the file is empty (0 bytes)")
    return torch.frombuffer(data, dtype=torch.uint8)


def _decode_one(path: str | Path, data: torch.Tensor, mode: ImageReadMode) -> torch.Tensor:
    if len(data) == 0:
        raise DataError(f"cannot decode image {path}: the file is empty")
    try:
        image = decode_image(data, mode=mode)
        # 16-bit PNGs decode to uint16: keep the high byte
        return image if image.dtype == torch.uint8 else (image.to(torch.int32) >> 8).to(torch.uint8)
    except RuntimeError:
        pass  # not a format torchvision decodes natively; PIL knows more
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            if mode == ImageReadMode.UNCHANGED:
                array = np.asarray(img)
            else:
                array = np.asarray(img.convert("L" if mode == ImageReadMode.GRAY else "RGB"))
    except Exception as e:  # PIL raises many types for bad files; all mean "cannot use this file"
        raise DataError(f"cannot decode image {path}: {_one_line(e)}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _check_one_size(paths: Sequence[str | Path], images: Sequence[torch.Tensor]) -> None:
    h0, w0 = images[0].shape[1:]
    for path, img in zip(paths, images):
        h, w = img.shape[1:]
        if (h, w) != (h0, w0):
            raise DataError(
                f"{path} is {w}x{h} pixels but {paths[0]} is {w0}x{h0}; all images must be one size (resize them first)"
            )
    if h0 != w0:
        raise DataError(f"images must be square, but {paths[0]} and the rest are {w0}x{h0} pixels (crop them first)")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
