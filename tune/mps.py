"""NVIDIA MPS for trials that share a GPU: a private control daemon for the length of one experiment.

Without MPS, CUDA time-slices a GPU between processes, so four trials at `--gpus-per-trial 0.25` whose steps
are CUDA graphs train no faster together than one alone (bench/RESULTS.md, GPU speed: 0.9-1.2x). Under MPS
their kernels run at the same time (1.2-2.8x). The daemon gets folders of its own, so it neither needs root
nor touches a daemon the user already runs; processes that start while `CUDA_MPS_PIPE_DIRECTORY` names its
folder (the Ray cluster this run starts, and its workers) become its clients.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

__all__ = ["MPSError", "mps_daemon", "CONTROL"]

CONTROL = "nvidia-cuda-mps-control"
_ENV = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")


class MPSError(RuntimeError):
    """MPS cannot run here; the message is one line that says why and what to do."""


@contextlib.contextmanager
def mps_daemon() -> Iterator[str]:
    """Start an MPS control daemon, point this process's environment (and so every process it starts) at it,
    yield its folder; on exit stop it and restore the environment."""
    control = shutil.which(CONTROL)
    if control is None:
        raise MPSError(f"--mps: {CONTROL} is not on PATH (it comes with the NVIDIA driver on Linux); "
                       "run without --mps, or install the driver's utilities")
    folder = tempfile.mkdtemp(prefix="cnnsearch-mps-")
    env = dict(zip(_ENV, (os.path.join(folder, "pipe"), os.path.join(folder, "log"))))
    for path in env.values():
        os.makedirs(path)
    started = subprocess.run([control, "-d"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        detail = " ".join((started.stderr or started.stdout or f"exit {started.returncode}").split())[:200]
        raise MPSError(f"--mps: the MPS daemon did not start ({detail}); run without --mps")
    saved = {name: os.environ.get(name) for name in _ENV}
    os.environ.update(env)
    try:
        yield folder
    finally:
        subprocess.run([control], input="quit\n", env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=60)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)
