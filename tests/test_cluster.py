"""The README's multi-node recipe ("Several machines") against a real `ray start` on this machine.

Its head commands, run as the README gives them, start a cluster that refuses callers without the
token, whether or not the machine had a token before, and the runner gets in with the token. A cluster
started the way the README used to say (`ray start --head`, no token on the machine) answers anyone,
and `tune.run` refuses it before running anything.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tune.cluster import answers_without_token

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent  # the venv's `ray`, beside this interpreter


def readme_blocks() -> list[str]:
    """The bash blocks of the README's "Several machines" section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Several machines", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Head:
    """One `ray start --head` from the given commands, in a HOME of its own (with or without a token),
    Ray's temp folder private to the test (so no other process on the machine joins this cluster)."""

    def __init__(self, root: Path, commands: str, token: str | None = None) -> None:
        self.home, self.temp, self.port = root / "home", tempfile.mkdtemp(prefix="rt", dir="/tmp"), free_port()
        self.token_file = self.home / ".ray" / "auth_token"
        self.token_file.parent.mkdir(parents=True)
        if token is not None:
            self.token_file.write_text(token)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
        self.env = env | {"HOME": str(self.home), "PATH": f"{BIN}:{env['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
                          "RAY_TMPDIR": self.temp, "PYTHONPATH": str(REPO)}
        # The README's port, and (to start quickly on a 2-core machine) no dashboard; the auth is untouched.
        commands = commands.replace("--port 6379", f"--port {self.port} --num-cpus 1 --include-dashboard false")
        self.proc = subprocess.Popen(["bash", "-c", commands], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)

    def wait(self) -> subprocess.CompletedProcess:
        out, err = self.proc.communicate(timeout=180)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def tune_run(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tune.run", "--space", str(DATA / "one_trial.yaml"), "--budget",
                                 "smoke", "--no-download", "--address", f"127.0.0.1:{self.port}", *args], cwd=REPO,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self) -> None:
        kill_session(self.proc.pid)
        shutil.rmtree(self.temp, ignore_errors=True)


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (the head's GCS, raylet and workers), nothing else."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == sid:
                os.kill(int(stat.parent.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


def test_readme_recipe_starts_a_token_protected_cluster(tmp_path):
    """The README's head commands on a machine without a token, and plain `ray start --head` there (what
    the README used to say). Started one after the other: at once they time out on a 2-core machine."""
    heads = {}
    try:
        for name, commands in (("readme", readme_blocks()[0]), ("plain", "ray start --head --port 6379")):
            heads[name] = Head(tmp_path / name, commands)
            started = heads[name].wait()
            assert started.returncode == 0, (name, started.stderr[-2000:])
        readme, plain = heads["readme"], heads["plain"]
        assert not answers_without_token(f"127.0.0.1:{readme.port}")  # a caller without the token is turned away
        assert readme.token_file.stat().st_mode & 0o777 == 0o600
        assert "Token authentication is disabled" in started.stderr and answers_without_token(f"127.0.0.1:{plain.port}")

        # The runner, with the token where the README puts it, gets in (and stops at the GPU check);
        # on the open cluster it stops before running or writing anything.
        runs = {"readme": readme.tune_run("--gpus-per-trial", "1", "--storage", str(tmp_path / "readme_runs")),
                "plain": plain.tune_run("--storage", str(tmp_path / "plain_runs"))}
        done = {name: (run.wait(timeout=300), run.communicate()[1]) for name, run in runs.items()}
    finally:
        for head in heads.values():
            head.stop()
    code, err = done["readme"]
    assert code == 2 and "but the cluster has 0 GPU(s)" in err, err[-2000:]
    code, err = done["plain"]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert "has no token authentication; restart it with RAY_AUTH_MODE=token" in err.strip().splitlines()[-1]
    assert not (tmp_path / "plain_runs").exists()


def test_readme_recipe_keeps_a_token_the_machine_has(tmp_path):
    """With a token present, the README's first command keeps it (the cluster then uses it) and makes it private."""
    home = tmp_path / "home"
    token = home / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text(kept := secrets.token_hex(32))
    token.chmod(0o644)
    first = readme_blocks()[0].splitlines()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    proc = subprocess.run(["bash", "-c", first], env=env | {"HOME": str(home), "PATH": f"{BIN}:{env['PATH']}"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert token.read_text() == kept and token.stat().st_mode & 0o777 == 0o600
