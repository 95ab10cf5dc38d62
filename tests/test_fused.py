"""Trials trained as one group (`fit_group`): fused into one stacked network (cnnsearch/fused.py), or one after
another within each epoch; each member trains as its own run would.

Driven by the registry: every model stacks, and its members compute what the lone networks compute. On
real data: a fused member's history matches `fit`'s for its config (seeds, or optimizers of their own; to
float rounding), resumes exactly, trades checkpoints with `fit`, and a member that diverges leaves the
others untouched. A sequential member is `fit` of its config bit for bit, dropout masks included, and its
checkpoints are `fit`'s.
"""
from __future__ import annotations

import copy
import math
import time

import pytest
import torch
import torch.nn.functional as F

from cnnsearch.config import TrainConfig
from cnnsearch.data import ImageSplit
from cnnsearch.engine import (ImageClassifier, build_classifier, evaluate, evaluate_members, fit, fit_group,
                              load_checkpoint)
from cnnsearch.fused import TRIAL_KEYS, StackedClassifier, fit_fused, fit_seeds
from cnnsearch.models import build_model, list_models, model_options

TINY = dict(model="basecnn", dataset="cifar10", train_subset=20, val_size=200, batch_size=50, epochs=2,
            device="cpu", dropout=0.0)
EXACT_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "status")
SEEDS = [0, 1, 2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: threads only add noise and waiting (see test_models.py)
    yield
    torch.set_num_threads(threads)


def _small(name: str, seed: int) -> ImageClassifier:
    """`name` narrow and one block per stage (as test_models.py builds it), initialised from `seed`."""
    defaults = model_options(name)
    options = {"width": 0.25} if "width" in defaults else {}
    if "blocks_per_stage" in defaults:
        options["blocks_per_stage"] = (1,) * len(defaults["blocks_per_stage"])
    torch.manual_seed(seed)
    net = build_model(name, num_classes=10, in_channels=3, image_size=32, **options)
    return ImageClassifier(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def each(callback):
    """fit_seeds's on_epoch, calling callback(m, metrics, state) per member."""
    return lambda reports: [callback(*report) for report in reports]


def _exact(history):
    return [{k: h[k] for k in EXACT_KEYS} for h in history]


@pytest.mark.parametrize("name", list_models())
def test_stacked_members_compute_what_lone_networks_compute(name):
    lone = [_small(name, seed) for seed in (0, 1)]
    stacked = StackedClassifier(copy.deepcopy(lone))
    images = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (2, 4), generator=torch.Generator().manual_seed(1))
    logits = stacked.train()(images)  # (2, 4, 10): member m on batch m
    sum(F.cross_entropy(logits[m], labels[m]) for m in range(2)).backward()
    for m, net in enumerate(lone):
        net.train()
        own = net(images[m])
        F.cross_entropy(own, labels[m]).backward()
        torch.testing.assert_close(logits[m], own, rtol=1e-4, atol=1e-5)
        for i, param in enumerate(net.parameters()):
            torch.testing.assert_close(getattr(stacked, f"p{i}").grad[m], param.grad, rtol=1e-3, atol=1e-5)
        state = stacked.member_state(m)  # BatchNorm's running statistics moved as the lone network's did
        for key, value in net.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-6)
    # Evaluation: one batch through every member, running statistics instead of batch statistics.
    stacked.eval()
    shared = stacked(images[0])
    for m, net in enumerate(lone):
        torch.testing.assert_close(shared[m], net.eval()(images[0]), rtol=1e-4, atol=1e-5)


def test_stacked_evaluation_matches_each_member(cifar10):
    lone = [_small("resnet18", seed) for seed in (3, 4)]
    for net in lone:  # give the running statistics something other than their initial values
        net.train()(cifar10.train.images[:64])
    stacked = StackedClassifier(copy.deepcopy(lone))
    split = ImageSplit(cifar10.test.images[:300], cifar10.test.labels[:300])
    together = evaluate_members(stacked, split, members=2, batch_size=128, num_classes=10)
    for result, net in zip(together, lone):
        alone = evaluate(net, split, batch_size=128, num_classes=10)
        assert torch.equal(result.confusion, alone.confusion)
        assert result.accuracy == alone.accuracy
        assert result.loss == pytest.approx(alone.loss, rel=1e-5)


@pytest.mark.parametrize("optimizer, lr", [("adam", 1e-3), ("sgd", 0.01), ("adamw", 1e-3), ("adamax", 2e-3)])
def test_fused_members_train_as_fit_does(cifar10, optimizer, lr):
    config = TrainConfig(**TINY, optimizer=optimizer, lr=lr, weight_decay=5e-4, augment=True)
    fused = fit_seeds(config, SEEDS, cifar10)
    for seed, result in zip(SEEDS, fused):
        alone = fit(config.replace(seed=seed), cifar10)
        assert result.config.seed == seed and result.status == alone.status == "completed"
        assert len(result.history) == len(alone.history) == config.epochs
        for ours, theirs in zip(result.history, alone.history):
            for key in ("train_loss", "val_loss"):  # float rounding only: grouped kernels sum in another order
                assert ours[key] == pytest.approx(theirs[key], abs=1e-4), (seed, key)
            for key, n in (("train_acc", 200), ("val_acc", 200)):  # at most one image classified otherwise
                assert abs(ours[key] - theirs[key]) <= 1 / n + 1e-12, (seed, key)
            assert ours["lr"] == theirs["lr"]
    # Seeds are different runs, not copies of one.
    assert len({r.history[-1]["train_loss"] for r in fused}) == len(SEEDS)


def test_trials_with_optimizers_of_their_own_train_as_fit_does(cifar10):
    """Members differ in everything TRIAL_KEYS allows (optimizer, lr, momentum, weight decay, schedule): each
    has an optimizer and a schedule of its own, over its slice of the stacked weights."""
    base = TrainConfig(**{**TINY, "epochs": 3, "augment": True})
    configs = [base.replace(optimizer="sgd", lr=0.02, momentum=0.8, lr_schedule="step", step_size=1, lr_decay=0.5),
               base.replace(optimizer="adam", lr=1e-3, weight_decay=1e-3, lr_schedule="exponential"),
               base.replace(optimizer="adamax", lr=2e-3, lr_schedule="cosine", seed=1),
               base.replace(optimizer="adamw", lr=1e-3, weight_decay=0.05, lr_schedule="none", seed=2)]
    fused = fit_fused(configs, cifar10)
    for config, result in zip(configs, fused):
        alone = fit(config, cifar10)
        assert result.config == config
        assert [h["lr"] for h in result.history] == [h["lr"] for h in alone.history]  # its own schedule
        for ours, theirs in zip(result.history, alone.history):
            for key in ("train_loss", "val_loss"):
                assert ours[key] == pytest.approx(theirs[key], abs=1e-4), (config.optimizer, key)


def test_fused_resume_matches_uninterrupted_run(cifar10, tmp_path):
    """Stop after epoch 2 of 3 with the members' checkpoints saved; resuming gives exactly the uninterrupted
    metrics. Dropout and augmentation on, so every generator has to come back."""
    config = TrainConfig(**{**TINY, "epochs": 3, "dropout": 0.5, "augment": True})
    full = fit_seeds(config, SEEDS, cifar10)

    class Stop(Exception):
        pass

    def stop_after_two(reports):
        for m, metrics, state in reports:
            state.save(tmp_path / f"seed{SEEDS[m]}.pt")
        if reports[0][1]["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        fit_seeds(config, SEEDS, cifar10, on_epoch=stop_after_two)
    paths = [tmp_path / f"seed{seed}.pt" for seed in SEEDS]
    assert [load_checkpoint(p)["epoch"] for p in paths] == [2] * len(SEEDS)
    resumed = fit_seeds(config, SEEDS, cifar10, checkpoints=paths)
    assert [_exact(r.history) for r in resumed] == [_exact(r.history) for r in full]


def test_a_member_checkpoint_is_a_fit_checkpoint(cifar10, tmp_path):
    """Member 1 of a fused run, saved after epoch 1, resumes as a lone `fit` run of its seed: it keeps its
    history and trains its second epoch as the fused member did (to float rounding); and `fit` checkpoints
    resume fused."""
    config = TrainConfig(**{**TINY, "augment": True})
    saved = {}
    fused = fit_seeds(config, [5, 6], cifar10,
                      on_epoch=each(lambda m, metrics, state: saved.setdefault((m, metrics["epoch"]), state.state_dict())))
    # copy: fit's optimizer adopts the state's tensors and updates them in place
    alone = fit(config.replace(seed=6), cifar10, checkpoint=copy.deepcopy(saved[(1, 1)]))
    assert _exact(alone.history[:1]) == _exact(fused[1].history[:1])
    assert alone.history[1]["val_loss"] == pytest.approx(fused[1].history[1]["val_loss"], abs=1e-4)
    states = [saved[(0, 1)], saved[(1, 1)]]
    again = fit_seeds(config, [5, 6], cifar10, checkpoints=states)
    assert [_exact(r.history) for r in again] == [_exact(r.history) for r in fused]


def test_a_diverging_member_leaves_the_others_untouched(cifar10):
    config = TrainConfig(**{**TINY, "epochs": 3})
    saved = {}
    fit_seeds(config.replace(epochs=1), SEEDS, cifar10,
              on_epoch=each(lambda m, metrics, state: saved.__setitem__(m, state.state_dict())))
    clean = fit_seeds(config, SEEDS, cifar10, checkpoints=[saved[m] for m in range(len(SEEDS))])
    poisoned = copy.deepcopy(saved[0])
    poisoned["model"] = {k: (v.fill_(math.nan) if v.is_floating_point() else v) for k, v in poisoned["model"].items()}
    results = fit_seeds(config, SEEDS, cifar10, checkpoints=[poisoned, saved[1], saved[2]])
    # Resuming left the states as they were (4 steps of epoch 1).
    assert all(saved[m]["optimizer"]["state"][0]["step"] == 4 for m in range(3))
    assert results[0].status == "diverged"
    assert [h["status"] for h in results[0].history][1:] == ["diverged"]  # and no epoch after it
    for m in (1, 2):
        assert results[m].status == "completed"
        assert _exact(results[m].history) == _exact(clean[m].history)  # bit for bit


@pytest.mark.parametrize("seeds, changes, message", [
    ([], {}, "at least one config"),
    ([0, 0], {}, "the same trial twice"),
    ([0, True], {}, "whole numbers"),
    ([0, "1"], {}, "whole numbers"),
    ([0, -1], {}, r"seed must be in \[0"),
    ([0, 1], {"compile": True}, "does not support compile"),
    ([0, 1], {"channels_last": True}, "does not support channels_last"),
])
def test_bad_fused_input_is_a_clear_error(cifar10, seeds, changes, message):
    with pytest.raises(ValueError, match=message):
        fit_seeds(TrainConfig(**{**TINY, **changes}), seeds, cifar10)


@pytest.mark.parametrize("change", [{"model": "lenet5"}, {"batch_size": 25}, {"epochs": 3}, {"dropout": 0.5},
                                    {"label_smoothing": 0.1}])
def test_fused_trials_share_all_but_their_seed_and_optimizer(cifar10, change):
    config = TrainConfig(**TINY)
    key = next(iter(change))
    assert key not in TRIAL_KEYS
    with pytest.raises(ValueError, match=f"fused trials share everything but seed, .*; {key} differs"):
        fit_fused([config, config.replace(seed=1, **change)], cifar10)


def test_resume_refuses_mismatched_checkpoints(cifar10):
    config = TrainConfig(**{**TINY, "epochs": 2})
    saved = {}
    fit_seeds(config, [0, 1], cifar10, on_epoch=each(lambda m, metrics, s: saved.__setitem__((m, metrics["epoch"]),
                                                                                            s.state_dict())))
    with pytest.raises(ValueError, match="one checkpoint per trial"):
        fit_seeds(config, [0, 1], cifar10, checkpoints=[saved[(0, 1)]])
    with pytest.raises(ValueError, match="different epochs"):
        fit_seeds(config, [0, 1], cifar10, checkpoints=[saved[(0, 1)], saved[(1, 2)]])
    with pytest.raises(ValueError, match="different config.*seed"):  # member 0's state given for seed 1
        fit_seeds(config, [0, 1], cifar10, checkpoints=[saved[(0, 1)], saved[(0, 1)]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_members_replay_one_cuda_graph(cifar10):
    """On CUDA the fused step is captured and replayed (bench/gpu.py's fused cells time this path); it trains
    as the eager fused step does, the partial batch included."""
    # 300 images in batches of 40: 3 warm-up steps, the capture, 3 replays and a partial batch of 20 per epoch
    config = TrainConfig(**{**TINY, "device": "cuda", "bf16": False, "train_subset": 30, "batch_size": 40,
                            "augment": True})
    graphed = fit_seeds(config.replace(cuda_graph=True), SEEDS, cifar10)
    eager = fit_seeds(config.replace(cuda_graph=False), SEEDS, cifar10)
    assert [r.step for r in graphed] == ["cuda_graph"] * len(SEEDS)  # not "eager (capture failed: ...)"
    for ours, theirs in zip(graphed, eager):
        for a, b in zip(ours.history, theirs.history):
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-3)
            assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-3)


@pytest.mark.parametrize("name", list_models())
def test_members_share_each_kernel_launch(name):
    """What fusion is for: the stacked forward runs one convolution and one BatchNorm per layer for all
    members together (vmap's batching rules: grouped convolutions), as many as one network runs, not one per
    member. Counted with torch.profiler; a model whose layer vmap could only loop over would fail here."""
    from torch.profiler import ProfilerActivity, profile

    lone = _small(name, 0)
    stacked = StackedClassifier([_small(name, seed) for seed in range(4)])
    images = torch.randint(0, 256, (4, 2, 3, 32, 32), dtype=torch.uint8)

    def launches(run) -> dict[str, int]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        counts = {e.key: e.count for e in prof.key_averages()}
        return {op: counts.get(op, 0) for op in ("aten::_convolution", "aten::_batch_norm_impl_index")}

    ours, alone = launches(lambda: stacked.train()(images)), launches(lambda: lone.train()(images[0]))
    assert ours["aten::_convolution"] == alone["aten::_convolution"] > 0
    assert ours["aten::_batch_norm_impl_index"] == alone["aten::_batch_norm_impl_index"]


# --- fit_group: members one after another within each epoch (fused=False), and the rules both modes share ---

def _weights_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _members(epochs: int = 2) -> list[TrainConfig]:
    """Three trials that share nothing a sequential group needs shared: seeds, lr, dropout, batch size."""
    base = TrainConfig(**{**TINY, "epochs": epochs, "augment": True})
    return [base.replace(seed=0, dropout=0.5), base.replace(seed=1),
            base.replace(seed=2, lr=3e-3, dropout=0.3, batch_size=40)]


def test_a_sequential_member_trains_bit_for_bit_as_fit_does(cifar10):
    """Each member's history and final weights equal `fit` of its config alone, dropout masks included (members
    0 and 2 draw theirs from their own streams while the others train in between); the caller's RNG is left
    as it was."""
    configs = _members()
    torch.manual_seed(123)
    caller = torch.get_rng_state()
    reports = []
    group = fit_group(configs, cifar10, fused=False,
                      on_epoch=lambda r: reports.append([(m, metrics["epoch"]) for m, metrics, _ in r]))
    assert torch.equal(torch.get_rng_state(), caller)
    assert reports == [[(0, 1), (1, 1), (2, 1)], [(0, 2), (1, 2), (2, 2)]]  # one call per epoch, all members
    for config, result in zip(configs, group):
        alone = fit(config, cifar10)
        assert result.config == config and result.status == alone.status == "completed"
        assert _exact(result.history) == _exact(alone.history)
        assert _weights_equal(result.model, alone.model)
    assert len({r.history[-1]["train_loss"] for r in group}) == 3  # three runs, not one three times


def test_a_sequential_members_epoch_time_is_its_own(cifar10):
    """Members trained one after another each report the time of their own epoch, not the whole group's: the
    members' times of an epoch add up to at most the time between two epochs' reports."""
    stamps, times = [], []

    def on_epoch(reports):
        stamps.append(time.perf_counter())
        times.append([metrics["epoch_time_s"] for _, metrics, _ in reports])

    fit_group(_members(epochs=3), cifar10, fused=False, on_epoch=on_epoch)
    for epoch in (1, 2):  # the epochs between two reports
        assert 0 < sum(times[epoch]) <= stamps[epoch] - stamps[epoch - 1], (times, stamps)


def test_a_sequential_group_resumes_exactly(cifar10, tmp_path):
    """Stopped after epoch 1 of 3 with every member's checkpoint saved, a group resumed from them ends with the
    uninterrupted group's metrics and weights."""
    configs = _members(epochs=3)
    full = fit_group(configs, cifar10, fused=False)

    class Stop(Exception):
        pass

    def stop_after_one(reports):
        for m, metrics, state in reports:
            state.save(tmp_path / f"member{m}.pt")
        raise Stop

    with pytest.raises(Stop):
        fit_group(configs, cifar10, fused=False, on_epoch=stop_after_one)
    paths = [tmp_path / f"member{m}.pt" for m in range(len(configs))]
    resumed = fit_group(configs, cifar10, fused=False, checkpoints=paths)
    assert [_exact(r.history) for r in resumed] == [_exact(r.history) for r in full]
    assert all(_weights_equal(a.model, b.model) for a, b in zip(resumed, full))


def test_a_sequential_member_checkpoint_resumes_in_fit(cifar10):
    """Member 2's checkpoint after epoch 1 is a `fit` checkpoint of its config, its own RNG state included:
    `fit` continues it to exactly the group member's end."""
    configs = _members()
    saved = {}
    group = fit_group(configs, cifar10, fused=False,
                      on_epoch=lambda r: saved.update({(m, s["epoch"]): state.state_dict() for m, s, state in r}))
    # Each member's own stream of torch's global RNG, from torch.manual_seed(seed) as `fit` starts it: member 1
    # (no dropout) drew nothing after its initial weights, member 0 drew its dropout masks every epoch.
    torch.manual_seed(configs[1].seed)
    build_classifier(configs[1], cifar10)
    assert torch.equal(saved[(1, 1)]["torch_rng"], torch.get_rng_state())
    assert torch.equal(saved[(1, 2)]["torch_rng"], torch.get_rng_state())
    assert not torch.equal(saved[(0, 1)]["torch_rng"], saved[(0, 2)]["torch_rng"])
    state = saved[(2, 1)]
    assert state["epoch"] == 1 and state["config"] == configs[2].to_dict()
    alone = fit(configs[2], cifar10, checkpoint=state)
    assert _exact(alone.history) == _exact(group[2].history)
    assert _weights_equal(alone.model, group[2].model)


@pytest.mark.parametrize("fused", [True, False])
def test_a_diverging_member_stops_alone(cifar10, fused):
    """lr 1e6 sends member 1's loss to NaN in its first epoch: it ends "diverged" after that epoch, is not
    validated and reports no more; the others train all their epochs (sequential: exactly as alone)."""
    base = TrainConfig(**{**TINY, "epochs": 3, "optimizer": "sgd", "lr": 0.01, "lr_schedule": "none"})
    configs = [base.replace(seed=0), base.replace(seed=1, lr=1e6), base.replace(seed=2)]
    reported = []
    results = fit_group(configs, cifar10, fused=fused,
                        on_epoch=lambda r: reported.append([m for m, _, _ in r]))
    assert reported == [[0, 1, 2], [0, 2], [0, 2]]
    bad = results[1]
    assert bad.status == "diverged" and [h["status"] for h in bad.history] == ["diverged"]
    assert not math.isfinite(bad.history[0]["train_loss"])
    assert math.isnan(bad.history[0]["val_loss"]) and bad.history[0]["val_acc"] == 0.0
    for m in (0, 2):
        assert results[m].status == "completed"
        assert [h["status"] for h in results[m].history] == ["running", "running", "completed"]
        assert all(math.isfinite(h["val_loss"]) for h in results[m].history)
        if not fused:
            assert _exact(results[m].history) == _exact(fit(configs[m], cifar10).history)


def test_a_sequential_group_refuses_bad_input(cifar10):
    config = TrainConfig(**TINY)
    with pytest.raises(ValueError, match="at least one config"):
        fit_group([], cifar10, fused=False)
    with pytest.raises(ValueError, match="the same trial twice"):
        fit_group([config, config], cifar10, fused=False)
    with pytest.raises(ValueError, match="one checkpoint per trial"):
        fit_group([config, config.replace(seed=1)], cifar10, fused=False, checkpoints=[])
