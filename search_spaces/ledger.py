"""The runner's ledger, `groups.json` in the experiment folder: each Tune trial (a design point with its
seeds) by folder name, with its wave, point label, seeds and how it ended, and each wave's look at the claims.

`tune/` writes it (the driver only, whole, on every change); `analysis/` reads it for how trials ended and
which wave each seed belongs to; `--resume` rebuilds what is left to run from it. Plain JSON: nothing in a
shared results folder is unpickled.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .record import RecordError, put_file

if TYPE_CHECKING:
    from .plan import Group

__all__ = ["Ledger", "LEDGER_FILE", "STATUSES"]

LEDGER_FILE = "groups.json"
# planned: not started yet; running: started, not ended; terminated: ended (its last epoch, or stopped by the
# scheduler); error: crashed past its retries; replaced: a sampled draw that had not ended, drawn again by a resume.
STATUSES = ("planned", "running", "terminated", "error", "replaced")


class Ledger:
    """`groups`: folder -> {"wave", "label" (None for a sampled draw), "seeds", "status"[, "params"]};
    `looks`: one JSON object per look at the claims (--until-decided)."""

    def __init__(self, filesystem: Any, exp_path: str) -> None:
        self.filesystem, self.path = filesystem, f"{exp_path.rstrip('/')}/{LEDGER_FILE}"
        self.groups: dict[str, dict[str, Any]] = {}
        self.looks: list[dict[str, Any]] = []

    @classmethod
    def read(cls, filesystem: Any, exp_path: str) -> Ledger:
        """The ledger of `exp_path` (empty when it has none); RecordError (one line) for a damaged one."""
        ledger = cls(filesystem, exp_path)
        try:
            with filesystem.open_input_stream(ledger.path) as f:
                data = json.loads(f.read().decode("utf-8"))
            groups, looks = dict(data["groups"]), list(data["looks"])
            for name, group in groups.items():
                if group["status"] not in STATUSES or not isinstance(group["wave"], int) or \
                        not all(isinstance(s, int) for s in group["seeds"]):
                    raise ValueError(f"trial {name} is not a ledger entry")
        except FileNotFoundError:
            return ledger
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise RecordError(f"{LEDGER_FILE} is damaged ({' '.join(str(exc).split())[:120]})") from None
        ledger.groups, ledger.looks = groups, looks
        return ledger

    def write(self) -> None:
        put_file(self.filesystem, self.path, json.dumps({"groups": self.groups, "looks": self.looks}, indent=1).encode())

    def plan(self, groups: Iterable[Group]) -> None:
        """Add trials about to run (search_spaces.plan.Group); those already there keep their status."""
        for g in groups:
            self.groups.setdefault(g.name, {"wave": g.wave, "label": g.point.label, "seeds": list(g.seeds),
                                            "status": "planned"})
        self.write()

    def mark(self, folder: str, status: str, params: Mapping[str, Any]) -> None:
        """Record that the trial in `folder` (with `params`) is now `status`; a sampled draw keeps its params,
        so that a resume can draw it again."""
        entry = self.groups.setdefault(folder, {"wave": 1, "label": None, "seeds": list(params.get("seeds", []))})
        entry["status"] = status
        if entry["label"] is None:
            entry["params"] = {k: v for k, v in params.items() if k != "seeds"}
        self.write()

    def count(self, status: str) -> int:
        return sum(g["status"] == status for g in self.groups.values())

    @property
    def wave(self) -> int:
        """The latest wave planned (1 for an empty ledger)."""
        return max((g["wave"] for g in self.groups.values()), default=1)

    def status(self, folder: str) -> str | None:
        group = self.groups.get(folder)
        return group["status"] if group else None
