"""TrainConfig validation: every bad value is a ValueError with a message that says what is allowed."""
from __future__ import annotations

import pytest

from cnnsearch.config import LR_SCHEDULES, OPTIMIZERS, TrainConfig


def test_defaults_are_report_e_baseline():
    c = TrainConfig()
    assert (c.model, c.optimizer, c.lr, c.batch_size, c.epochs) == ("resnet18", "adam", 1e-3, 512, 30)
    assert (c.lr_schedule, c.lr_decay) == ("exponential", 0.9)


def test_round_trip_through_dict():
    c = TrainConfig(model="resnet18", blocks_per_stage=[3, 3, 3, 3], dropout=0.4, stem_kernel=7)
    assert c.blocks_per_stage == (3, 3, 3, 3)
    d = c.to_dict()
    assert d["blocks_per_stage"] == [3, 3, 3, 3]
    assert TrainConfig.from_dict(d) == c


def test_model_options_only_those_set():
    assert TrainConfig(model="basecnn").model_options() == {}
    assert TrainConfig(stem_kernel=7, stem_bn=False).model_options() == {"stem_kernel": 7, "stem_bn": False}


def test_unknown_key_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) lerning_rate.*known keys:.*lr"):
        TrainConfig.from_dict({"lerning_rate": 0.1})


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "rmsprop"}, "optimizer must be one of " + ", ".join(OPTIMIZERS)),
    ({"lr_schedule": "linear"}, "lr_schedule must be one of " + ", ".join(LR_SCHEDULES)),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"train_subset": 0}, "train_subset must be a positive number"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ({"dataset": "svhn"}, "dataset must be one of cifar10, cifar100, mnist, imagefolder:PATH"),
    ({"dataset": "imagefolder:"}, "dataset must be one of"),
    ({"model": "resnet19"}, "resnet18"),  # unknown model: the message lists the known names
    ({"stem_kernel": 5}, "stem_kernel"),
    ({"dropout": 1.2}, "dropout"),
    ({"blocks_per_stage": (2, 2, 2)}, "blocks_per_stage"),
    ({"width": 0.0}, "width"),
    ({"model": "basecnn", "stem_kernel": 7}, "stem_kernel"),  # an option the family does not take
])
def test_bad_values_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        TrainConfig().lr = 0.1  # type: ignore[misc]


def test_geometry_comes_from_the_data_sources(tmp_path):
    """cifar100 has 100 classes and an image folder its own size: a model that cannot take the folder's
    12x12 images is refused at once; a folder that cannot be read here is left to the data load."""
    from PIL import Image

    from cnnsearch.data.sources import geometry

    assert geometry("cifar100").num_classes == 100 and geometry("mnist") == (1, 28, 10)
    for split in ("train", "test"):
        for cls in ("a", "b", "c"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("L", (12, 12)).save(tmp_path / split / cls / "0.png")  # grey 12x12
    folder = f"imagefolder:{tmp_path}"
    assert geometry(folder) == (1, 12, 3)
    with pytest.raises(ValueError, match="image_size must be >= 16"):
        TrainConfig(model="basecnn", dataset=folder)
    TrainConfig(model="resnet18", dataset=folder)  # global pooling: any size
    TrainConfig(model="basecnn", dataset=f"imagefolder:{tmp_path / 'elsewhere'}")


def test_the_network_is_built_once_not_per_construction():
    from cnnsearch import config as config_module

    c = TrainConfig(model="densenet121", width=0.5)
    built = len(config_module._MODEL_ERRORS)
    for i in range(50):
        c = c.replace(lr=1e-3 * (i + 1))
    TrainConfig.from_dict(c.to_dict())
    assert len(config_module._MODEL_ERRORS) == built
    TrainConfig(model="densenet121", width=0.5, stem_bn=True)
    with pytest.raises(ValueError, match="stem_bn must be True or False"):  # 1 is not True to the cache either
        TrainConfig(model="densenet121", width=0.5, stem_bn=1)


def test_config_and_models_do_not_import_each_other():
    """The config asks the models (deferred, on construction) whether a network builds; the models never
    import the config, so there is no import circle, and importing the config loads neither them nor torch."""
    import subprocess
    import sys

    code = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
            "print(sorted(m for m in ('cnnsearch.config', 'cnnsearch.models', 'torch') if m in sys.modules))")
    loaded = {module: subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True,
                                     check=True).stdout.strip() for module in ("cnnsearch.config", "cnnsearch.models")}
    assert loaded == {"cnnsearch.config": "['cnnsearch.config']", "cnnsearch.models": "['cnnsearch.models', 'torch']"}
