"""Where an experiment runs: its folder, the Ray cluster, and NVIDIA MPS for trials that share a GPU.

- The folder: a new experiment claims `STORAGE/NAME` with an exclusive create (`os.mkdir` fails when the
  folder exists), so of two runs started at once with the same --name exactly one gets it. While a run (new
  or --resume) goes on, it holds an advisory lock on the folder: a second --resume of the same experiment is
  refused, and the kernel drops the lock when the driver dies, even by SIGKILL. Object stores (s3://, gs://)
  have neither: there the claim is a check and then a write.
- The cluster: a new local one, or an existing one at --address; either way one that runs anybody's code
  (no token authentication) is refused. Ray's `ray start --head` turns token authentication on only when
  RAY_AUTH_MODE=token is set or a token already exists on that machine (Ray 2.60); otherwise anyone who can
  reach the head's port can submit jobs to it (CVE-2023-48022, "ShadowRay"). After the driver has joined a
  cluster, one call to the cluster's GCS without a token tells: a protected cluster answers UNAUTHENTICATED.
- MPS: without it CUDA time-slices a GPU between processes, so four trials at `--gpus-per-trial 0.25` whose
  steps are CUDA graphs train no faster together than one alone (bench/RESULTS.md, GPU speed: 0.9-1.2x);
  under MPS their kernels run at the same time (1.2-2.8x). The daemon gets folders of its own, so it neither
  needs root nor touches a daemon the user already runs; processes that start while
  `CUDA_MPS_PIPE_DIRECTORY` names its folder (the Ray cluster this run starts, and its workers) are its clients.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

from pyarrow import fs as pafs

from search_spaces import STATE_FILE

from .options import RunError, RunOptions

__all__ = ["claim_folder", "connect", "start_ray", "require_token_auth", "answers_without_token", "MPSError", "mps_daemon",
           "CONTROL"]


# ------------------------------------------------------------------------------------------ folder
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


# ----------------------------------------------------------------------------------------- cluster
README_SECTION = 'README, "Several machines"'
TOKEN_FILE = "~/.ray/auth_token"  # where `ray start` and ray.init() keep the cluster token


def require_token_auth(address: str | None) -> None:
    """RunError (one line) when the cluster this process joined answers callers without its token.
    Skipped where the user opted out (RAY_AUTH_MODE=disabled) and for ray:// (Ray Client) addresses,
    whose GCS is not reachable from here."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or (address or "").startswith("ray://"):
        return
    import ray

    gcs = ray.get_runtime_context().gcs_address
    if not answers_without_token(gcs):
        return
    ray.shutdown()  # leave it before saying so: a notebook may go on to start a cluster of its own
    where = address or "the cluster already running on this machine"
    raise RunError(f"the Ray cluster at {where} ({gcs}) runs code for anyone who can reach it: it has no token "
                   f"authentication; restart it with RAY_AUTH_MODE=token ({README_SECTION}), or set "
                   "RAY_AUTH_MODE=disabled to run on it anyway")


def answers_without_token(gcs: str) -> bool:
    """Whether the GCS at HOST:PORT answers a call that carries no token. RunError if it cannot be asked."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    # A bare channel: Ray adds its token only to the channels it makes itself.
    with grpc.insecure_channel(gcs) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=10)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return False
            raise RunError(f"cannot check the Ray cluster at {gcs} for token authentication "
                           f"({exc.code().name}); set RAY_AUTH_MODE=disabled to run without the check") from None
    return True


def connect(address: str):
    """Join the existing cluster at `address`, which must use token authentication; Ray's context. RunError (one
    line) at once when nothing answers there (ray.init would retry for minutes) or the cluster refuses the driver."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():  # `auto`, `local` and addresses without a port are left to Ray
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
        except OSError as exc:
            raise RunError(f"--address {address}: nothing answers at {host}:{port} ({exc.strerror or type(exc).__name__}); "
                           "start the cluster (`ray start --head`) or check the host and port (6379 for HOST:PORT, "
                           "10001 for ray://HOST:PORT)") from None
    # Ray sends its token by itself only to a cluster it finds with address "auto"; to an explicit address only
    # with RAY_AUTH_MODE=token, which it reads once, at import. A cluster without token auth ignores the token.
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(os.environ.get("RAY_AUTH_TOKEN_PATH", "")) or \
            os.path.isfile(os.path.expanduser(TOKEN_FILE)):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    try:
        context = ray.init(address=address)
    except Exception as exc:  # Ray raises several types (ConnectionError, ValueError, RuntimeError)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"--address {address}: cannot connect to a Ray cluster there ({detail}); if it uses token "
                       f"authentication (Ray's default), put its token (`ray get-auth-token` on the head) in "
                       f"{TOKEN_FILE} or RAY_AUTH_TOKEN") from None
    require_token_auth(address)
    return context


def start_ray(options: RunOptions):
    """Join the cluster at `options.address`, or start a local one (unless Ray already runs in this
    process); either must use token authentication. Returns Ray's context (None when already running)."""
    import ray

    if ray.is_initialized():
        return None
    if options.address:
        return connect(options.address)
    # Ray warns on every new local cluster that it enabled token authentication (its default, kept
    # here); the plan's dashboard line already says where the token is.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: not record.getMessage().startswith("Token authentication is enabled for this Ray cluster"))
    # Without --address Ray joins a cluster that `ray start` left running on this machine (or RAY_ADDRESS),
    # and then refuses the resources that describe a new one.
    try:
        context = ray.init(num_cpus=options.num_cpus, num_gpus=options.num_gpus, include_dashboard=options.dashboard,
                           dashboard_host=options.dashboard_host)
    except ValueError as exc:
        if "existing cluster" not in str(exc):
            raise
        raise RunError("--num-cpus/--num-gpus describe a new local cluster, but a Ray cluster is already running here "
                       "(`ray start`, or RAY_ADDRESS): drop them to run on it, or stop it with `ray stop`") from None
    require_token_auth(None)  # a cluster it joined may have been started without a token
    return context


# --------------------------------------------------------------------------------------------- MPS
CONTROL = "nvidia-cuda-mps-control"
_MPS_ENV = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")


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
    env = dict(zip(_MPS_ENV, (os.path.join(folder, "pipe"), os.path.join(folder, "log"))))
    for path in env.values():
        os.makedirs(path)
    started = subprocess.run([control, "-d"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        detail = " ".join((started.stderr or started.stdout or f"exit {started.returncode}").split())[:200]
        raise MPSError(f"--mps: the MPS daemon did not start ({detail}); run without --mps")
    saved = {name: os.environ.get(name) for name in _MPS_ENV}
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
