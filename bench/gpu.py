"""GPU throughput of `cnnsearch.fit`: training images/s per workload, training step and GPU sharing.

    python bench/gpu.py [--data-dir DIR] [--json bench/gpu.json]      # the table; about 5 min on one H100
    python bench/gpu.py --ablation DIR                                 # then the full `ablation` space (FIFO)
    python bench/gpu.py --seeds-sweep [--json bench/gpu-seeds.json]    # issue 19: N seeds fused vs N under MPS
    python bench/gpu.py --seeds-sweep --device cpu --tiny --json /tmp/s.json   # its code path, tiny, on a CPU

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

--seeds-sweep (issue 19): ResNet-18 (width 1, CIFAR-10) at batch 64 and batch 512, training images/s of all
seeds together for N = 1, 2, 4, 8 seeds, (a) fused: one process, `fit_group(configs, data, fused=True)` of the
N seeds (one stacked network, the card to itself), and (b) the same N seeds as N processes training one seed
each (`fit_group` of one config, fused=False: `fit`) at the same time under an MPS daemon (tune.cluster's
`mps_daemon`, as `tune.run --mps`; where it cannot start, the N processes run without MPS and the output says
so). Each cell: the group's two warm-up epochs (cuDNN autotuning, graph capture), then every process waits for
the others; timed epochs run from one common start until each process ends its first epoch past
SWEEP_WINDOW_S (15 s) from it; img/s = all images of the timed epochs / (last end - start). An epoch is the same
total work in every cell, 0.5-1 s on an H100 (bench/RESULTS.md): 12,800 images at b64 and 40,960 at b512 split
among the N seeds (whole batches), plus 100 validation images per seed. A cell takes ~20-25 s, so the 16 cells
and the two pools' start-up take about 6-7 min (under the device machine's 10-minute call); the JSON is
rewritten after each cell, so a run cut short keeps what it measured.
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


# --- issue 19: N seeds fused in one process vs N processes of one seed under MPS ---------------------------
SWEEP_SEEDS = (1, 2, 4, 8)
# (name, batch size, training images per epoch for all the seeds together: split among them, whole batches each)
SWEEP_WORKLOADS = (("resnet18-b64", 64, 12_800), ("resnet18-b512", 512, 40_960))
SWEEP_WINDOW_S = 15.0  # timed seconds per cell, after the warm-up
SWEEP_WARMUP = 2  # warm-up epochs per cell
SWEEP_VAL = 100  # validation images per seed per epoch (in the timed window, as in training; kept small)
TINY = {"width": 0.125, "seeds": (1, 2), "window": 1.0, "warmup": 1,  # --tiny: the same code path on a CPU
        "workloads": (("resnet18-w0.125-b16", 16, 160), ("resnet18-w0.125-b64", 64, 640))}


class _Stop(Exception):
    """Raised from on_epoch to end a measurement: fit_group lets it through and stops every member."""


def _sweep_worker(index: int, data_dir: str | None, jobs, results, threads: int, device: str) -> None:
    """Trains one cell's seeds per job (`fit_group`, fused or one config), waiting after the warm-up for the
    parent's ("go", start, deadline) or ("abort",); reports ("warm"|"done"|"aborted"|"error", index, payload)."""
    torch.set_num_threads(threads)
    import gc

    from cnnsearch import steps
    from cnnsearch.config import TrainConfig
    from cnnsearch.data import load_dataset
    from cnnsearch.engine import fit_group

    # The training steps fit_group builds, to report which ran (its result is lost when _Stop ends it).
    made: list = []
    init = steps.EagerStep.__init__

    def recording_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    steps.EagerStep.__init__ = recording_init
    data = load_dataset("cifar10", data_dir=data_dir, download=False, progress=False)
    results.put(("ready", index, None))
    while (job := jobs.get()) is not None:
        seeds, images = job["seeds"], job["images"]  # images: per seed per epoch, whole batches, whole classes
        configs = [TrainConfig(model="resnet18", width=job["width"], batch_size=job["batch_size"], epochs=100_000,
                               val_size=SWEEP_VAL, train_subset=images // data.num_classes, lr_schedule="none",
                               seed=seed, device=device) for seed in seeds]
        marks: dict = {"t0": time.time(), "epochs": 0, "rates": []}

        def on_epoch(reports) -> None:
            epoch = reports[0][1]["epoch"]
            if epoch == job["warmup"]:
                marks["warmup_s"] = time.time() - marks["t0"]
                results.put(("warm", index, None))
                message = jobs.get(timeout=900)
                if message[0] != "go":
                    marks["aborted"] = True
                    raise _Stop
                marks["start"], marks["deadline"] = message[1], message[2]
            elif epoch > job["warmup"]:
                marks["epochs"] += 1
                marks["end"] = time.time()
                marks["rates"].append(sum(metrics["images_per_s"] for _, metrics, _ in reports))  # training only
                if marks["end"] >= marks["deadline"]:
                    raise _Stop

        try:
            fit_group(configs, data, fused=job["fused"], on_epoch=on_epoch)
            results.put(("error", index, "fit_group ended before the timed window did"))
        except _Stop:
            if marks.get("aborted"):
                results.put(("aborted", index, None))
            else:
                rates = sorted(marks["rates"])
                results.put(("done", index, {"end": marks["end"], "images": marks["epochs"] * images * len(seeds),
                                             "epochs": marks["epochs"], "warmup_s": marks["warmup_s"],
                                             "train_images_per_s": rates[len(rates) // 2],
                                             "step": made[-1].ran if made else "?"}))
        except Exception as exc:  # noqa: BLE001 - report and keep serving
            results.put(("error", index, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"))
        made.clear()  # the steps hold the networks: free the card for the next cell
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


class SweepPool:
    """`size` worker processes, each with the data set loaded once and its own CUDA context (an MPS client
    when started under `mps_daemon`)."""

    def __init__(self, size: int, data_dir: str | None, device: str, threads: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.jobs = [ctx.Queue() for _ in range(size)]
        self.procs = [ctx.Process(target=_sweep_worker, args=(i, data_dir, self.jobs[i], self.results, threads, device),
                                  daemon=True) for i in range(size)]
        for p in self.procs:
            p.start()
        for _ in range(size):
            kind, index, payload = self.results.get(timeout=300)
            if kind != "ready":
                raise RuntimeError(f"worker {index}: {payload}")

    def measure(self, job: dict, processes: int, seeds_each: int, window: float) -> dict:
        """`processes` workers at once, each training `seeds_each` seeds (fused when more than one): their
        aggregate training images/s over a common timed window."""
        for i in range(processes):
            seeds = list(range(i * seeds_each, (i + 1) * seeds_each))
            self.jobs[i].put({**job, "seeds": seeds, "images": job["images"] // (processes * seeds_each),
                              "fused": seeds_each > 1 or job["fused"]})
        warm, errors = [], []
        for _ in range(processes):
            kind, index, payload = self.results.get(timeout=900)
            (warm if kind == "warm" else errors).append((index, payload))
        if errors:
            for index, _ in warm:
                self.jobs[index].put(("abort",))
            for _ in warm:
                self.results.get(timeout=120)
            return {"error": errors[0][1]}
        start = time.time()
        for i in range(processes):
            self.jobs[i].put(("go", start, start + window))
        done = []
        for _ in range(processes):
            kind, index, payload = self.results.get(timeout=window + 900)
            (done if kind == "done" else errors).append(payload)
        if errors:
            return {"error": errors[0]}
        wall = max(d["end"] for d in done) - start
        return {"images_per_s": sum(d["images"] for d in done) / wall, "timed_s": wall,
                "per_process_train_images_per_s": [round(d["train_images_per_s"]) for d in done],
                "timed_epochs": [d["epochs"] for d in done], "warmup_s": max(d["warmup_s"] for d in done),
                "step": done[0]["step"]}

    def close(self) -> None:
        for q in self.jobs:
            q.put(None)
        for p in self.procs:
            p.join(timeout=60)


def run_seeds_sweep(data_dir: str | None, log, *, device: str = "cuda", tiny: bool = False,
                    save=lambda sweep: None) -> dict:
    """Issue 19's figures: {"rows": {workload: {N: {"fused": cell, "processes": cell}}}, "mps": note}; each
    cell as `SweepPool.measure` returns it. `save(partial sweep)` after each cell."""
    counts = TINY["seeds"] if tiny else SWEEP_SEEDS
    workloads = TINY["workloads"] if tiny else SWEEP_WORKLOADS
    window = TINY["window"] if tiny else SWEEP_WINDOW_S
    base = {"width": TINY["width"] if tiny else None, "warmup": TINY["warmup"] if tiny else SWEEP_WARMUP}
    sweep: dict = {"rows": {name: {str(n): {} for n in counts} for name, _, _ in workloads},
                   "mps": "not measured yet", "window_s": window, "width": base["width"] or 1}

    # Every process, the fused one too, gets the CPU threads one of the most processes gets: more threads than
    # cores left free (this machine busy) makes torch's CPU kernels crawl (bench/RESULTS.md, input pipeline).
    threads = max(1, (os.cpu_count() or 1) // max(counts))

    def phase(key: str, pool_size: int, processes_of) -> None:
        pool = SweepPool(pool_size, data_dir, device, threads)
        try:
            for name, batch, images in workloads:
                for n in counts:
                    processes = processes_of(n)
                    job = {**base, "batch_size": batch, "images": images, "fused": key == "fused"}
                    cell = pool.measure(job, processes, n // processes, window)
                    sweep["rows"][name][str(n)][key] = cell
                    log(f"{name:20s} {n} seeds {key:9s}: {_fmt(cell)}")
                    save(sweep)
        finally:
            pool.close()

    phase("fused", 1, lambda n: 1)  # N seeds, one process, one stacked network
    many = max(counts)
    if device != "cuda":
        sweep["mps"] = "skipped: no CUDA here; the N-process column ran without MPS (the code path only)"
        phase("processes", many, lambda n: n)
    else:
        try:
            with mps_daemon():  # the pool's processes start under it and become its clients
                sweep["mps"] = "MPS on"
                phase("processes", many, lambda n: n)
        except Exception as exc:  # noqa: BLE001 - no MPS here, or one that cannot serve: say so, run without it
            if sweep["mps"] == "MPS on":
                raise
            sweep["mps"] = f"no MPS ({' '.join(str(exc).split())[:200]}); the N processes ran without it"
            log(f"MPS: {sweep['mps']}")
            phase("processes", many, lambda n: n)
    save(sweep)
    return sweep


def print_sweep(sweep: dict, log) -> None:
    mps = sweep["mps"] == "MPS on"
    log("")
    log(f"| workload | seeds | fused, 1 process img/s | N processes{' under MPS' if mps else ', no MPS'} img/s | "
        "fused / processes |")
    log("|---|---:|---:|---:|---:|")
    for workload, cells in sweep["rows"].items():
        for n, cell in cells.items():
            fused, procs = (cell.get(key, {}).get("images_per_s") for key in ("fused", "processes"))
            cols = [f"{fused:,.0f}" if fused else cell.get("fused", {}).get("error", "-")[:60],
                    f"{procs:,.0f}" if procs else cell.get("processes", {}).get("error", "-")[:60],
                    f"{fused / procs:.2f}x" if fused and procs else "-"]
            log(f"| {workload} | {n} | " + " | ".join(cols) + " |")
    log(f"MPS: {sweep['mps']}")


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
    p.add_argument("--json", help="where to write the figures (default: bench/gpu.json for the table; the sweep "
                                  "writes only when given)")
    p.add_argument("--seeds-sweep", action="store_true",
                   help="issue 19: 1/2/4/8 seeds fused vs as processes under MPS, ResNet-18 b64 and b512 (~7 min)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="with --seeds-sweep (cpu: use --tiny)")
    p.add_argument("--tiny", action="store_true",
                   help="with --seeds-sweep: width 0.125, tiny epochs, 1-2 seeds, 1 s cells")
    p.add_argument("--ablation", metavar="STORAGE", help="also run the full ablation space under FIFO there")
    p.add_argument("--table-from", metavar="JSON", help="with --ablation: take the table from an earlier run's JSON")
    p.add_argument("--cpu-check", action="store_true", help=argparse.SUPPRESS)  # the plumbing, tiny, on the CPU
    args = p.parse_args()
    if args.seeds_sweep:
        return seeds_sweep_main(args)
    args.json = args.json or str(ROOT / "bench" / "gpu.json")
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


def seeds_sweep_main(args) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run this on a GPU machine; --device cpu --tiny: the code path)")
        return 0

    def log(line: str) -> None:
        print(line, flush=True)

    card = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    log(f"{card}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    started = time.perf_counter()
    info = {"device": card, "torch": torch.__version__, "tiny": args.tiny}

    latest: dict = {}

    def save(sweep: dict) -> None:
        latest.update(sweep)
        if args.json:
            figures = {**info, **sweep, "sweep_s": time.perf_counter() - started}
            Path(args.json).write_text(json.dumps(figures, indent=2))

    try:
        sweep = run_seeds_sweep(args.data_dir, log, device=args.device, tiny=args.tiny, save=save)
    except KeyboardInterrupt:  # a time limit's Ctrl-C: the table so far (the JSON already holds it)
        if latest:
            log(f"card: {card}")
            print_sweep(latest, log)
        log(f"interrupted after {time.perf_counter() - started:.0f} s")
        return 130
    log(f"card: {card}")
    print_sweep(sweep, log)
    save(sweep)
    log(f"{time.perf_counter() - started:.0f} s in all" + (f"; wrote {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
