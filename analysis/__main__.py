"""`python -m analysis`: reports and the best model of an experiment that `python -m tune.run` wrote.

    python -m analysis report runs/ablation-cpu-20260101-120000             # -> RUN_DIR/analysis/report.md
    python -m analysis report RUN_DIR --claims my_claims.yaml --out out/ --no-test
    python -m analysis best RUN_DIR                                         # best config, test accuracy
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from cnnsearch.cli import DATA_DIR_HELP, ArgumentParser, Interrupt, fail, stop_on_signals

__all__ = ["main", "build_parser"]

PROG = "python -m analysis"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Tables, figures and verdicts on the reports' claims, from a Tune experiment.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    r = sub.add_parser("report", help="write report.md, figures/, trials.csv, epochs.csv and claims.csv",
                       description="Write report.md (claims and verdicts first), figures/*.png, trials.csv, epochs.csv "
                                   "and claims.csv.")
    r.add_argument("run_dir", metavar="RUN_DIR", help="experiment folder: a path or a pyarrow URI (file://, s3://, ...)")
    r.add_argument("--claims", metavar="FILE", help="claims file (default: analysis/claims/<space name>.yaml if it exists)")
    r.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/analysis for local folders, "
                                               "./NAME-analysis for remote ones)")
    r.add_argument("--no-test", action="store_true", help="skip the test-split evaluation (no confusion matrix)")
    _data_args(r)

    b = sub.add_parser("best", help="the best config, evaluated once on the test split",
                       description="Print the best trial's config and its accuracy on the test split.")
    b.add_argument("run_dir", metavar="RUN_DIR", help="experiment folder: a path or a pyarrow URI")
    b.add_argument("--retrain", action="store_true", help="train the config again instead of restoring its checkpoint")
    b.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    b.add_argument("--export", metavar="DIR", help="write the model to DIR: model.pt2 (torch.export) and winner.json")
    _data_args(b)
    return p


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")


def _load(run_dir: str):
    from .load import ExperimentError, SkippedTrialWarning, load_experiment

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedTrialWarning)
        try:
            experiment = load_experiment(run_dir)
        except ExperimentError as exc:
            fail(str(exc), prog=PROG)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return experiment


def _default_out(experiment) -> str:
    if experiment.filesystem is None or experiment.filesystem.type_name == "local":
        return os.path.join(experiment.root, "analysis")
    return f"{experiment.name}-analysis"


def _report(args: argparse.Namespace) -> int:
    from .claims import ClaimsError, load_claims
    from .report import write_report

    claims = None
    if args.claims:
        try:
            claims = load_claims(args.claims)
        except ClaimsError as exc:
            fail(str(exc), prog=PROG)
    experiment = _load(args.run_dir)
    out = args.out or _default_out(experiment)
    from cnnsearch.data import DataError  # imports torch: after the checks that do not need it

    try:
        path = write_report(experiment, out, claims=claims, test=not args.no_test, data_dir=args.data_dir,
                            download=not args.no_download)
    except (ClaimsError, DataError) as exc:
        fail(str(exc), prog=PROG)
    print(f"wrote {path} (figures/, trials.csv, epochs.csv and, with claims, claims.csv beside it)")
    return 0


def _best(args: argparse.Namespace) -> int:
    import json

    experiment = _load(args.run_dir)
    from cnnsearch.data import DataError  # imports torch: after the checks that do not need it

    from .best import evaluate_best

    try:
        best = evaluate_best(experiment, data_dir=args.data_dir, download=not args.no_download, retrain=args.retrain,
                             device=args.device)
    except (DataError, ValueError) as exc:
        fail(str(exc), prog=PROG)
    row, metric = best.trial, experiment.metric
    print(f"best trial: {row['label']} seed {row['seed']} (folder {row['folder']}): {metric} "
          f"{row[f'best_{metric}']:.4f} at epoch {row['best_epoch']} of {row['epochs']} trained ({row['status']})")
    from .display import changes

    print(f"differs from the base in: {changes(best.changes)}")
    print(f"config: {json.dumps(best.config, sort_keys=True)}")
    print(f"model: {best.model_from}")
    print(f"test accuracy: {best.test.accuracy:.4f} ({int(best.test.confusion.sum())} images), test loss {best.test.loss:.4f}")
    from .best import export_model, retrain_command

    print(f"retrain: {retrain_command(best.config, os.path.join('runs', 'train', experiment.name + '-best'))}")
    if args.export:
        try:
            paths = export_model(best, args.export)
        except OSError as exc:
            fail(f"--export {args.export}: {exc.strerror or exc}", prog=PROG)
        print(f"exported: {' and '.join(paths)} (torch.export.load(PATH).module() takes uint8 images (B, C, H, W))")
    else:
        print(f"export: python -m analysis best {args.run_dir} --export {experiment.name}-best")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals():
            return _report(args) if args.command == "report" else _best(args)
    except Interrupt as stop:  # reading only: nothing half-written is left but a partial --out folder
        print(f"\n{PROG}: interrupted ({stop.how})", file=sys.stderr)
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
