"""An experiment folder rebuilt from a report's trials.csv and epochs.csv, for results whose folder is gone.

`analysis report` writes both tables beside every report; together with the experiment record (the space,
budget, scheduler and command, which the caller gives) they hold everything the analysis reads: each trial's
effective config (the `config/*` columns), its design point (`label`, `design_factor`) and its epochs. The
rebuilt folder has `cnnsearch.json`, and per trial `params.json`, `result.json` and, for a crashed trial,
`error.txt`: no checkpoints and no Tune state, so no test-split evaluation. `rebuild_run` reads the folder back
and raises if a trial's label, seed, status or epochs differ from the table's.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cnnsearch.config import TrainConfig
from search_spaces import ExperimentRecord

from .load import load_experiment

__all__ = ["rebuild_run"]

_INTS = {f.name for f in dataclasses.fields(TrainConfig) if "int" in str(f.type) and "tuple" not in str(f.type)}


def _value(key: str, value: Any) -> Any:
    """A `config/<key>` cell as the config held it: None for empty, lists from their JSON text, whole numbers of
    int fields as ints (a column with an empty cell is read as floats)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    if key in _INTS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def rebuild_run(tables: str | Path, record: ExperimentRecord, out: str | Path) -> Path:
    """Write experiment folder `out` from `tables`/trials.csv and `tables`/epochs.csv and `record`; returns `out`.
    Raises ValueError when the folder does not read back as the tables say."""
    tables, out = Path(tables), Path(out)
    trials = pd.read_csv(tables / "trials.csv")
    epochs = pd.read_csv(tables / "epochs.csv")
    out.mkdir(parents=True, exist_ok=True)
    record.write(str(out))
    config_columns = [c for c in trials.columns if c.startswith("config/")]
    for row in trials.to_dict("records"):
        params = {c[len("config/"):]: _value(c[len("config/"):], row[c]) for c in config_columns}
        if record.design == "one_at_a_time":
            factor = row["design_factor"] if isinstance(row["design_factor"], str) else None
            spec = record.factor(factor) if factor else None
            level = None if spec is None else (
                {k: params[k] for k in spec.keys} if spec.multi_key else params[factor])
            params["design_point"] = {"label": row["label"], "factor": factor, "level": level}
        folder = out / row["folder"]
        folder.mkdir(exist_ok=True)
        (folder / "params.json").write_text(json.dumps(params, sort_keys=True))
        rows = epochs[epochs["trial_id"] == row["trial_id"]].sort_values("epoch")
        lines = []
        for epoch in rows.to_dict("records"):
            result = {k: _value(k, v) for k, v in epoch.items() if k not in ("label", "design_factor", "seed")}
            result["device"] = _value("device", row.get("device"))
            lines.append(json.dumps({k: v for k, v in result.items() if v is not None}))
        (folder / "result.json").write_text("\n".join(lines) + "\n")
        if row["status"] == "error":
            (folder / "error.txt").write_text("(rebuilt from trials.csv: the trial ended with an error)\n")
    _check(trials, out)
    return out


def _check(trials: pd.DataFrame, out: Path) -> None:
    loaded = load_experiment(out).trials.set_index("trial_id")
    columns = ["label", "seed", "status", "epochs"]
    expected = trials.set_index("trial_id")[columns].sort_index()
    got = loaded[columns].sort_index()
    if not expected.index.equals(got.index) or not (expected.astype(str) == got.astype(str)).all().all():
        diff = pd.concat({"table": expected, "rebuilt": got}, axis=1)
        raise ValueError(f"{out}: the rebuilt folder does not read back as the tables say:\n{diff}")
