"""`python -m cnnsearch.train`: one training run, no Ray.

    python -m cnnsearch.train --arch resnet18 --dataset cifar10 --epochs 30 --optimizer adam --lr 1e-3 --lr-decay 0.9

Prints a progress bar and one line per epoch (as report B's log did) and writes to the output folder:
config.json (resolved config, data set, model size), metrics.csv / metrics.json (per epoch, plus the final
test evaluation), curves.png, confusion.png (test split) and checkpoint.pt (for --resume).

    python -m cnnsearch.train --arch resnet18 --batch-size 64 --seeds 0,1,2,3

trains the seeds together, fused into one stacked network in one process (cnnsearch.fused; meant for a GPU,
where one small training leaves the card idle between kernel launches), and writes one such folder per seed,
seed-N/, plus summary.json (each seed's best validation and test accuracy).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .cli import DATA_DIR_HELP, ArgumentParser, Interrupt, fail, int_list, signals_held, stop_on_signals
from .config import LR_SCHEDULES, OPTIMIZERS, TrainConfig
from .files import replaced

__all__ = ["main", "build_parser", "config_from_args", "format_epoch"]

# CLI flag -> TrainConfig field, where the names differ.
_RENAMED = {"arch": "model"}
_NOT_CONFIG = {"config", "data_dir", "no_download", "out", "resume", "quiet", "seeds"}
# TrainConfig fields set only through --config FILE (tests/test_train_cli.py checks every other has a flag).
CONFIG_FILE_ONLY: tuple[str, ...] = ()


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m cnnsearch.train", description="Train one CNN on a real data set, without Ray.")
    p.add_argument("--config", metavar="FILE", help="YAML file of TrainConfig keys; flags given here override it")
    g = p.add_argument_group("model")
    g.add_argument("--arch", help="registry name, e.g. resnet18, densenet121, basecnn (python -m cnnsearch.models lists them)")
    g.add_argument("--stem-kernel", type=int, help="3 (3x3 stride 1) or 7 (7x7 stride 2 padding 3)")
    g.add_argument("--stem-bn", action=argparse.BooleanOptionalAction, default=None, help="BatchNorm after the stem conv")
    g.add_argument("--dropout", type=float, help="dropout before the classifier, in [0, 1)")
    g.add_argument("--blocks-per-stage", type=int_list, metavar="N,N,...", help="override the depth table, e.g. 3,3,3,3")
    g.add_argument("--width", type=float, help="channel multiplier, e.g. 0.25 for a narrow network on CPU")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="cifar10, cifar100, mnist or imagefolder:PATH")
    g.add_argument("--data-dir", help=DATA_DIR_HELP)
    g.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    g.add_argument("--val-size", type=int, help="validation images carved from train (default 5000)")
    g.add_argument("--split-seed", type=int, help="seed of the train/validation split (default 0, fixed across --seed)")
    g.add_argument("--train-subset", type=int, help="training images per class (default: all)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop + flip (default: on for CIFAR, off for MNIST)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    g.add_argument("--lr-decay", type=float, help="per-epoch factor (exponential) or per step (step); 1.0 = none")
    g.add_argument("--step-size", type=int, help="epochs between decays for --lr-schedule step")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--seeds", type=int_list, metavar="N,N,...",
                   help="train these seeds together, fused into one stacked network (meant for a GPU); "
                        "one folder per seed, OUT/seed-N")
    g = p.add_argument_group("execution")
    g.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="(default: on for CUDA)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    g.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="replay each training step as one CUDA graph (default: on for CUDA)")
    g.add_argument("--eval-batch-size", type=int, help="batch size of validation and test evaluation (default 1024)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output folder (default: runs/train/MODEL-DATASET-TIME)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Config file first, then every flag that was given; TrainConfig validates the result."""
    values: dict[str, Any] = {}
    if args.config:
        values.update(_read_yaml(args.config))
    for key, value in vars(args).items():
        if key not in _NOT_CONFIG and value is not None:
            values[_RENAMED.get(key, key)] = value
    return TrainConfig.from_dict(values)


def _read_yaml(path: str) -> dict[str, Any]:
    from .yamlio import YAMLError, load_yaml

    try:
        with open(path) as f:
            values = load_yaml(f.read()) or {}
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file") from None
    except YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of config keys")
    return values


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    """One line per epoch, in the form of report B's log."""
    return (f"Epoch {m['epoch']}/{epochs}, Train Loss: {m['train_loss']:.4f}, Train Accuracy: {100 * m['train_acc']:.2f}%, "
            f"Valid Loss: {m['val_loss']:.4f}, Valid Accuracy: {100 * m['val_acc']:.2f}%, LR: {m['lr']:.3g}, "
            f"Time: {m['epoch_time_s']:.1f}s ({m['images_per_s']:.0f} img/s)")


def _default_out(config: TrainConfig) -> Path:
    dataset = config.dataset.split(":")[0]
    return Path("runs") / "train" / f"{config.model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _write_history(out: Path, history: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    _write_text(out / "metrics.csv", buffer.getvalue())
    _write_json(out / "metrics.json", {"epochs": history, **extra})


def _write_json(path: Path, payload: Any) -> None:
    _write_text(path, json.dumps(payload, indent=2, default=str))


def _write_text(path: Path, text: str) -> None:
    with replaced(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def _progress_bar(batches, *, total: int, totals, every_s: float = 0.5):
    """A tqdm bar over one epoch's batches with the running training loss and accuracy. They are read
    every `every_s` seconds, not per batch: reading them waits for the device."""
    from tqdm import tqdm

    seen, shown = 0, time.monotonic()
    with tqdm(total=total, leave=False, unit="batch", file=sys.stderr) as bar:
        for images, labels in batches:
            yield images, labels  # the step trains on this batch before the generator resumes
            seen += labels.shape[-1]  # images per member: fused seeds' labels are (M, B)
            bar.update()
            if time.monotonic() - shown >= every_s or bar.n == total:
                loss_sum, correct = totals()
                bar.set_postfix({"loss": f"{loss_sum / seen:.4f}", "acc": f"{100 * correct / seen:.1f}%"})
                shown = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with stop_on_signals():
            return _train(args, parser.prog)
    except Interrupt as stop:
        # Checkpoints are written to a temporary file and renamed, so the last one is whole.
        print(f"\n{parser.prog}: interrupted ({stop.how}); {_progress(args, argv)}", file=sys.stderr)
        return stop.code


def _progress(args: argparse.Namespace, argv: list[str] | None) -> str:
    """What an interrupted run leaves: the epoch its checkpoint holds and how to continue."""
    out = getattr(args, "out_path", None)
    paths = _checkpoint_paths(out, args.seeds) if out else []
    try:  # the checkpoints themselves, not metrics.json: a signal can land between writing the one and the other
        from .engine import load_checkpoint

        epoch = min(load_checkpoint(path)["epoch"] for path in paths) if paths else 0
    except (ValueError, KeyError, TypeError):
        epoch = 0
    if not epoch:
        return "no epoch had finished, so there is nothing to resume"
    given = sys.argv[1:] if argv is None else argv
    again = [a for a in given if a != "--resume"] + ([] if args.out else ["--out", str(out)]) + ["--resume"]
    where = paths[0] if len(paths) == 1 else out / "seed-*" / "checkpoint.pt"
    return (f"the checkpoint of epoch {epoch} is in {where}; continue with: "
            f"python -m cnnsearch.train {' '.join(again)}")


def _checkpoint_paths(out: Path, seeds: tuple[int, ...] | None) -> list[Path]:
    """Where a run's checkpoints go: OUT/checkpoint.pt, or OUT/seed-N/checkpoint.pt per seed with --seeds."""
    return [out / "checkpoint.pt"] if seeds is None else [out / f"seed-{seed}" / "checkpoint.pt" for seed in seeds]


def _train(args: argparse.Namespace, prog: str) -> int:
    try:
        config = config_from_args(args)
        if args.seeds is not None:
            _check_seeds(args, config)
    except ValueError as exc:
        fail(str(exc), prog=prog)

    out = Path(args.out) if args.out else _default_out(config)
    args.out_path = out  # an interrupted run names its folder
    checkpoint_paths = _checkpoint_paths(out, args.seeds)
    if args.resume:
        if not args.out:
            fail("--resume needs --out, the folder of the run to continue", prog=prog)
        missing = [path for path in checkpoint_paths if not path.is_file()]
        if missing:
            fail(f"--resume: no {missing[0].relative_to(out)} in {out}; start a new run without --resume", prog=prog)
    elif out.exists() and any(out.iterdir()):
        fail(f"{out} already holds files; pass --resume to continue that run or choose another --out", prog=prog)
    created = _check_writable(out, prog)
    try:
        return _run(args, config, out, checkpoint_paths, prog)
    except BaseException:
        if created:  # a folder this run made and never wrote into goes again
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _check_seeds(args: argparse.Namespace, config: TrainConfig) -> None:
    seeds = args.seeds
    if args.seed is not None:
        raise ValueError("pass --seed or --seeds, not both")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must differ (a repeated seed trains the same run twice), got {','.join(map(str, seeds))}")
    for seed in seeds:
        config.replace(seed=seed)  # in range
    for name in ("compile", "channels_last"):
        if getattr(config, name):
            raise ValueError(f"--seeds trains without --{name.replace('_', '-')}; drop that flag")


def _check_writable(out: Path, prog: str) -> bool:
    """Make the output folder and write a file in it, before the data loads; one line if it cannot be.
    Returns whether the folder is new."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        fail(f"--out {out}: cannot write there ({exc.strerror or exc})", prog=prog)
    return created


def _run(args: argparse.Namespace, config: TrainConfig, out: Path, checkpoint_paths: list[Path], prog: str) -> int:
    # Heavy imports after argument checks, so bad input fails fast.
    from tqdm import tqdm

    from .data import DataError, load_dataset
    from .data.splits import split_sizes
    from .engine import Execution, fit, load_checkpoint, resolve_device
    from .fused import fit_seeds

    try:
        device = resolve_device(config.device)
        Execution.resolve(config, device)  # e.g. --cuda-graph on a CPU: refused before the data loads
        checkpoints = [load_checkpoint(path) for path in checkpoint_paths] if args.resume else None
        data = load_dataset(config.dataset, data_dir=args.data_dir, download=not args.no_download)
    except (ValueError, DataError) as exc:
        fail(str(exc), prog=prog)

    try:
        train_n, val_n = split_sizes(data, val_size=config.val_size, seed=config.split_seed,
                                     train_subset=config.train_subset)
    except ValueError as exc:  # e.g. --train-subset larger than a class
        fail(str(exc), prog=prog)
    seeds = args.seeds
    fused = f"; seeds {','.join(map(str, seeds))} fused into one network" if seeds else ""
    print(f"{config.model} on {data.name}: {train_n} train / {val_n} validation images (of {len(data.train)} in its "
          f"training split) / {len(data.test)} test, {data.num_classes} classes, device {device}; writing to {out}"
          f"{fused}", flush=True)

    folders = [path.parent for path in checkpoint_paths]
    histories = [list(c["history"]) for c in checkpoints] if checkpoints else [[] for _ in folders]

    def on_epoch(reports: list[tuple[int, dict[str, Any], Any]]) -> None:
        with signals_held():  # every seed's checkpoint of this epoch, or none: fused seeds resume together
            for m, metrics, state in reports:
                folders[m].mkdir(exist_ok=True)  # here: a run stopped before its first epoch leaves no folder
                state.save(checkpoint_paths[m])
                histories[m].append(metrics)
                _write_history(folders[m], histories[m], {"status": metrics["status"]})
        for m, metrics, _ in reports:
            tqdm.write((f"seed {seeds[m]}: " if seeds else "") + format_epoch(metrics, config.epochs))

    progress = None if args.quiet else _progress_bar
    try:
        if seeds:
            results = fit_seeds(config, seeds, data, on_epoch=on_epoch, checkpoints=checkpoints, device=device,
                                progress=progress)
        else:
            results = [fit(config, data, on_epoch=lambda metrics, state: on_epoch([(0, metrics, state)]),
                           checkpoint=checkpoints[0] if checkpoints else None, device=device, progress=progress)]
        tests = [_finish(folder, result, data, device) for folder, result in zip(folders, results)]
        if seeds:
            _write_json(out / "summary.json", {"seeds": [
                {"seed": seed, "status": r.status, "best": r.best, "test_acc": t.accuracy}
                for seed, r, t in zip(seeds, results, tests)]})
    except OSError as exc:  # a full disk, a folder removed underneath: what was written before stays whole
        where = exc.filename or out
        fail(f"cannot write {where}: {exc.strerror or exc}; {_done(min(histories, key=len))}", prog=prog)
    except ValueError as exc:  # e.g. a checkpoint made with another config
        fail(str(exc), prog=prog)
    for seed, result, test in zip(seeds or [None], results, tests):
        best = result.best
        best_text = f"best val acc {100 * best['val_acc']:.2f}% (epoch {best['epoch']})" if best else "no finite epoch"
        print(("" if seed is None else f"seed {seed}: ") + f"{result.status}: {best_text}, "
              f"test acc {100 * test.accuracy:.2f}%" + ("" if seed is not None else f"; results in {out}"))
    if seeds and len(seeds) > 1:
        accuracies = [100 * test.accuracy for test in tests]
        print(f"test acc over {len(seeds)} seeds: mean {statistics.mean(accuracies):.2f}%, "
              f"sd {statistics.stdev(accuracies):.2f} points; results in {out}")
    return 0


def _finish(out: Path, result, data, device) -> Any:
    """A finished run's folder: config.json, the test evaluation in metrics.json, curves and confusion plots.
    Returns the test evaluation."""
    from .engine import evaluate
    from .models import describe_model
    from .plots import plot_confusion, plot_curves

    config = result.config
    shape = (data.in_channels, data.image_size, data.image_size)
    _write_json(out / "config.json", {
        "config": config.to_dict(), "device": str(device),
        "dataset": {"name": data.name, "classes": list(data.classes), "train": len(data.train),
                    "test": len(data.test), "mean": data.mean, "std": data.std},
        "model": describe_model(result.model.net, shape),
    })
    test = evaluate(result.model, data.test, batch_size=config.eval_batch_size, num_classes=data.num_classes,
                    bf16=config.bf16 if config.bf16 is not None else device.type == "cuda")
    _write_history(out, result.history, {"status": result.status, "best": result.best, "test": test.to_dict(),
                                         "classes": list(data.classes)})
    plot_curves(result.history, out / "curves.png", title=f"{config.model} on {data.name}")
    plot_confusion(test.confusion, data.classes, out / "confusion.png",
                   title=f"{config.model}: test accuracy {100 * test.accuracy:.2f}%")
    return test


def _done(history: list[dict[str, Any]]) -> str:
    return f"the checkpoint of epoch {history[-1]['epoch']} is intact" if history else "no epoch had finished"


if __name__ == "__main__":
    sys.exit(main())
