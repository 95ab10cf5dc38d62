"""The README's first steps: a fresh checkout finds its data by itself, and the quickstart notebook runs a
search from Python."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def test_fresh_checkout_unpacks_the_shared_data_on_first_use(tmp_path):
    """A checkout beside ../shared/data, no CNNSEARCH_DATA_DIR: the dry run unpacks the data into the
    checkout's .data/ (saying so, once) and checks it there; what the README's Quickstart relies on."""
    if not (SHARED / "unpack.sh").is_file():
        message = f"no shared data beside the checkout ({SHARED})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    checkout, shared = tmp_path / "checkout", tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    for entry in SHARED.iterdir():  # the real script and archives, through links
        (shared / entry.name).symlink_to(entry)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("cnnsearch", "tune", "search_spaces", "analysis"):
        shutil.copytree(REPO / name, checkout / name, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", checkout)
    env = {k: v for k, v in os.environ.items() if k != "CNNSEARCH_DATA_DIR"} | {"PYTHONPATH": str(checkout)}
    command = [sys.executable, "-m", "tune.run", "--space", "ablation", "--budget", "cpu", "--dry-run"]
    first = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert f"unpacking the data in {shared} into {checkout / '.data'}" in first.stderr
    assert f"data: cifar10 found in {checkout / '.data'} (cifar10-jpeg)" in first.stdout
    assert re.search(r"^estimated time: \d+ min at most", first.stdout, re.M)
    again = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "unpacking" not in again.stderr


def test_quickstart_notebook_runs_a_search(data_root, tmp_path, monkeypatch):
    """notebooks/quickstart.ipynb, with its parameters cell set as papermill would: a one-trial space."""
    import nbclient
    import nbformat

    monkeypatch.setenv("CNNSEARCH_DATA_DIR", str(data_root))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    parameters = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert parameters.source.startswith("# What to run")
    parameters.source = (f"SPACE = {str(REPO / 'tests' / 'data' / 'one_trial.yaml')!r}\nBUDGET = 'smoke'\n"
                         f"SCHEDULER = 'fifo'\nSTORAGE = {str(tmp_path)!r}\nNAME = 'nb'")
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert f"1 trials, 0 errored; folder {tmp_path / 'nb'}" in text
    assert re.search(r"test accuracy \d+\.\d\d% on 10000 images", text)
    assert re.search(r"^python -m cnnsearch.train --arch basecnn .*--dataset cifar10 .*--out runs/train/nb-best$", text, re.M)
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the learning curves
