"""Trials fused on their GPU (`tune.run --fuse N`): Tune still runs, reports and stops every trial on its own,
but the trials Tune placed on the same GPU (same node, same GPU ids) that share a network train as one stacked
network in one process (`cnnsearch.fused.fit_fused`: HFTA-style, one set of kernels for all of them).

Three parts, all Ray actors or tasks of this experiment's driver (they end with it):
- each trial (`fused_trial`) joins a group at the `Coordinator`, then only relays: it waits for its own
  epoch's metrics and checkpoint, reports them to Tune with `ray.tune.report` (so ASHA judges it as any trial)
  and returns after its last epoch; when Tune stops it, it leaves the group.
- the `Coordinator` (one per experiment) forms groups (members with the same key; a group starts when it holds
  N members or FUSE_WAIT_S after its first joined), starts an `_Engine` per group on the members' node and GPU,
  and passes each epoch's reports to the members.
- the `_Engine` trains the group with `fit_fused` and posts every epoch's reports. When members have left
  (Tune stopped them), it goes on with the others from this epoch's checkpoints ("regroups"): a stopped
  trial's share of the GPU is not spent on it. The engine runs at most one epoch ahead of its trials, and
  is not a trial itself, so Tune stopping any trial, the first included, never stops the others' training.

A group's members share everything but `cnnsearch.fused.TRIAL_KEYS` (seed, optimizer and its settings) and
start from the same epoch (a trial restored from a checkpoint joins others at that epoch, else trains alone).
The engine's CUDA memory cap is the sum of its members' GPU fractions, its threads the sum of their CPUs.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.tune

from cnnsearch.config import TrainConfig
from cnnsearch.engine import load_checkpoint
from cnnsearch.fused import TRIAL_KEYS
from search_spaces import CHECKPOINT_FILE

from .trainable import checked_config

__all__ = ["Coordinator", "fused_trial", "fuse_key", "fused_capacity", "FUSE_WAIT_S", "start_coordinator"]

# How long a group waits for company after its first member joined: trials that share a GPU start together.
FUSE_WAIT_S = 10.0
LAG_WAIT_S = 60.0  # how long an engine waits for a trial to take its previous report (Coordinator.post)


def fuse_key(config: dict[str, Any]) -> str:
    """What fused trials must share: the flat config without `TRIAL_KEYS`, as sorted JSON."""
    return json.dumps({k: v for k, v in config.items() if k not in TRIAL_KEYS}, sort_keys=True)


def fused_capacity(fuse: int, gpus_per_trial: float, concurrent: int) -> int:
    """How many trials one group holds: `fuse`, but no more than share a GPU (1/gpus_per_trial) or than run at
    once (without GPUs), so a group never waits for members that cannot start beside it."""
    if gpus_per_trial > 0:
        fuse = min(fuse, max(1, int(1 / gpus_per_trial + 1e-9)))
    return max(1, min(fuse, concurrent))


def start_coordinator(data: Any) -> Any:
    """The experiment's coordinator (an actor of this driver's job), holding the data set for the engines."""
    return Coordinator.remote([ray.put(data)])  # in a list: Ray passes the reference, not the data, to the actor


# --------------------------------------------------------------------------------------------- the trial
def fused_trial(params: dict[str, Any], *, coordinator: Any, capacity: int, wait_s: float = FUSE_WAIT_S,
                after_epoch: Callable[[dict[str, Any]], None] | None = None) -> None:
    """A Tune trial whose training runs in its group's engine: join, then report each epoch the engine posts.
    `after_epoch(metrics)` runs after each report (tune/faults.py injects failures there)."""
    started_at = time.time()
    config = checked_config(params).to_dict()  # bad params raise here, not in the engine
    checkpoint, epoch = None, 0
    restored = ray.tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            path = Path(folder) / CHECKPOINT_FILE
            epoch = load_checkpoint(path)["epoch"]  # the safe loader: a planted file is refused here
            checkpoint = path.read_bytes()
    context = ray.tune.get_context()
    resources = context.get_trial_resources().required_resources
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    placement = {"node": ray.get_runtime_context().get_node_id(), "gpus": gpu_ids,
                 "gpu_share": float(resources.get("GPU", 0.0)), "cpus": float(resources.get("CPU", 1.0))}
    # A retried trial is a new member: an engine still training its previous run posts to the old id, in vain.
    trial_id = f"{context.get_trial_id()}-{uuid.uuid4().hex[:8]}"
    key = json.dumps([fuse_key(config), epoch, placement["node"], gpu_ids])
    ray.get(coordinator.join.remote(trial_id, key, capacity, wait_s,
                                    {"trial_id": trial_id, "config": config, "checkpoint": checkpoint}, placement))
    try:
        while True:
            item = ray.get(coordinator.next.remote(trial_id))
            if "error" in item:
                raise RuntimeError(f"the fused group's engine failed: {item['error']}")
            metrics = {**item["metrics"], "started_at": started_at}
            if item["checkpoint"] is None:  # dropped while this trial lagged: a later report carries one
                ray.tune.report(metrics)
            else:
                with tempfile.TemporaryDirectory() as folder:
                    (Path(folder) / CHECKPOINT_FILE).write_bytes(item["checkpoint"])
                    ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder))
            if after_epoch is not None:
                after_epoch(metrics)
            if metrics["status"] != "running":
                return
    finally:  # after the last epoch, or when Tune stops this trial (its report raises SystemExit)
        coordinator.leave.remote(trial_id)


# --------------------------------------------------------------------------------------- the coordinator
@ray.remote(num_cpus=0)
class Coordinator:
    """Groups, mailboxes and engines of one experiment (an asyncio actor: members wait on it concurrently)."""

    def __init__(self, data_box: list[Any]) -> None:
        self.data_box = data_box
        self.open: dict[str, dict[str, Any]] = {}  # key -> the group still taking members
        self.boxes: dict[str, _Mailbox] = {}  # trial id -> its undelivered reports
        self.left: set[str] = set()
        self.slow: set[str] = set()  # members the engines no longer wait for
        self.groups = 0
        self.idle: dict[tuple, list[Any]] = {}  # (node, GPU ids) -> engines without a group

    async def join(self, trial_id: str, key: str, capacity: int, wait_s: float, member: dict[str, Any],
                   placement: dict[str, Any]) -> int:
        """Add a member to the open group of `key` (or a new one); returns the group's number."""
        self.boxes[trial_id] = _Mailbox()
        self.left.discard(trial_id)
        group = self.open.get(key)
        if group is not None and any(m["config"] == member["config"] for m in group["members"]):
            group = None  # the same trial twice (a repeated draw) trains beside itself, not in its stack
            self._launch(key)
        if group is None:
            self.groups += 1
            group = self.open[key] = {"id": self.groups, "members": [], "placement": placement}
            asyncio.get_running_loop().call_later(wait_s, self._launch, key, group["id"])
        group["members"].append({**member, "placement": placement})
        if len(group["members"]) >= capacity:
            self._launch(key)
        return group["id"]

    def _launch(self, key: str, only: int | None = None) -> None:
        group = self.open.get(key)
        if group is None or (only is not None and group["id"] != only):
            return  # launched already (full), or a newer group's timer
        del self.open[key]
        members = [m for m in group["members"] if m["trial_id"] not in self.left]
        if members:
            asyncio.get_running_loop().create_task(self._run(members, group["placement"]))

    async def _run(self, members: list[dict[str, Any]], placement: dict[str, Any]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        gpus = placement["gpus"]
        where = (placement["node"], tuple(gpus))
        idle = self.idle.setdefault(where, [])
        # A finished group's engine trains the next group on its GPU: no new process, imports or data transfer.
        engine = idle.pop() if idle else _Engine.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(placement["node"], soft=False),
            # Zero GPUs declared (the members hold them); Ray leaves CUDA_VISIBLE_DEVICES to us then.
            runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": ",".join(gpus)}} if gpus else None).remote(self.data_box)
        threads = max(1, int(sum(m["placement"]["cpus"] for m in members)))
        share = min(1.0, sum(m["placement"]["gpu_share"] for m in members))
        me = ray.get_runtime_context().current_actor
        try:
            await engine.run.remote([{k: m[k] for k in ("trial_id", "config", "checkpoint")} for m in members],
                                    me, threads, share if gpus else 0.0)
        except Exception as exc:  # noqa: BLE001  (whatever failed, every member still waiting must hear it)
            ray.kill(engine)  # in whatever state it failed
            message = " ".join(str(exc).split())[-300:]
            for m in members:
                if m["trial_id"] not in self.left:
                    self.boxes[m["trial_id"]].put({"error": message})
        else:
            idle.append(engine)

    async def next(self, trial_id: str) -> dict[str, Any]:
        """The member's next report (metrics and checkpoint bytes), or {"error": ...}; waits for it."""
        return await self.boxes[trial_id].get()

    def leave(self, trial_id: str) -> None:
        self.left.add(trial_id)
        self.boxes.pop(trial_id, None)  # and what it will never read

    async def post(self, reports: list[tuple[str, dict[str, Any], bytes]]) -> list[str]:
        """An engine's epoch: each member's metrics and checkpoint; returns the members that have left.

        Returns once every member has taken its previous report (Tune continued it past the one before), so the
        engine runs at most one epoch ahead of its trials and a trial Tune stopped leaves within two epochs. A
        member that has not taken it within LAG_WAIT_S (its trial stopped, its thread held by an actor Tune keeps
        for reuse) is not waited for again."""
        for trial_id, metrics, checkpoint in reports:
            box = self.boxes.get(trial_id)
            if box is not None:
                box.put({"metrics": metrics, "checkpoint": checkpoint})
        deadline = time.monotonic() + LAG_WAIT_S
        while True:
            behind = [t for t, _, _ in reports
                      if t not in self.slow and t in self.boxes and len(self.boxes[t].items) > 1]
            if not behind:
                break
            if time.monotonic() > deadline:
                self.slow.update(behind)
                break
            await asyncio.sleep(0.05)
        return [trial_id for trial_id, _, _ in reports if trial_id in self.left]


class _Mailbox:
    """A member's undelivered reports, oldest first. A member that lags (its trial still reporting an earlier
    epoch) keeps every epoch's metrics but only the newest checkpoint, so memory stays one checkpoint each."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    def put(self, item: dict[str, Any]) -> None:
        if "checkpoint" in item:
            for waiting in self.items:
                if "checkpoint" in waiting:
                    waiting["checkpoint"] = None
        self.items.append(item)
        self.arrived.set()

    async def get(self) -> dict[str, Any]:
        while not self.items:
            self.arrived.clear()
            await self.arrived.wait()
        return self.items.pop(0)


# -------------------------------------------------------------------------------------------- the engine
class _Regroup(Exception):
    def __init__(self, members: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(members)} members go on")
        self.members = members


@ray.remote(num_cpus=0)
class _Engine:
    """Trains groups (`fit_fused`), one after another, in a process of its own on their node and GPU."""

    def __init__(self, data_box: list[Any]) -> None:
        self.data = ray.get(data_box[0])

    def run(self, members: list[dict[str, Any]], coordinator: Any, threads: int, gpu_share: float) -> None:
        """Train `members` to their end; members that leave are dropped at the next epoch boundary."""
        import torch

        from cnnsearch.fused import fit_fused

        torch.set_num_threads(threads)
        data = self.data
        device = torch.device("cuda", 0) if gpu_share > 0 and torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(gpu_share, 0)
        while members:
            ids = [m["trial_id"] for m in members]

            def on_epoch(reports) -> None:
                posted = []
                for m, metrics, state in reports:
                    buffer = io.BytesIO()
                    torch.save(state.state_dict(), buffer)  # what save_checkpoint writes to a file
                    posted.append((ids[m], {**metrics, "device": str(device), "fused": len(ids)}, buffer.getvalue()))
                left = set(ray.get(coordinator.post.remote(posted)))
                going = [(trial_id, metrics, blob) for trial_id, metrics, blob in posted
                         if trial_id not in left and metrics["status"] == "running"]
                if left:  # the others (if any) go on from this epoch's checkpoints, in a stack without the leavers
                    config_of = {m["trial_id"]: m["config"] for m in members}
                    raise _Regroup([{"trial_id": t, "config": config_of[t], "checkpoint": blob}
                                    for t, _, blob in going])

            with tempfile.TemporaryDirectory() as folder:
                checkpoints = None
                if any(m["checkpoint"] is not None for m in members):
                    checkpoints = []
                    for i, m in enumerate(members):
                        path = os.path.join(folder, f"member-{i}.pt")
                        Path(path).write_bytes(m["checkpoint"])
                        checkpoints.append(path)
                try:
                    fit_fused([TrainConfig.from_dict(m["config"]) for m in members], data, on_epoch=on_epoch,
                              checkpoints=checkpoints, device=device)
                    members = []
                except _Regroup as regroup:
                    members = regroup.members
        if device.type == "cuda":
            torch.cuda.empty_cache()  # idle until its next group: its cached blocks go back to the GPU's other trials
