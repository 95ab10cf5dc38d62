"""What `--resume` checks before Ray reads an experiment folder: restore exactly, or refuse in one line.

`Tuner.restore` unpickles the folder's `tuner.pkl`, its newest `experiment_state-*.json` (JSON with
pickles inside) and the searcher's state files, and unpickling runs whatever a file names. Results
folders are shared (s3://, shared disks), so every one of those pickles is first read by `_Inspector`:
an unpickler that builds nothing and admits only the classes and functions that Tune and Optuna write
for cnnsearch's experiments, the way torch's weights-only loading admits only tensors: each as only
what a real state does with it (called, created without its __init__, or merely referred to), and the
few functions Tune stores as code (argparse's `identity` in the generators' parser, HyperBand's two
lambdas) must be exactly that code. A file naming anything else, or one that is truncated, missing or
not Tune's, is refused, naming it. This is a check before Ray's own unpickling, so the allowlist is
Ray's version's: a newer Ray may write classes it lacks, and the refusal names them.

The same pass checks that the state can restore what the experiment ran: Tune's state file and the
searcher's are present and whole, and every trial in them has params this plan would give a trial
(Tune restarts an experiment it cannot restore with one empty-params trial).
"""
from __future__ import annotations

import fnmatch
import functools
import io
import json
import pickle
import types
from collections.abc import Iterator
from typing import Any

from pyarrow import fs as pafs

from search_spaces import SpaceError, trial_config

from .options import RunError

__all__ = ["check_tune_state", "inspect_pickle", "saved_statuses", "UnsafeState"]

TUNER_FILE = "tuner.pkl"
STATE_GLOB = "experiment_state-*.json"  # Tune's TuneController.CKPT_FILE_TMPL
# The searcher's state, by search: SearchGenerator (Optuna; the TrialList of fixed designs) or
# BasicVariantGenerator (random; fixed designs before TrialList): any one of these sets, whole.
SEARCH_GLOBS = {"grid": (("search_gen_state-*.json", "searcher-state-*.pkl"), ("basic-variant-state-*.json",)),
                "random": (("basic-variant-state-*.json",),),
                "optuna": (("search_gen_state-*.json", "searcher-state-*.pkl"),)}
# Every searcher's state is checked whatever the search (Tune reads what it finds); the callbacks'
# state Tune would also load, but cnnsearch runs no callbacks that keep any.
OTHER_GLOBS = ("basic-variant-state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")
CALLBACK_GLOB = "callback-states-*.pkl"
_CLOUDPICKLE = "CLOUDPICKLE_FALLBACK"  # Tune's marker of a pickle inside its JSON
MAX_BYTES = 256 * 2**20  # a state file larger than this is not one Tune wrote for cnnsearch

# What Tune and Optuna pickle for cnnsearch's experiments (Ray 2.60, Optuna 4-5, every search and
# scheduler), found by reading the state of real runs. Three kinds, by what a pickle may do with them:
# call them (REDUCE) with any arguments, which these survive (enums, numbers, regexes, numpy arrays
# and generators, a pyarrow filesystem from a URI, cloudpickle's cell and function helpers);
_CALLABLE: dict[str, set[str]] = {
    "collections": {"deque"}, "datetime": {"datetime"}, "re": {"_compile"},
    "numpy": {"dtype"}, "numpy._core.multiarray": {"_reconstruct"}, "numpy.core.multiarray": {"_reconstruct"},
    "numpy.random._pickle": {"__bit_generator_ctor", "__randomstate_ctor"},
    "numpy.random.bit_generator": {"__pyx_unpickle_SeedSequence"},
    "optuna.study._study_direction": {"StudyDirection"}, "optuna.trial._state": {"TrialState"},
    "pyarrow._fs": {"FileSystem._from_uri"}, "ray.air._internal.usage": {"AirEntrypoint"},
    "ray.cloudpickle.cloudpickle": {"_function_setstate", "_make_cell", "_make_empty_cell"},
}
# create without calling their __init__ (NEWOBJ), then fill in their attributes;
_CLASSES: dict[str, set[str]] = {
    "argparse": {"ArgumentParser", "_ArgumentGroup", "_HelpAction", "_StoreAction", "_StoreTrueAction"},
    "uuid": {"UUID"},
    "optuna.distributions": {"CategoricalDistribution", "FloatDistribution", "IntDistribution"},
    "optuna.pruners._nop": {"NopPruner"}, "optuna.samplers._lazy_random_state": {"LazyRandomState"},
    "optuna.samplers._random": {"RandomSampler"}, "optuna.samplers._tpe.sampler": {"TPESampler"},
    "optuna.samplers._tpe.parzen_estimator": {"_ParzenEstimatorParameters"},
    "optuna.search_space.intersection": {"IntersectionSearchSpace"},
    "optuna.storages._in_memory": {"InMemoryStorage", "_StudyInfo"}, "optuna.study.study": {"Study"},
    "optuna.trial._frozen": {"FrozenTrial"}, "optuna.trial._trial": {"Trial"},
    "ray.train": {"SyncConfig"}, "ray.train._internal.checkpoint_manager": {"_CheckpointManager"},
    "ray.train._internal.session": {"_TrainingResult"},
    "ray.train._internal.storage": {"StorageContext", "_FilesystemSyncer"},
    "ray.tune": {"Checkpoint", "CheckpointConfig", "FailureConfig", "RunConfig"},
    "ray.tune.execution.placement_groups": {"PlacementGroupFactory"},
    "ray.tune.experiment.experiment": {"Experiment"}, "ray.tune.progress_reporter": {"CLIReporter"},
    "ray.tune.schedulers.async_hyperband": {"AsyncHyperBandScheduler", "_Bracket"},
    "ray.tune.schedulers.hyperband": {"HyperBandScheduler"},
    "ray.tune.schedulers.trial_scheduler": {"FIFOScheduler"},
    "ray.tune.search.basic_variant": {"BasicVariantGenerator", "_TrialIterator", "_VariantIterator"},
    "ray.tune.search.optuna.optuna_search": {"OptunaSearch"},
    "ray.tune.search.sample": {"Categorical", "Categorical._Uniform", "Float", "Float._LogUniform", "Float._Uniform",
                               "Integer", "Integer._Uniform", "_BackwardsCompatibleNumpyRng"},
    "ray.tune.stopper.noop": {"NoopStopper"}, "ray.tune.tune_config": {"TuneConfig"},
    "tune.trials": {"TrialList"},  # the searcher of fixed designs (a list of plain params)
    "tune.progress": {"ProgressLine"},  # the runner's progress line (plain values only)
    "ray.air.integrations.mlflow": {"MLflowLoggerCallback"}, "ray.air._internal.mlflow": {"_MLflowLoggerUtil"},  # --log-to mlflow
}
# or only put in place (classes and functions stored as attributes, e.g. argparse's types).
_REFERENCES: dict[str, set[str]] = {
    "argparse": {"HelpFormatter", "_AppendAction", "_AppendConstAction", "_CountAction", "_ExtendAction",
                 "_StoreConstAction", "_StoreFalseAction", "_SubParsersAction", "_VersionAction"},
    "builtins": {"int", "str", "float"}, "json": {"loads"}, "numpy": {"ndarray"},
    "numpy.random._mt19937": {"MT19937"}, "numpy.random.bit_generator": {"SeedSequence"},
    "optuna.samplers._tpe.parzen_estimator": {"_ParzenEstimator"}, "optuna.samplers._tpe.sampler": {"default_weights"},
    "ray.train._internal.storage": {"_upload_to_fs_path"}, "ray.tune.resources": {"json_to_resources"},
    "tune.experiment": {"_trial_dirname"},
}
_IMPORTS = {"numpy", "mlflow"}  # modules a pickle may import (cloudpickle's subimport): numpy in stored functions, mlflow in its logger


class UnsafeState(ValueError):
    """A pickle that names something outside the allowlist, or is not a pickle at all."""


def inspect_pickle(data: bytes) -> None:
    """Read the pickle `data` without building anything; UnsafeState (one line) if it names a class
    or function outside the allowlist, or cannot be read."""
    try:
        _Inspector(io.BytesIO(data)).load()
    except UnsafeState:
        raise
    except Exception as exc:  # truncated, corrupt, or not a pickle: pickle raises many types
        raise UnsafeState(f"is not a whole pickle ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None


class _Stub:
    """Stands in for every object the pickle would build: takes any state and items, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _Verified(_Stub):
    """A code object equal to one of the functions Tune stores as code."""


def _stand_in(qualified: str, *, call: bool, create: bool) -> type:
    """A stub class for a global: `call` lets REDUCE call it, `create` lets NEWOBJ create it."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise UnsafeState(f"{'calls' if create else 'uses'} {qualified}, which Tune's state never does")

    body: dict[str, Any] = {}
    if not call:
        body["__init__"] = refuse  # REDUCE calls the class (__new__, then __init__); NEWOBJ only __new__
    if not create:
        body["__new__"] = refuse
    return type(qualified, (_Stub,), body)


@functools.lru_cache(maxsize=1)
def _known_code() -> set[tuple]:
    """The functions Tune stores as code for cnnsearch: argparse's `identity` (in the grid and random
    generators' parser) and HyperBand's two bracket-size lambdas."""
    import argparse

    from ray.tune.schedulers import HyperBandScheduler

    hyperband = HyperBandScheduler(max_t=2)
    functions = (argparse.ArgumentParser()._registries["type"][None], hyperband._get_n0, hyperband._get_r0)
    return {_code_key(f.__code__) for f in functions}


def _code_key(code: types.CodeType) -> tuple:
    return (code.co_name, code.co_code, code.co_consts, code.co_names, code.co_varnames, code.co_freevars,
            code.co_argcount)


def _code(*args: Any) -> _Verified:
    """cloudpickle rebuilds a function's code as types.CodeType(*args): only the known code passes."""
    try:
        code = types.CodeType(*args)  # building a code object runs nothing
    except Exception:
        raise UnsafeState("holds a malformed code object") from None
    if _code_key(code) not in _known_code():
        raise UnsafeState(f"holds the code of a function {code.co_name!r}, which Tune's state for cnnsearch "
                          "never does (loading it could run code)")
    return _Verified()


def _builtin_type(name: Any) -> Any:
    if name == "CodeType":
        return _code
    raise UnsafeState(f"builds the type {name!r}, which Tune's state never does")


def _make_function(code: Any, *args: Any) -> _Stub:
    if not isinstance(code, _Verified):
        raise UnsafeState("builds a function from code that was not checked")
    return _Stub()


def _subimport(name: Any) -> _Stub:
    if name not in _IMPORTS:
        raise UnsafeState(f"imports the module {name!r}, which Tune's state never does")
    return _Stub()


_SPECIAL = {("ray.cloudpickle.cloudpickle", "_builtin_type"): _builtin_type,
            ("ray.cloudpickle.cloudpickle", "_make_function"): _make_function,
            ("ray.cloudpickle.cloudpickle", "subimport"): _subimport}


class _Inspector(pickle.Unpickler):
    """Walks a pickle as pickle.load would, with a stub in place of every object, so nothing it
    names is imported or run; refuses a global outside the allowlist as soon as it is named."""

    def find_class(self, module: str, name: str) -> Any:
        special = _SPECIAL.get((module, name))
        if special is not None:
            return special
        qualified = f"{module}.{name}"
        if name in _CALLABLE.get(module, ()):
            return _stand_in(qualified, call=True, create=True)
        if name in _CLASSES.get(module, ()):
            return _stand_in(qualified, call=False, create=True)
        if name in _REFERENCES.get(module, ()):
            return _stand_in(qualified, call=False, create=False)
        raise UnsafeState(f"names {qualified}, which Tune's state for cnnsearch never holds (loading it could "
                          "run code)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeState("refers to a persistent object, which Tune's state never does")


# ------------------------------------------------------------------------------------- the folder
def check_tune_state(filesystem: pafs.FileSystem, exp_path: str, shown: str, plan) -> None:
    """RunError (one line, naming the file) unless Tune can restore `exp_path` exactly and safely:
    tuner.pkl, the newest experiment state and the searcher's state are present, whole, and name
    nothing outside the allowlist, and each trial's params are ones `plan` gives."""
    names = [e.base_name for e in filesystem.get_file_info(pafs.FileSelector(exp_path))
             if e.type == pafs.FileType.File]
    states = sorted(fnmatch.filter(names, STATE_GLOB))
    if not states:
        raise RunError(f"--resume: {shown} has no Tune state ({STATE_GLOB}): the experiment never started, or the "
                       "file was deleted; it cannot be resumed (start it again under another --name)")
    if TUNER_FILE not in names:
        raise RunError(f"--resume: {shown} has no {TUNER_FILE}; it cannot be resumed (start it again under "
                       "another --name)")
    sets = SEARCH_GLOBS[plan.search]
    if not any(all(fnmatch.filter(names, pattern) for pattern in patterns) for patterns in sets):
        shown_sets = " or ".join(" + ".join(patterns) for patterns in sets)
        raise RunError(f"--resume: {shown} lacks the searcher's state ({shown_sets}): Tune would start new "
                       "trials in place of the lost ones; it cannot be resumed (start it again under "
                       "another --name)")
    for name in fnmatch.filter(names, CALLBACK_GLOB):
        raise RunError(f"--resume: refusing {shown}/{name}: cnnsearch runs no callbacks that keep state, so "
                       "this file was not written by its run (loading it could run code)")
    checked = {TUNER_FILE, *(n for pattern in OTHER_GLOBS for n in fnmatch.filter(names, pattern))}
    for name in sorted(checked):
        _check_pickle(_read(filesystem, f"{exp_path}/{name}", shown), f"{shown}/{name}")
    newest = states[-1]  # the one Tune restores: the largest name, whose timestamp is the latest
    state = _state_json(_read(filesystem, f"{exp_path}/{newest}", shown), f"{shown}/{newest}")
    _check_trials(state, plan, f"{shown}/{newest}")


def saved_statuses(filesystem: pafs.FileSystem, exp_path: str) -> list[str]:
    """Each trial's status (TERMINATED, ERROR, RUNNING, PENDING, PAUSED) in Tune's newest saved state,
    the one --resume restores; [] when there is none. Plain JSON: no pickle is read."""
    try:
        names = [e.base_name for e in filesystem.get_file_info(pafs.FileSelector(exp_path))]
        newest = max(fnmatch.filter(names, STATE_GLOB), default=None)
        if newest is None:
            return []
        with filesystem.open_input_stream(f"{exp_path}/{newest}") as f:
            state = json.loads(f.read().decode("utf-8"))
        return [json.loads(trial)["status"] for trial, _ in state["trial_data"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _read(filesystem: pafs.FileSystem, path: str, shown: str) -> bytes:
    try:
        with filesystem.open_input_stream(path) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RunError(f"--resume: cannot read {path.rsplit('/', 1)[-1]} in {shown} "
                       f"({getattr(exc, 'strerror', None) or exc})") from None
    if len(data) > MAX_BYTES:
        raise RunError(f"--resume: {path.rsplit('/', 1)[-1]} in {shown} is over {MAX_BYTES >> 20} MiB; "
                       "Tune never writes state that large for cnnsearch")
    return data


def _check_pickle(data: bytes, shown: str) -> None:
    try:
        inspect_pickle(data)
    except UnsafeState as exc:
        raise RunError(f"--resume: refusing {shown}: it {exc}") from None


def _state_json(data: bytes, shown: str) -> dict[str, Any]:
    """Tune's experiment state: JSON whose pickles (trial fields, CLOUDPICKLE_FALLBACK values) all pass."""
    try:
        state = json.loads(data.decode("utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("trial_data"), list):
            raise ValueError("no trial_data list")
        trials = []
        for item in state["trial_data"]:
            trial_json, metadata_json = item
            trial, metadata = json.loads(trial_json), json.loads(metadata_json)
            if not isinstance(trial, dict):
                raise ValueError("a trial's state is not a mapping")
            trials.append(trial)
            for blob in (*_embedded(trial), *_embedded(metadata), *_embedded(state.get("runner_data"))):
                _check_pickle(blob, shown)
            for key in _nonjson_fields(trial):
                _check_pickle(bytes.fromhex(trial[key]), shown)
    except RunError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:  # truncated, half-written, not Tune's
        raise RunError(f"--resume: {shown} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); "
                       "it cannot be resumed (start it again under another --name)") from None
    state["trials"] = trials
    return state


def _nonjson_fields(trial: dict[str, Any]) -> list[str]:
    """The trial fields Tune stores as hex pickles (Trial._nonjson_fields)."""
    from ray.tune.experiment.trial import Trial

    return [k for k in Trial._nonjson_fields if isinstance(trial.get(k), str)]


def _embedded(value: Any) -> Iterator[bytes]:
    if isinstance(value, dict):
        if value.get("_type") == _CLOUDPICKLE:
            yield bytes.fromhex(value["value"])
            return
        for item in value.values():
            yield from _embedded(item)
    elif isinstance(value, list):
        for item in value:
            yield from _embedded(item)


def _check_trials(state: dict[str, Any], plan, shown: str) -> None:
    """Every trial Tune would restore must be one this plan runs: never an empty or foreign config."""
    expected = plan.trial_configs()  # None for sampled designs: any draw of the space
    for trial in state["trials"]:
        params = trial.get("config")
        try:
            if not isinstance(params, dict) or "seed" not in params:
                raise SpaceError("empty, or without a seed")
            config = trial_config(params)
        except (ValueError, TypeError) as exc:  # SpaceError, or a value of the wrong shape
            raise RunError(f"--resume: {shown}: trial {trial.get('trial_id')} has params this experiment never "
                           f"gives ({exc}); it cannot be resumed") from None
        folder = trial.get("relative_logdir")
        if not isinstance(folder, str) or folder in ("", ".", "..") or "/" in folder or "\\" in folder:
            raise RunError(f"--resume: {shown}: trial {trial.get('trial_id')} has the folder {folder!r}, which is "
                           "not a folder name in the experiment; it cannot be resumed")
        if expected is not None and json.dumps(config, sort_keys=True) not in expected:
            raise RunError(f"--resume: {shown}: trial {trial.get('trial_id')} has params that are not one of "
                           "this space's trials (was the space file edited?); resume with the space it ran")
    if len(state["trials"]) > plan.num_trials:
        raise RunError(f"--resume: {shown} holds {len(state['trials'])} trials, but the experiment has "
                       f"{plan.num_trials}; it cannot be resumed")
