"""Tests for cnnsearch.data: loaders on small files written here, the cache, splits, augmentation and batching.

One test loads the real CIFAR-10 from the tests' data root (tests/conftest.py: $CNNSEARCH_DATA_DIR, else the
shared data beside the checkout).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnsearch.data.paths as paths
import cnnsearch.data.sources as sources
from cnnsearch.data import (
    Augment,
    DataError,
    Dataset,
    ImageSplit,
    default_data_dir,
    iterate_batches,
    load_dataset,
    split_train_val,
)
from cnnsearch.data.cache import CACHE_FOLDER

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep every test's user cache in its own temp folder, and the data root explicit (no shared data
    beside the checkout either)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("CNNSEARCH_DATA_DIR", raising=False)
    monkeypatch.setattr(paths, "SHARED_DATA", None)


# --- writers for small data sets in the real on-disk formats --------------------------------------------------


def write_cifar10_batches(root: Path, per_batch: int = 20, seed: int = 0) -> np.ndarray:
    """cifar-10-batches-py with 5 x per_batch train and per_batch test images; returns the train rows (N, 3072)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=per_batch)]
        entry = {"batch_label": name, "labels": labels, "data": data, "filenames": [f"{i}.png" for i in labels]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        if name != "test_batch":
            rows.append(data)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": per_batch}, f, protocol=2)
    return np.concatenate(rows)


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 10) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        entry = {
            # bytes keys, as the Python-2 pickles of the official release hold them
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"fine_labels": [i % 100 for i in range(n)],
            b"coarse_labels": [i % 20 for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{i:02d}" for i in range(100)], b"coarse_label_names": []}, f, 2)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(root: Path, n_train: int = 30, n_test: int = 10, gz: bool = False) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(raw / name, array, gz=gz)
    return arrays


def write_image_tree(
    tree: Path, classes, n_train: int = 3, n_test: int = 1, size: int = 8, fmt: str = "png", mode: str = "RGB"
) -> dict[Path, np.ndarray]:
    """tree/{train,test}/<class>/NN.<fmt>; returns each file's pixels (H, W, C) as written."""
    rng = np.random.default_rng(3)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            folder = tree / split / cls
            for i in range(n):
                folder.mkdir(parents=True, exist_ok=True)
                channels = 3 if mode == "RGB" else 1
                pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
                path = folder / f"{i:02d}.{fmt}"
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(path)  # "L" or "RGB"
                written[path] = pixels
    return written


def forbid_decoding(monkeypatch) -> None:
    """Make any decode of source files fail, so a successful load proves a cache hit."""

    def fail(*args, **kwargs):
        raise AssertionError("source files were decoded although a valid cache exists")

    for name in ("read_cifar_batches", "decode_files", "read_idx", "read_cifar_pickle"):
        monkeypatch.setattr(sources, name, fail)


def assert_same(a: Dataset, b: Dataset) -> None:
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.labels, b.train.labels)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    assert (a.classes, a.mean, a.std, a.default_augment) == (b.classes, b.mean, b.std, b.default_augment)


# --- loaders ---------------------------------------------------------------------------------------------------


def test_cifar10_pickles_load_with_channel_planes_and_stats(tmp_path):
    rows = write_cifar10_batches(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    assert ds.name == "cifar10" and ds.classes == CIFAR10_CLASSES
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.test.images.shape == (20, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert (ds.num_classes, ds.in_channels, ds.image_size, ds.default_augment) == (10, 3, 32, True)
    # A row is the red plane, then green, then blue.
    assert np.array_equal(ds.train.images[7, 1].numpy(), rows[7, 1024:2048].reshape(32, 32))
    pixels = rows.reshape(-1, 3, 1024).transpose(1, 0, 2).reshape(3, -1) / 255.0
    np.testing.assert_allclose(ds.mean, pixels.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(ds.std, pixels.std(axis=1), rtol=1e-9)


def test_cifar10_jpeg_tree_uses_canonical_classes_and_pickles_win(tmp_path):
    write_image_tree(tmp_path / "cifar10-jpeg", CIFAR10_CLASSES, n_train=2, n_test=1, size=32, fmt="jpg")
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    assert ds.classes == CIFAR10_CLASSES and ds.train.images.shape == (20, 3, 32, 32) and len(ds.test) == 10
    assert ds.train.labels.tolist() == [c for c in range(10) for _ in range(2)]
    # JPEG is lossy: compare with PIL's decode of the same file (both libjpeg; IDCTs may differ by a level or two)
    with Image.open(tmp_path / "cifar10-jpeg/train/truck/01.jpg") as img:
        pil = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float()
    assert (ds.train.images[19].float() - pil).abs().mean() < 2
    write_cifar10_batches(tmp_path)
    assert len(load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False).train) == 100


def test_cifar10_jpeg_tree_with_wrong_class_folders_is_rejected(tmp_path):
    write_image_tree(tmp_path / "cifar10-jpeg", ("cat", "dog"), fmt="jpg")
    with pytest.raises(DataError, match="should hold the class folders airplane"):
        load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)


def test_cifar100_uses_fine_labels_and_meta_names(tmp_path):
    write_cifar100(tmp_path)
    ds = load_dataset("cifar100", data_dir=tmp_path, download=False, progress=False)
    assert ds.num_classes == 100 and ds.classes[:2] == ("class00", "class01")
    assert ds.train.labels.tolist() == [i % 100 for i in range(30)] and ds.test.images.shape == (10, 3, 32, 32)
    assert ds.default_augment


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path, download=False, progress=False)
    assert ds.train.images.shape == (30, 1, 28, 28) and ds.test.images.shape == (10, 1, 28, 28)
    assert torch.equal(ds.train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert ds.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert ds.classes == tuple("0123456789") and not ds.default_augment and ds.in_channels == 1


def test_truncated_idx_file_is_a_data_error(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST/raw/train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", data_dir=tmp_path, download=False, progress=False)


def test_imagefolder_rgb_mixed_formats(tmp_path):
    tree = tmp_path / "pets"
    written = write_image_tree(tree, ("dog", "cat"), n_train=3, n_test=2, size=12, fmt="png")
    ds = load_dataset(f"imagefolder:{tree}", progress=False)
    assert ds.name == f"imagefolder:{tree.resolve()}"
    assert ds.classes == ("cat", "dog") and ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.train.images.shape == (6, 3, 12, 12) and ds.test.labels.tolist() == [0, 0, 1, 1]
    assert ds.default_augment
    # PNG is lossless: the decoded pixels are the written ones
    assert np.array_equal(ds.train.images[3].permute(1, 2, 0).numpy(), written[tree / "train/dog/00.png"])
    # A JPEG, and a BMP (which only PIL decodes), among PNGs decode too
    Image.fromarray(written[tree / "train/dog/00.png"]).save(tree / "train/dog/98.jpeg")
    Image.fromarray(written[tree / "train/dog/01.png"]).save(tree / "train/dog/99.bmp")
    ds = load_dataset(f"imagefolder:{tree}", progress=False)
    bmp = ds.train.images[7].permute(1, 2, 0).numpy()  # sorted last in dog/: 00, 01, 02 .png, 98.jpeg, 99.bmp
    assert len(ds.train) == 8 and np.array_equal(bmp, written[tree / "train/dog/01.png"])


def test_imagefolder_grayscale_when_the_first_image_is(tmp_path):
    tree = tmp_path / "digits"
    write_image_tree(tree, ("a", "b"), mode="L", fmt="png")
    # a colour image later in the tree is converted to grey
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tree / "train/b/zz.png")
    ds = load_dataset(f"imagefolder:{tree}", progress=False)
    assert ds.in_channels == 1 and ds.train.images.shape == (7, 1, 8, 8) and not ds.default_augment
    assert int(ds.train.images[-1].float().mean().round()) == 200


def test_imagefolder_size_mismatch_names_the_file_and_sizes(tmp_path):
    tree = tmp_path / "mixed"
    write_image_tree(tree, ("a", "b"), size=8)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tree / "test/b/odd.png")
    with pytest.raises(DataError) as info:
        load_dataset(f"imagefolder:{tree}", progress=False)
    message = str(info.value)
    assert "odd.png" in message and "12x10" in message and "8x8" in message and "\n" not in message


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="needs train/ and test/"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}")
    tree = tmp_path / "stray"
    write_image_tree(tree, ("a",))
    write_image_tree(tree, ("b",), n_train=0)  # test/b without train/b
    with pytest.raises(DataError, match="missing from train/: b"):
        load_dataset(f"imagefolder:{tree}")


def test_unknown_name_lists_valid_names():
    with pytest.raises(DataError, match="valid names: cifar10, cifar100, mnist, imagefolder:PATH"):
        load_dataset("imagenet")


# --- missing data --------------------------------------------------------------------------------------------


def test_missing_data_offline_names_paths_and_fixes(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and str(tmp_path / "cifar10-jpeg") in message
    assert "--data-dir" in message and "CNNSEARCH_DATA_DIR" in message and "\n" not in message
    with pytest.raises(DataError, match=r"mnist not found: looked for .*MNIST/raw"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    # Simulate an offline machine deterministically (a real attempt could hang, or succeed online).
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "root", download=True, progress=False)
    message = str(info.value)
    assert "downloading it to" in message and "failed" in message and "go online" in message
    assert "\n" not in message


def test_default_data_dir_env_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "cnnsearch" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "cnnsearch" / "data"
    monkeypatch.setenv("CNNSEARCH_DATA_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"
    write_mnist(tmp_path / "mine")
    assert len(load_dataset("mnist", progress=False).train) == 30  # data_dir=None uses it
    # `export CNNSEARCH_DATA_DIR=$(unpack.sh ...)` exports "" when the command fails: an error, not a fallback.
    for value, message in (("", "is set but empty"), (str(tmp_path / "mine" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"),
                                                       "is not a folder")):
        monkeypatch.setenv("CNNSEARCH_DATA_DIR", value)
        with pytest.raises(DataError, match=message) as info:
            load_dataset("mnist", progress=False)
        assert "\n" not in str(info.value)


def test_shared_data_beside_a_checkout_is_unpacked_once(tmp_path, monkeypatch, capsys):
    """Without --data-dir or $CNNSEARCH_DATA_DIR, a checkout with ../shared/data/unpack.sh beside it uses
    its .data/, which that script fills on first use (with a message); a failing script is a DataError."""
    checkout, shared = tmp_path / "checkout", tmp_path / "shared" / "data"
    write_mnist(shared)
    shared.joinpath("unpack.sh").write_text(
        'set -e; mkdir -p "$1"; [ -e "$1/MNIST" ] || cp -r "$(dirname "$0")/MNIST" "$1/MNIST"; echo "$1"\n')
    monkeypatch.setattr(paths, "CHECKOUT", checkout)
    monkeypatch.setattr(paths, "SHARED_DATA", shared)
    assert default_data_dir() == checkout / ".data" and not (checkout / ".data").exists()  # nothing unpacked yet
    assert len(load_dataset("mnist", progress=False).train) == 30
    assert (checkout / ".data" / "MNIST" / "raw").is_dir()
    assert f"unpacking the data in {shared} into {checkout / '.data'}" in capsys.readouterr().err
    assert len(load_dataset("mnist", progress=False).train) == 30
    assert "unpacking" not in capsys.readouterr().err  # once
    shared.joinpath("unpack.sh").write_text('echo "unpack.sh: no space left" >&2; exit 1\n')
    with pytest.raises(DataError, match=r"unpacking .* failed \(unpack.sh: no space left\); set CNNSEARCH_DATA_DIR"):
        load_dataset("mnist", progress=False)


# --- the decoded-tensor cache -----------------------------------------------------------------------------------


def _cache_file(root: Path) -> Path:
    files = list((root / CACHE_FOLDER).glob("*.tensors"))
    assert len(files) == 1, files
    return files[0]


def test_second_load_is_a_cache_hit(tmp_path, monkeypatch):
    write_cifar10_batches(tmp_path)
    first = load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    assert _cache_file(tmp_path).stat().st_size > 120 * 3072
    forbid_decoding(monkeypatch)
    assert_same(first, load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False))


def test_cache_misses_when_a_source_file_changes(tmp_path):
    write_cifar10_batches(tmp_path, seed=0)
    first = load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    write_cifar10_batches(tmp_path, seed=1)  # same names and sizes, new pixels and mtimes
    batch = tmp_path / "cifar-10-batches-py/data_batch_1"
    os.utime(batch, ns=(batch.stat().st_atime_ns, batch.stat().st_mtime_ns + 10**9))  # even on coarse clocks
    second = load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    assert not torch.equal(first.train.images, second.train.images)


def test_image_tree_cache_misses_when_an_image_is_added_or_rewritten(tmp_path):
    tree = tmp_path / "tree"
    write_image_tree(tree, ("a", "b"), size=8)
    assert len(load_dataset(f"imagefolder:{tree}", progress=False).train) == 6
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tree / "train/a/new.png")
    assert len(load_dataset(f"imagefolder:{tree}", progress=False).train) == 7
    path = tree / "train/a/new.png"  # rewritten in place: same name, same folder mtime
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # even on coarse clocks
    assert int(load_dataset(f"imagefolder:{tree}", progress=False).train.images[3].max()) == 9  # a/: 00, 01, 02, new


@pytest.mark.parametrize("damage", ["flip-pixel-byte", "flip-digit-of-mean", "break-header-json", "truncate"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, monkeypatch, damage):
    write_mnist(tmp_path)
    fresh = load_dataset("mnist", data_dir=tmp_path, download=False, progress=False)
    path = _cache_file(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip-pixel-byte":
        data[-(10 * 784 + 100)] ^= 0xFF  # inside the test images
    elif damage == "flip-digit-of-mean":  # still valid JSON: only the header checksum can tell
        digit = data.index(b'"mean": [0.') + len(b'"mean": [0.')
        data[digit] ^= 0x01  # "0.4..." becomes "0.5...", say
    elif damage == "break-header-json":
        data[data.index(b'"version"') + 9] ^= 0x01  # the colon after "version" becomes a semicolon
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="is damaged"):
        rebuilt = load_dataset("mnist", data_dir=tmp_path, download=False, progress=False)
    assert_same(fresh, rebuilt)
    # The rebuilt cache is whole again: it loads without warnings and without decoding.
    forbid_decoding(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(fresh, load_dataset("mnist", data_dir=tmp_path, download=False, progress=False))


def test_read_only_data_dir_caches_in_user_folder(tmp_path, monkeypatch):
    root = tmp_path / "readonly"
    write_mnist(root)
    for folder in (root / "MNIST/raw", root / "MNIST", root):
        folder.chmod(0o555)
    try:
        first = load_dataset("mnist", data_dir=root, download=False, progress=False)
        assert not (root / CACHE_FOLDER).exists()
        cached = list((tmp_path / "xdg-cache/cnnsearch/tensors").glob("mnist-idx-*.tensors"))
        assert len(cached) == 1
        forbid_decoding(monkeypatch)
        assert_same(first, load_dataset("mnist", data_dir=root, download=False, progress=False))
    finally:
        for folder in (root, root / "MNIST", root / "MNIST/raw"):
            folder.chmod(0o755)


def test_failed_cache_write_leaves_no_file(tmp_path, monkeypatch):
    write_mnist(tmp_path)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.warns(RuntimeWarning, match="could not write the data cache"):
        ds = load_dataset("mnist", data_dir=tmp_path, download=False, progress=False)
    assert len(ds.train) == 30
    leftovers = list((tmp_path / CACHE_FOLDER).iterdir()) + list((tmp_path / "xdg-cache").rglob("*.tensors"))
    assert leftovers == []


# --- real CIFAR-10 ---------------------------------------------------------------------------------------------


def test_real_cifar10(data_root, monkeypatch):
    root = data_root
    monkeypatch.setenv("CNNSEARCH_DATA_DIR", str(root))
    monkeypatch.delenv("XDG_CACHE_HOME")  # a read-only data root then caches where later runs find it
    ds = load_dataset("cifar10", download=False, progress=False)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (50000, 10000, 10)
    assert ds.train.images.shape[1:] == (3, 32, 32) and ds.classes == CIFAR10_CLASSES
    assert ds.train.labels.bincount().tolist() == [5000] * 10
    np.testing.assert_allclose(ds.mean, (0.4913, 0.4821, 0.4465), atol=2e-3)
    np.testing.assert_allclose(ds.std, (0.2470, 0.2435, 0.2616), atol=6e-3)


# --- splits ----------------------------------------------------------------------------------------------------


def make_dataset(per_class=(50, 50, 50, 50), size: int = 4) -> Dataset:
    """Each train image carries its index in its first two pixels, so tests can tell images apart."""
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(per_class)])
    n = len(labels)
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256
    images[:, 0, 0, 1] = torch.arange(n) // 256
    test = ImageSplit(images[:4].clone(), labels[:4].clone())
    classes = tuple(f"c{i}" for i in range(len(per_class)))
    return Dataset("toy", ImageSplit(images, labels), test, classes, (0.5,), (0.25,), False)


def ids(split: ImageSplit) -> list[int]:
    return (split.images[:, 0, 0, 0].long() + 256 * split.images[:, 0, 0, 1].long()).tolist()


def test_split_is_stratified_disjoint_and_complete():
    ds = make_dataset()
    train, val = split_train_val(ds, val_size=42, seed=0)
    counts = val.labels.bincount(minlength=4).tolist()
    assert sum(counts) == 42 and max(counts) - min(counts) <= 1  # 42 = 11 + 11 + 10 + 10
    assert set(ids(train)).isdisjoint(ids(val)) and len(set(ids(train))) == len(train)
    assert sorted(ids(train) + ids(val)) == list(range(200))
    # labels travel with their images
    assert torch.equal(ds.train.labels[torch.tensor(ids(val))], val.labels)
    assert len(ds.test) == 4  # untouched


def test_split_shares_fairly_when_a_class_is_small():
    ds = make_dataset(per_class=(3, 40, 40))
    _, val = split_train_val(ds, val_size=21, seed=5)
    counts = val.labels.bincount(minlength=3).tolist()
    assert counts[0] == 2 and sorted(counts[1:]) == [9, 10]  # the small class keeps one image for training


def test_split_is_deterministic_and_ignores_global_rng():
    ds = make_dataset()
    torch.manual_seed(1)
    a_train, a_val = split_train_val(ds, val_size=40, seed=3)
    torch.manual_seed(2)
    torch.rand(100)
    b_train, b_val = split_train_val(ds, val_size=40, seed=3)
    assert ids(a_train) == ids(b_train) and ids(a_val) == ids(b_val)
    _, c_val = split_train_val(ds, val_size=40, seed=4)
    assert ids(c_val) != ids(a_val)


def test_train_subset_per_class_nested_and_val_unchanged():
    ds = make_dataset()
    full_train, val = split_train_val(ds, val_size=40, seed=0)
    small, val_small = split_train_val(ds, val_size=40, seed=0, train_subset=5)
    larger, _ = split_train_val(ds, val_size=40, seed=0, train_subset=20)
    assert small.labels.bincount().tolist() == [5, 5, 5, 5] and len(full_train) == 160
    assert ids(val_small) == ids(val) and set(ids(small)) <= set(ids(larger)) <= set(ids(full_train))
    assert set(ids(small)).isdisjoint(ids(val))


def test_split_rejects_impossible_requests_with_one_line():
    ds = make_dataset()
    for kwargs, pattern in (
        ({"val_size": 197}, "val_size=197 is too large"),
        ({"val_size": -1}, "val_size must be"),
        ({"train_subset": 0}, "train_subset must be"),
        ({"val_size": 40, "train_subset": 41}, "train_subset=41 per class is too large: class 'c0' has only 40"),
    ):
        with pytest.raises(ValueError, match=pattern) as info:
            split_train_val(ds, **kwargs)
        assert "\n" not in str(info.value)
    assert len(split_train_val(ds, val_size=196)[0]) == 4  # the most possible: one per class left


# --- augmentation ----------------------------------------------------------------------------------------------


def distinct_images(b: int = 64, c: int = 3, size: int = 8) -> torch.Tensor:
    """(B, C, H, W) uint8 with no zero pixels and an asymmetric pattern, so shifts and mirrors are visible."""
    base = torch.arange(1, c * size * size + 1).view(1, c, size, size) % 250 + 1
    return (base + torch.arange(b).view(b, 1, 1, 1)).clamp(max=255).to(torch.uint8)


def test_augment_is_deterministic_per_generator_state():
    images = distinct_images()
    aug = Augment()
    a = aug(images, torch.Generator().manual_seed(0))
    b = aug(images, torch.Generator().manual_seed(0))
    c = aug(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == images.shape and a.device == images.device


def test_augment_crop_shifts_content_and_pads_with_zeros():
    images = distinct_images(size=8)
    out = Augment(crop_padding=2, flip=False)(images, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    shifts = []
    for i in range(len(images)):
        windows = {(dy, dx): padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)}
        matches = [offset for offset, window in windows.items() if torch.equal(out[i], window)]
        assert len(matches) == 1, f"image {i} is not a crop of its padded self"
        shifts.append(matches[0])
    assert len(set(shifts)) > 10  # offsets really vary over 5 x 5 choices
    assert (out == 0).any() and (images != 0).all()  # zero padding shows in shifted crops
    assert any(s != (2, 2) and not torch.equal(out[i], images[i]) for i, s in enumerate(shifts))


def test_augment_flip_mirrors_about_half():
    images = distinct_images()
    out = Augment(crop_padding=0, flip=True)(images, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(out[i], images[i].flip(-1)) for i in range(len(images))]
    kept = [torch.equal(out[i], images[i]) for i in range(len(images))]
    assert all(m != k for m, k in zip(mirrored, kept))  # each image is exactly one of the two
    assert 16 <= sum(mirrored) <= 48
    assert Augment(crop_padding=0, flip=False)(images, torch.Generator()) is images


def test_augment_validates_arguments():
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)
    with pytest.raises(ValueError, match="flip"):
        Augment(flip="yes")
    with pytest.raises(ValueError, match="uint8"):
        Augment()(torch.zeros(2, 3, 8, 8), torch.Generator())


# --- batches ---------------------------------------------------------------------------------------------------


def test_shuffled_epoch_covers_every_example_once():
    split = make_dataset(per_class=(26, 25, 25, 25)).train  # 101 examples
    gen = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(split, 16, shuffle=True, generator=gen, augment=None))
    assert [len(labels) for _, labels in batches] == [16] * 6 + [5]
    seen = [i for images, _ in batches for i in ids(ImageSplit(images, torch.zeros(len(images), dtype=torch.int64)))]
    assert sorted(seen) == list(range(101)) and seen != list(range(101))
    # labels stay with their images
    labels = torch.cat([labels for _, labels in batches])
    assert torch.equal(split.labels[torch.tensor(seen)], labels)


def test_batches_drop_last_order_and_determinism():
    split = make_dataset().train  # 200 examples
    assert [len(x) for x, _ in iterate_batches(split, 64, shuffle=False, drop_last=True)] == [64, 64, 64]
    in_order = torch.cat([x for x, _ in iterate_batches(split, 64, shuffle=False)])
    assert torch.equal(in_order, split.images)

    def epoch(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([x for x, _ in iterate_batches(split, 32, shuffle=True, generator=gen, augment=Augment())])

    assert torch.equal(epoch(0), epoch(0)) and not torch.equal(epoch(0), epoch(1))
    with pytest.raises(ValueError, match="batch_size"):
        iterate_batches(split, 0, shuffle=True)


def test_batches_with_augment_change_pixels_not_labels():
    split = ImageSplit(distinct_images(b=40, size=8), torch.arange(40) % 4)
    gen = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(split, 40, shuffle=False, generator=gen, augment=Augment(crop_padding=2)))
    images, labels = batches[0]
    assert torch.equal(labels, split.labels) and not torch.equal(images, split.images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_with_cuda_generator():
    split = make_dataset().train.to("cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    batches = list(iterate_batches(split, 48, shuffle=True, generator=gen, augment=Augment()))
    assert all(x.is_cuda and y.is_cuda for x, y in batches)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(split.labels.tolist())


# --- value types -----------------------------------------------------------------------------------------------


def test_image_split_validates_and_moves():
    with pytest.raises(ValueError, match="uint8"):
        ImageSplit(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ImageSplit(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    split = ImageSplit(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    assert len(split) == 2 and split.to("cpu") is split
    bad_labels = ImageSplit(split.images, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="outside 0..3"):
        Dataset("bad", bad_labels, split, ("a", "b", "c", "d"), (0.5,) * 3, (0.2,) * 3, True)
