"""Which data set lives where: find each named data set under a data root, download it when allowed, decode it.

A finder only lists files (cheap: their names, sizes and mtimes key the cache); decoding is deferred to
Source.decode so that a cache hit never touches the pixels.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode

from .readers import (
    IMAGE_SUFFIXES,
    decode_files,
    list_class_folder,
    probe_mode,
    probe_shape,
    read_cifar_batches,
    read_cifar_pickle,
    read_idx,
)
from .types import DataError, Geometry, ImageSplit

# The canonical CIFAR-10 label order (batches.meta of the official release); the JPEG tree's folders map onto it.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_CLASSES = tuple(str(d) for d in range(10))
BUILTIN_NAMES = ("cifar10", "cifar100", "mnist")
IMAGEFOLDER_PREFIX = "imagefolder:"
VALID_NAMES = ", ".join((*BUILTIN_NAMES, IMAGEFOLDER_PREFIX + "PATH"))

_DOWNLOAD_TIMEOUT_S = 30  # per socket operation: an offline machine whose DNS hangs must still fail, not block


@dataclass(frozen=True)
class Decoded:
    """A data set's pixels and labels, before statistics are added."""

    train: ImageSplit
    test: ImageSplit
    classes: tuple[str, ...]
    default_augment: bool


@dataclass(frozen=True)
class Source:
    """A data set found on disk, not yet decoded."""

    name: str  # canonical data set name, as Dataset.name
    layout: str  # which on-disk format was found, e.g. "cifar10-jpeg"; names the cache file
    root: Path  # the folder holding the data; the cache goes beside it
    # Names (relative to root), sizes and mtimes of every file decoding reads, in a structure whose repr is
    # deterministic (tuples, lists, dicts of str and int): it keys the cache.
    fingerprint: object
    decode: Callable[[], Decoded]


def _stamps(root: Path, paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path relative to root, size in bytes, mtime in ns) of each file."""
    stamps = []
    for path in paths:
        st = path.stat()
        stamps.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def locate(name: str, root: Path, *, download: bool, progress: bool) -> Source:
    """Find data set `name` under `root`, downloading it there first if it is missing and `download` is set."""
    name = name.strip()
    root = Path(os.path.abspath(root))  # absolute: file stamps are paths relative to it
    if name.startswith(IMAGEFOLDER_PREFIX):
        return _find_imagefolder(name[len(IMAGEFOLDER_PREFIX) :])
    builtin = _BUILTINS.get(name.lower())
    if builtin is None:
        raise DataError(f"unknown data set {name!r}; valid names: {VALID_NAMES}")
    source = builtin.find(root)
    if source is not None:
        return source
    tried = " and ".join(str(root / p) for p in builtin.looked_for)
    fix = f"pass --data-dir DIR holding {' or '.join(builtin.looked_for)}, or set CNNSEARCH_DATA_DIR"
    if not download:
        raise DataError(
            f"{builtin.name} not found: looked for {tried}, and downloading is off; {fix}, or turn downloading on"
        )
    try:
        with _quiet(not progress), _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            builtin.download(str(root))
    except Exception as e:  # torchvision raises URLError, RuntimeError, OSError, tarfile errors...: all mean "no data"
        detail = " ".join(str(e).split())[:300] or type(e).__name__
        raise DataError(
            f"{builtin.name} not found: looked for {tried}, and downloading it to {root} failed ({detail}); "
            f"{fix}, or go online"
        ) from None
    source = builtin.find(root)
    if source is None:
        raise DataError(f"{builtin.name} was downloaded to {root} but is still not found there: looked for {tried}")
    return source


# --- CIFAR-10 ------------------------------------------------------------------------------------------------


def _find_cifar10(root: Path) -> Source | None:
    # The lossless pickles win over the JPEG copy when both are present.
    batches = root / "cifar-10-batches-py"
    train_files = [batches / f"data_batch_{i}" for i in range(1, 6)]
    test_files = [batches / "test_batch"]
    if all(p.is_file() for p in train_files + test_files):
        return Source(
            "cifar10",
            "cifar-10-batches-py",
            root,
            _stamps(root, train_files + test_files),
            lambda: _decode_cifar_pickles(train_files, test_files, "labels", CIFAR10_CLASSES),
        )
    tree = root / "cifar10-jpeg"
    if (tree / "train").is_dir() and (tree / "test").is_dir():
        return _image_tree_source("cifar10", "cifar10-jpeg", root, tree, CIFAR10_CLASSES)
    return None


# --- CIFAR-100 -----------------------------------------------------------------------------------------------


def _find_cifar100(root: Path) -> Source | None:
    folder = root / "cifar-100-python"
    train, test, meta = folder / "train", folder / "test", folder / "meta"
    if not all(p.is_file() for p in (train, test, meta)):
        return None

    def decode() -> Decoded:
        names = read_cifar_pickle(meta).get("fine_label_names")
        if not isinstance(names, list) or not names:
            raise DataError(f"{meta} lacks the list 'fine_label_names'")
        return _decode_cifar_pickles([train], [test], "fine_labels", tuple(str(n) for n in names))

    return Source("cifar100", "cifar-100-python", root, _stamps(root, [train, test, meta]), decode)


def _decode_cifar_pickles(train: list[Path], test: list[Path], label_key: str, classes: tuple[str, ...]) -> Decoded:
    return Decoded(
        ImageSplit(*read_cifar_batches(train, label_key)),
        ImageSplit(*read_cifar_batches(test, label_key)),
        classes,
        default_augment=True,
    )


# --- MNIST ---------------------------------------------------------------------------------------------------

_MNIST_FILES = (  # train images, train labels, test images, test labels; each may also be .gz
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _find_mnist(root: Path) -> Source | None:
    raw = root / "MNIST" / "raw"
    found = []
    for stem in _MNIST_FILES:
        path = next((p for p in (raw / stem, raw / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            return None
        found.append(path)

    def decode() -> Decoded:
        train_images, train_labels, test_images, test_labels = (read_idx(p) for p in found)
        return Decoded(
            _mnist_split(train_images, train_labels, found[0]),
            _mnist_split(test_images, test_labels, found[2]),
            MNIST_CLASSES,
            default_augment=False,  # digits: a mirrored 2 is not a 2
        )

    return Source("mnist", "mnist-idx", root, _stamps(root, found), decode)


def _mnist_split(images: np.ndarray, labels: np.ndarray, path: Path) -> ImageSplit:
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{path}: expected (N, H, W) images with N labels, got {images.shape} and {labels.shape}")
    # (N, H, W) -> (N, 1, H, W): one grey channel
    return ImageSplit(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype("int64")))


# --- folders of images: cifar10-jpeg and imagefolder:PATH -------------------------------------------------------


def _find_imagefolder(path_text: str) -> Source:
    if not path_text:
        raise DataError(f"imagefolder needs a path: {IMAGEFOLDER_PREFIX}PATH")
    path = Path(path_text).expanduser().resolve()
    name = f"{IMAGEFOLDER_PREFIX}{path}"
    if not path.is_dir():
        raise DataError(f"{name}: no such folder")
    if not ((path / "train").is_dir() and (path / "test").is_dir()):
        raise DataError(f"{name}: needs train/ and test/ subfolders, each holding one folder of images per class")
    return _image_tree_source(name, "imagefolder", path, path, None)


def _image_tree_source(name: str, layout: str, root: Path, tree: Path, classes: tuple[str, ...] | None) -> Source:
    """A train/ + test/ tree of class folders; `classes` fixes their order (None: sorted train folder names)."""
    train, test = list_class_folder(tree / "train"), list_class_folder(tree / "test")
    if classes is None:
        classes = tuple(train)
        if not classes:
            raise DataError(f"{name}: {tree / 'train'} has no class folders")
    elif set(train) != set(classes):
        found = ", ".join(train) or "none"
        raise DataError(f"{name}: {tree / 'train'} should hold the class folders {', '.join(classes)}; found {found}")
    if stray := sorted(set(test) - set(classes)):
        raise DataError(f"{name}: {tree / 'test'} has class folders missing from train/: {', '.join(stray)}")
    if empty := [c for c in classes if not train[c]]:
        raise DataError(f"{name}: {tree / 'train' / empty[0]} holds no image files")
    if not any(test.values()):
        raise DataError(f"{name}: {tree / 'test'} holds no image files")

    # Names, sizes and mtimes of every file, relative to the tree: moving the data keeps the cache key.
    fingerprint = (classes, train, test)

    def decode() -> Decoded:
        files, labels = [], []  # train files first, then test; class by class, by name within a class
        for split_name, split in (("train", train), ("test", test)):
            for label, cls in enumerate(classes):
                folder = os.path.join(tree, split_name, cls)
                files += [os.path.join(folder, name) for name, _, _ in split.get(cls, ())]
                labels += [label] * len(split.get(cls, ()))
        n_train = sum(len(listed) for listed in train.values())
        # The first training image decides grey or colour; every other image is converted to match.
        mode = probe_mode(files[0])
        # Decode both splits in one call so a test image of another size is reported like a train one.
        images = decode_files(files, mode)  # (N_train + N_test, C, H, W)
        label_tensor = torch.tensor(labels, dtype=torch.int64)  # (N_train + N_test,)
        return Decoded(
            ImageSplit(images[:n_train], label_tensor[:n_train]),
            ImageSplit(images[n_train:], label_tensor[n_train:]),
            classes,
            default_augment=mode == ImageReadMode.RGB,
        )

    return Source(name, layout, root, fingerprint, decode)


# --- registry --------------------------------------------------------------------------------------------------


def _torchvision_download(dataset_class_name: str) -> Callable[[str], None]:
    def download(root: str) -> None:
        import torchvision.datasets

        os.makedirs(root, exist_ok=True)
        getattr(torchvision.datasets, dataset_class_name)(root, train=True, download=True)

    return download


@dataclass(frozen=True)
class _Builtin:
    name: str
    find: Callable[[Path], Source | None]
    download: Callable[[str], None]
    looked_for: tuple[str, ...]  # what find() looks for under the root, for error messages
    geometry: Geometry


_BUILTINS = {
    b.name: b
    for b in (
        _Builtin("cifar10", _find_cifar10, _torchvision_download("CIFAR10"), ("cifar-10-batches-py/", "cifar10-jpeg/"),
                 Geometry(3, 32, 10)),
        _Builtin("cifar100", _find_cifar100, _torchvision_download("CIFAR100"), ("cifar-100-python/",),
                 Geometry(3, 32, 100)),
        _Builtin("mnist", _find_mnist, _torchvision_download("MNIST"), ("MNIST/raw/*-ubyte",), Geometry(1, 28, 10)),
    )
}


@functools.lru_cache(maxsize=64)
def geometry(name: str) -> Geometry | None:
    """The geometry of data set `name` without loading it: a built-in's from its table; an image folder's
    from its class folders and first image, or None when it cannot be read from here (a folder on
    another machine, a broken file), and then only loading the data tells."""
    builtin = _BUILTINS.get(name)
    if builtin is not None:
        return builtin.geometry
    if not name.startswith(IMAGEFOLDER_PREFIX):
        return None
    train = Path(name[len(IMAGEFOLDER_PREFIX) :]).expanduser() / "train"
    try:
        with os.scandir(train) as entries:
            classes = sorted(e.path for e in entries if e.is_dir() and not e.name.startswith("."))
        with os.scandir(classes[0]) as entries:
            first = min(e.path for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and not e.name.startswith("."))
        channels, height, width = probe_shape(first)
    except (OSError, IndexError, ValueError, DataError):
        return None
    return Geometry(1 if channels in (1, 2) else 3, height, len(classes)) if height == width else None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision opens URLs without a timeout; bound each socket operation for the download only.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    # torchvision prints its progress bars and messages unconditionally; swallow them when progress=False.
    if not enabled:
        yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield
