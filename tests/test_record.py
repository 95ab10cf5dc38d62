"""The experiment record (`cnnsearch.json`): what tune writes is what analysis reads, records in the
format before it still load, and a file that is not a record is one line. No Ray: the record and the
scheduler table are Ray-free."""
from __future__ import annotations

import json

import pytest

from search_spaces import SCHEDULERS, STATE_FILE, ExperimentRecord, Factor, Provenance, RecordError, load_space
from search_spaces.plan import Plan

# The format `tune/experiment.py` wrote before the typed record (an ASHA run; a FIFO run wrote the same keys).
OLD = {
    "space": {"name": "ablation", "path": "/x/ablation.yaml", "description": "Report E's ablation", "source": "report E",
              "design": "one_at_a_time", "metric": "val_acc", "mode": "max", "seeds": [0, 1],
              "base": {"model": "resnet18", "blocks_per_stage": [2, 2, 2, 2], "seed": 0},
              "factors": [{"name": "stem_kernel", "levels": [3, 7], "distribution": None},
                          {"name": "lr", "levels": None, "distribution": ["loguniform", [1e-4, 1e-2]]}],
              "points": [{"label": "base", "factor": None, "values": {}},
                         {"label": "stem_kernel=7", "factor": "stem_kernel", "values": {"stem_kernel": 7}}]},
    "budget": "cpu", "epochs": 8, "scheduler": "asha", "search": "grid", "grace_period": 2, "reduction_factor": 3,
    "num_trials": 18, "dataset": "cifar10", "resources": {"cpu": 1.0, "gpu": 0.0},
    "command": "python -m tune.run --space ablation --budget cpu", "created": "2026-11-26T10:37:52+0000",
}


def test_plan_record_round_trips_through_its_file(tmp_path):
    plan = Plan(load_space("optimizers"), "smoke", scheduler="hyperband", settings={"reduction_factor": 3})
    record = plan.record(resources={"cpu": 1.0, "gpu": 0.25}, command="python -m tune.run --space optimizers",
                         created="2026-01-01T00:00:00+0000", provenance=Provenance.collect())
    path = record.write(str(tmp_path / "exp"))
    assert path.endswith(f"/exp/{STATE_FILE}")
    again = ExperimentRecord.read(str(tmp_path / "exp"))
    assert again == record
    assert (again.scheduler, again.settings, again.num_trials, again.dataset) == ("hyperband", {"reduction_factor": 3}, 16, "cifar10")
    assert again.factors == plan.space.factors and again.points == tuple(plan.space.points())
    assert again.base == plan.base_config()  # JSON values: lists compare with trial configs
    assert json.loads((tmp_path / "exp" / STATE_FILE).read_text())["format"] == 2


def test_old_record_still_loads(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps(OLD))
    record = ExperimentRecord.read(str(tmp_path))
    assert (record.space, record.design, record.budget, record.epochs) == ("ablation", "one_at_a_time", "cpu", 8)
    assert record.scheduler == "asha" and record.settings == {"grace_period": 2, "reduction_factor": 3}
    assert record.rungs == [2, 6] and record.scheduler_entry.stops_early
    assert record.factors == (Factor("stem_kernel", levels=(3, 7)), Factor("lr", distribution=("loguniform", (1e-4, 1e-2))))
    assert record.factor("lr").continuous and not record.factor("stem_kernel").continuous
    assert record.provenance is None and record.mode_of("val_loss") == "min" and record.mode_of("val_acc") == "max"
    # A FIFO run wrote the budget's ASHA settings too: they are not FIFO's.
    (tmp_path / STATE_FILE).write_text(json.dumps({**OLD, "scheduler": "fifo"}))
    fifo = ExperimentRecord.read(str(tmp_path))
    assert fifo.settings == {} and fifo.rungs == [] and not fifo.scheduler_entry.stops_early


@pytest.mark.parametrize("text, message", [
    ("{not json", "cnnsearch.json is not JSON"),
    (json.dumps([1, 2]), "lacks space.factors or epochs"),
    (json.dumps({"space": {"factors": []}}), "lacks space.factors or epochs"),
    (json.dumps({**OLD, "format": 9}), "format 9 is newer"),
    (json.dumps({**OLD, "scheduler": "pbt"}), "scheduler 'pbt' is not one this version knows"),
    (json.dumps({**OLD, "space": {**OLD["space"], "factors": [{"name": "lr"}]}}), "give exactly one of levels and distribution"),
    (json.dumps({**OLD, "epochs": "eight"}), "is not a record this version reads"),
])
def test_a_file_that_is_not_a_record_is_one_line(tmp_path, text, message):
    (tmp_path / STATE_FILE).write_text(text)
    with pytest.raises(RecordError) as info:
        ExperimentRecord.read(str(tmp_path))
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(RecordError, match=f"no {STATE_FILE}"):
        ExperimentRecord.read(str(tmp_path / "elsewhere"))


def test_every_scheduler_describes_itself():
    settings = {"grace_period": 2, "reduction_factor": 3}
    for entry in SCHEDULERS.values():
        own = {k: settings[k] for k in entry.keys}
        assert entry.plan(own, "val_acc").startswith(entry.title) and entry.summary(own).startswith(entry.title)
        assert all(0 < r < 30 for r in entry.rungs(30, own)) and entry.stops_early == bool(entry.rungs(30, own))
    assert SCHEDULERS["asha"].summary(settings) == "ASHA (grace 2, keep 1/3 per rung)"  # the reports' wording
    assert SCHEDULERS["hyperband"].rungs(3, {"reduction_factor": 2}) == [1, 2]
    assert SCHEDULERS["hyperband"].rungs(81, {"reduction_factor": 3}) == [1, 3, 9, 27]
