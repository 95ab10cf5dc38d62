"""Shared fixtures: the real data sets (decoded once per session) and small training configs.

Real data comes from $CNNSEARCH_DATA_DIR (CI sets it), else from ../shared/data unpacked into .data/.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _real_data_root() -> Path:
    env = os.environ.get("CNNSEARCH_DATA_DIR")
    if env:
        return Path(env).resolve()  # absolute: the notebook test runs its kernel in analysis/
    local = REPO / ".data"
    if (SHARED / "unpack.sh").exists():
        subprocess.run(["bash", str(SHARED / "unpack.sh"), str(local)], check=True, capture_output=True)
        return local
    message = "real data not found: set CNNSEARCH_DATA_DIR to a folder holding cifar10-jpeg/ and MNIST/ (see README)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _real_data_root()


@pytest.fixture(scope="session")
def cifar10(data_root):
    from cnnsearch.data import load_dataset

    return load_dataset("cifar10", data_dir=data_root, download=False, progress=False)


@pytest.fixture(scope="session")
def mnist(data_root):
    from cnnsearch.data import load_dataset

    return load_dataset("mnist", data_dir=data_root, download=False, progress=False)
