"""GPU throughput of `cnnsearch.fit`: training images/s per workload, training step and GPU sharing.

    python bench/gpu.py [--data-dir DIR] [--json bench/gpu.json]      # the table; about 5 min on one H100
    python bench/gpu.py --ablation DIR                                 # then the full `ablation` space (FIFO)

Workloads: ResNet-18 at batch 512 (report E's recipe) and batch 64, DenseNet-121 and the Base CNN at
batch 64 (report A's). Steps: `eager` (plain PyTorch: the engine before the fast path), `graph` (the
whole training step replayed as one CUDA graph, the default on CUDA), `compile` and `compile+graph`
(torch.compile'd network; ResNet-18 b512 only, as compiling costs tens of seconds per model). Sharing:
one trial alone, 4 trials at once in 4 processes (as Tune runs `--gpus-per-trial 0.25`), 4 at once
under NVIDIA MPS where the driver has its control daemon, and 4 seeds fused into one process and one
stacked network (`cnnsearch.fused.fit_seeds`, HFTA-style; the process has the whole card).

Each measurement is real training through `fit` on CIFAR-10 (crop+flip augmentation on the GPU, bf16,
channels_last): one warm-up epoch (cuDNN autotuning, graph capture, compilation), then one timed epoch.
With 4 trials the processes wait at a barrier after the warm-up, so the timed epochs overlap; the
aggregate is all images trained over the wall time from the barrier to the last trial's end.
Without CUDA it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/gpu.py` from a checkout that is not installed
from tune.cluster import mps_daemon  # noqa: E402  (imports no Ray)
SHARERS = 4


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    batch_size: int
    images: int  # training images per epoch: sized for about a second per timed epoch alone, eager


WORKLOADS = (
    Workload("resnet18-b512", "resnet18", 512, 25_600),
    Workload("resnet18-b64", "resnet18", 64, 6_400),
    Workload("densenet121-b64", "densenet121", 64, 3_200),
    Workload("basecnn-b64", "basecnn", 64, 12_800),
)
STEPS = {"eager": {"cuda_graph": False}, "graph": {"cuda_graph": True},
         "compile": {"compile": True, "cuda_graph": False}, "compile+graph": {"compile": True, "cuda_graph": True}}
COMPILED = {"resnet18-b512"}  # workloads also measured with the compile steps (alone only)
FUSED_STEPS = ("graph",)  # steps also measured with SHARERS seeds fused in one process (the default step on CUDA)


# --- one worker process: trains what it is sent, reports images/s ------------------------------------
def _worker(index: int, data_dir: str | None, jobs, results, barrier, threads: int, device: str) -> None:
    torch.set_num_threads(threads)
    if device == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0 / SHARERS - 0.01, 0)  # as a 0.25-GPU Tune trial
    from cnnsearch.config import TrainConfig
    from cnnsearch.data import load_dataset
    from cnnsearch.engine import fit
    from cnnsearch.fused import fit_seeds

    data = load_dataset("cifar10", data_dir=data_dir, download=False, progress=False)
    results.put(("ready", index, None))
    while (job := jobs.get()) is not None:
        workload, step, sharers = Workload(**job["workload"]), job["step"], job["sharers"]
        fused = job.get("fused", 0)  # this many seeds in one stacked network, in this one process
        config = TrainConfig(model=workload.model, batch_size=workload.batch_size, epochs=2, val_size=500,
                             train_subset=workload.images // data.num_classes, lr_schedule="none", seed=index,
                             device=device, **STEPS[step], **({"channels_last": False} if fused else {}))
        marks: dict[str, float] = {}

        def on_epoch(metrics, state) -> None:
            if metrics["epoch"] == 1:
                if sharers > 1:
                    barrier.wait(timeout=900)
                marks.setdefault("start", time.time())
            else:
                marks["end"] = time.time()

        try:
            if fused:
                if device == "cuda":
                    torch.cuda.set_per_process_memory_fraction(1.0, 0)  # the card is this process's alone
                fits = fit_seeds(config, range(fused), data, on_epoch=lambda reports: on_epoch(*reports[0][1:]))
                if device == "cuda":
                    torch.cuda.set_per_process_memory_fraction(1.0 / SHARERS - 0.01, 0)
            else:
                fits = [fit(config, data, on_epoch=on_epoch)]
            history = fits[0].history
            results.put(("done", index, {"start": marks["start"], "end": marks["end"],
                                         "images": workload.images * len(fits),
                                         "alone_images_per_s": history[1]["images_per_s"] * len(fits),
                                         "warmup_s": history[0]["epoch_time_s"], "step": fits[0].step}))
        except Exception as exc:  # noqa: BLE001 - report and keep serving
            if sharers > 1:
                barrier.abort()
            results.put(("error", index, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"))


class Pool:
    """SHARERS worker processes, each with the data set loaded once and its own CUDA context."""

    def __init__(self, data_dir: str | None, device: str = "cuda"):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.barrier = ctx.Barrier(SHARERS)
        self.jobs = [ctx.Queue() for _ in range(SHARERS)]
        threads = max(1, (os.cpu_count() or SHARERS) // SHARERS)  # as --cpus-per-trial would give
        self.procs = [ctx.Process(target=_worker, args=(i, data_dir, self.jobs[i], self.results, self.barrier,
                                                        threads, device), daemon=True) for i in range(SHARERS)]
        for p in self.procs:
            p.start()
        for _ in range(SHARERS):
            kind, index, payload = self.results.get(timeout=300)
            if kind != "ready":
                raise RuntimeError(f"worker {index}: {payload}")

    def measure(self, workload: Workload, step: str, sharers: int, fused: int = 0) -> dict:
        for i in range(sharers):
            self.jobs[i].put({"workload": asdict(workload), "step": step, "sharers": sharers, "fused": fused})
        done, errors = [], []
        for _ in range(sharers):
            kind, index, payload = self.results.get(timeout=900)
            (done if kind == "done" else errors).append(payload)
        if self.barrier.broken:
            self.barrier.reset()
        if errors:
            return {"error": errors[0]}
        wall = max(d["end"] for d in done) - min(d["start"] for d in done)
        return {"images_per_s": sum(d["images"] for d in done) / wall,
                "per_trial_images_per_s": [round(d["alone_images_per_s"]) for d in done],
                "warmup_s": max(d["warmup_s"] for d in done), "step": done[0]["step"]}

    def close(self) -> None:
        for q in self.jobs:
            q.put(None)
        for p in self.procs:
            p.join(timeout=60)


# --- the table -----------------------------------------------------------------------------------------
def run_table(data_dir: str | None, log, *, device: str = "cuda", workloads=WORKLOADS, steps=tuple(STEPS),
              fused_steps=FUSED_STEPS, save=lambda table: None) -> dict:
    """Every measurement; `save(partial table)` after each, so a run cut short keeps what it measured."""
    rows: dict[str, dict[str, dict]] = {}
    pool = Pool(data_dir, device=device)
    try:
        for workload in workloads:
            for step in steps:
                if step.startswith("compile") and workload.name not in COMPILED:
                    continue
                cell = rows.setdefault(workload.name, {}).setdefault(step, {})
                for sharers in ((1,) if step.startswith("compile") else (1, SHARERS)):
                    cell[f"x{sharers}"] = pool.measure(workload, step, sharers)
                    log(f"{workload.name:16s} {step:14s} x{sharers}: {_fmt(cell[f'x{sharers}'])}")
                    save({"rows": rows, "mps": "not measured yet"})
                if step in fused_steps:
                    cell[f"x{SHARERS}_fused"] = pool.measure(workload, step, 1, fused=SHARERS)
                    log(f"{workload.name:16s} {step:14s} x{SHARERS} fused: {_fmt(cell[f'x{SHARERS}_fused'])}")
                    save({"rows": rows, "mps": "not measured yet"})
    finally:
        pool.close()
    if device != "cuda":
        return {"rows": rows, "mps": "not tried on the CPU"}
    note = "MPS on"
    try:
        with mps_daemon():  # the pool's processes start under it and become its clients
            pool = Pool(data_dir)
            try:
                for workload in workloads:
                    for step in ("eager", "graph"):
                        cell = rows[workload.name][step]
                        cell[f"x{SHARERS}_mps"] = pool.measure(workload, step, SHARERS)
                        log(f"{workload.name:16s} {step:14s} x{SHARERS} MPS: {_fmt(cell[f'x{SHARERS}_mps'])}")
                        save({"rows": rows, "mps": note})
            finally:
                pool.close()
    except Exception as exc:  # noqa: BLE001 - no MPS, or one that cannot serve: say so, keep the table
        note = " ".join(str(exc).split())[:300]
    log(f"MPS: {note}")
    return {"rows": rows, "mps": note}


def _fmt(m: dict) -> str:
    if "error" in m:
        return f"error: {m['error']}"
    return f"{m['images_per_s']:8.0f} img/s (warm-up {m['warmup_s']:.1f} s, step {m['step']})"


def print_table(table: dict, log) -> None:
    log("")
    log(f"| workload | step | 1 trial img/s | vs eager | {SHARERS} sharing img/s | vs 1 trial | "
        f"{SHARERS} + MPS img/s | vs 1 trial | {SHARERS} fused img/s | vs 1 trial |")
    log("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workload, steps in table["rows"].items():
        eager = steps.get("eager", {}).get("x1", {}).get("images_per_s")
        for step, cell in steps.items():
            alone = cell.get("x1", {}).get("images_per_s")
            cols = [f"{alone:,.0f}" if alone else "-", f"{alone / eager:.2f}x" if alone and eager else "-"]
            for key in (f"x{SHARERS}", f"x{SHARERS}_mps", f"x{SHARERS}_fused"):
                value = cell.get(key, {}).get("images_per_s")
                cols += [f"{value:,.0f}" if value else "-", f"{value / alone:.2f}x" if value and alone else "-"]
            log(f"| {workload} | {step} | " + " | ".join(cols) + " |")
    log(f"MPS: {table['mps']}")


def best_sharing(table: dict, workload: str = "resnet18-b512") -> tuple[float, bool]:
    """(gpus per trial, MPS) that gave the most images/s for `workload` with the graph step (Tune runs
    trials in processes of their own: fused seeds are not one of its options)."""
    cell = table["rows"].get(workload, {}).get("graph", {})
    options = {(1.0, False): cell.get("x1"), (1.0 / SHARERS, False): cell.get(f"x{SHARERS}"),
               (1.0 / SHARERS, True): cell.get(f"x{SHARERS}_mps")}
    scored = {k: v["images_per_s"] for k, v in options.items() if v and "images_per_s" in v}
    return max(scored, key=scored.get) if scored else (1.0, False)


def issue_ablation(folder: str) -> Path:
    """The `ablation` space at the size issue 12's target names (9 points x 2 seeds = 18 trials at `full`),
    written to `folder`/ablation.yaml: the shipped space now runs 3 seeds and 8 on the base point there."""
    import yaml

    space = yaml.safe_load((ROOT / "search_spaces" / "ablation.yaml").read_text())
    full = space["budgets"]["full"]
    full.pop("base_seeds", None)
    full["seeds"] = 2
    path = Path(folder) / "ablation.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def run_ablation(storage: str, gpus_per_trial: float, mps: bool, log) -> dict:
    """The full `ablation` space under FIFO at the issue's size (18 trials x 30 epochs x 40,000 images): its
    wall time."""
    cpus = max(1, (os.cpu_count() or 4) // max(1, round(1 / gpus_per_trial)))
    space = issue_ablation(f"{storage}/spaces")
    command = [sys.executable, "-m", "tune.run", "--space", str(space), "--budget", "full", "--scheduler", "fifo",
               "--gpus-per-trial", f"{gpus_per_trial:g}", "--cpus-per-trial", str(cpus), "--no-dashboard",
               "--no-download", "--storage", storage, "--name", "ablation-full-fifo", *(["--mps"] if mps else [])]
    log("$ " + " ".join(command[1:]))
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, text=True, capture_output=True)
    wall = time.perf_counter() - start
    log(proc.stdout[-3000:] + proc.stderr[-2000:])
    log(f"ablation: exit {proc.returncode}, wall {wall:.0f} s")
    return {"command": " ".join(command[1:]), "wall_s": wall, "exit": proc.returncode}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="data root (default: $CNNSEARCH_DATA_DIR)")
    p.add_argument("--json", default=str(ROOT / "bench" / "gpu.json"), help="where to write the figures")
    p.add_argument("--ablation", metavar="STORAGE", help="also run the full ablation space under FIFO there")
    p.add_argument("--table-from", metavar="JSON", help="with --ablation: take the table from an earlier run's JSON")
    p.add_argument("--cpu-check", action="store_true", help=argparse.SUPPRESS)  # the plumbing, tiny, on the CPU
    args = p.parse_args()
    if args.cpu_check:
        table = run_table(args.data_dir, print, device="cpu", steps=("eager",), fused_steps=("eager",),
                          workloads=(Workload("basecnn-b64", "basecnn", 64, 640),))
        print_table(table, print)
        Path(args.json).write_text(json.dumps(table, indent=2))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run this on a GPU machine)")
        return 0

    def log(line: str) -> None:
        print(line, flush=True)

    name = torch.cuda.get_device_name(0)
    log(f"{name}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    started = time.perf_counter()
    if args.table_from:
        table = json.loads(Path(args.table_from).read_text())
    else:
        table = run_table(args.data_dir, log, save=lambda t: Path(args.json).write_text(json.dumps(t, indent=2)))
        table.update(device=name, torch=torch.__version__, table_s=time.perf_counter() - started)
    print_table(table, log)
    if args.ablation:
        gpus, mps = best_sharing(table)
        table["ablation"] = run_ablation(args.ablation, gpus, mps, log)
    Path(args.json).write_text(json.dumps(table, indent=2))
    log(f"wrote {args.json} ({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
