"""Model zoo tests, driven by the registry: a model is tested the moment it is registered.

Speed (the suite runs on 2 CPU cores): structure checks build a narrow, one-block-per-stage network
(see `_small`), since what they check does not depend on depth or width; the forward/backward test
runs the full default depth, at full width where that is cheap.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import SqueezeExcitation

from cnnsearch.models import build_model, describe_model, list_models, model_options, register_model, variant
from cnnsearch.models.basecnn import BaseCNN
from cnnsearch.models.resnet import ResNet
from cnnsearch.models.se_resnet import SEBasicBlock, SEBottleneck

MODELS = list_models()
ALL_OPTIONS = ("stem_kernel", "stem_bn", "dropout", "blocks_per_stage", "width")

# Depth tables from the course reports (shared/docs/seeds.md).
SEED_DEPTHS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "densenet121": (6, 12, 24, 16),
    "densenet169": (6, 12, 32, 32),
    "densenet201": (6, 12, 48, 32),
    "densenet161": (6, 12, 36, 24),
    "densenet264": (6, 12, 64, 48),
}
SEED_DEPTHS.update({f"se_{name}": SEED_DEPTHS[name] for name in list(SEED_DEPTHS) if name.startswith("resnet")})

# Forward/backward on CPU at full width is cheap for these (about 1 s or less each); the deeper ResNets and all
# DenseNets run at width 0.25 (same depth, a quarter of the channels) to keep the suite fast.
FULL_WIDTH = {
    "basecnn", "lenet5", "mobilenet_v1", "mobilenet_v2", "resnet18", "resnet34", "se_resnet18", "se_resnet34",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Batches of 2 small images gain nothing from intra-op threads, and on a shared 2-core machine
    # OpenMP threads waiting on each other made this module 3-5x slower. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _taking(option: str) -> list[str]:
    return [name for name in MODELS if option in model_options(name)]


def _small(name: str, **options: object) -> nn.Module:
    """`name` at width 0.25 with one block per stage, unless `options` say otherwise (fast to build)."""
    defaults = model_options(name)
    kwargs: dict[str, object] = {}
    if "width" in defaults:
        kwargs["width"] = 0.25
    if "blocks_per_stage" in defaults:
        kwargs["blocks_per_stage"] = (1,) * len(defaults["blocks_per_stage"])
    kwargs.update(options)
    image_size = int(kwargs.pop("image_size", 32))
    in_channels = int(kwargs.pop("in_channels", 3))
    return build_model(name, num_classes=10, in_channels=in_channels, image_size=image_size, **kwargs)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def _leaf_next_to(model: nn.Module, target: nn.Module, offset: int) -> nn.Module:
    """The leaf module `offset` places after `target` (registration order is forward order in the zoo)."""
    leaves = [m for m in model.modules() if not list(m.children())]
    return leaves[[m is target for m in leaves].index(True) + offset]


def _forward_backward(model: nn.Module, shape: tuple[int, int, int]) -> torch.Tensor:
    model.train()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))  # (B=2, C, H, W)
    out = model(x)
    out.square().mean().backward()
    return out


# ------------------------------------------------------------------------------------ registry
def test_registry_has_every_model_of_the_reports():
    # A subset: registering another model must not fail this test (it is tested by the ones below).
    expected = {"basecnn", "lenet5", "mobilenet_v1", "mobilenet_v2", *SEED_DEPTHS}
    assert expected <= set(MODELS)
    assert MODELS == sorted(MODELS)


def test_option_support_matrix():
    for name in MODELS:
        assert set(model_options(name)) <= set(ALL_OPTIONS), name
    for name in ("basecnn", "lenet5"):
        assert set(model_options(name)) == {"dropout", "width"}
    for name in {"mobilenet_v1", "mobilenet_v2", *SEED_DEPTHS}:
        assert set(model_options(name)) == set(ALL_OPTIONS), name


@pytest.mark.parametrize("name", sorted(SEED_DEPTHS))
def test_default_depths_follow_the_reports(name):
    assert model_options(name)["blocks_per_stage"] == SEED_DEPTHS[name]


def test_options_are_declared_once():
    import dataclasses

    from cnnsearch.config import MODEL_OPTION_KEYS
    from cnnsearch.models.layers import DATA_ARGS, ModelArgs

    assert [f.name for f in dataclasses.fields(ModelArgs)] == [*DATA_ARGS, *MODEL_OPTION_KEYS]
    assert set(ALL_OPTIONS) == set(MODEL_OPTION_KEYS)


def test_option_defaults():
    opts = model_options("resnet18")
    assert (opts["stem_kernel"], opts["stem_bn"], opts["dropout"], opts["width"]) == (3, True, 0.0, 1.0)


def test_count_parameters_builds_on_the_meta_device():
    from cnnsearch.models import count_parameters

    options = {"num_classes": 10, "image_size": 28, "in_channels": 1, "width": 0.5}
    assert count_parameters("basecnn", **options) == sum(p.numel() for p in build_model("basecnn", **options).parameters())
    assert count_parameters("resnet18", num_classes=10, width=1000) > 10**10  # nothing allocated
    with pytest.raises(ValueError, match="width"):
        count_parameters("resnet18", num_classes=10, width=0.0)


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18")(lambda **kwargs: nn.Identity())
    with pytest.raises(ValueError, match="already registered"):
        variant("resnet34", ResNet, SEBasicBlock, blocks_per_stage=(1, 1, 1, 1))
    assert "resnet18" in list_models()
    assert model_options("resnet34")["blocks_per_stage"] == (3, 4, 6, 3)  # the first registration stands


def test_family_built_directly_rejects_options_it_does_not_take():
    with pytest.raises(TypeError, match="stem_kernel"):
        BaseCNN(num_classes=10, stem_kernel=3)
    with pytest.raises(ValueError, match="sequence of 4 integers"):  # no depth table outside a variant
        ResNet(SEBasicBlock, num_classes=10)


# ---------------------------------------------------------------------------- forward/backward
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name, shape):
    width = 1.0 if name in FULL_WIDTH else 0.25
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=shape[0], image_size=shape[1], width=width)
    out = _forward_backward(model, shape)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient (unused layer?)"
        assert torch.isfinite(param.grad).all(), pname


@pytest.mark.parametrize("name", MODELS)
def test_builds_on_meta_device_with_default_depth(name):
    # The lead validates configs by building on the meta device: no real computation at build time.
    with torch.device("meta"):
        model = build_model(name, num_classes=10)
    assert all(p.device.type == "meta" for p in model.parameters())
    if "blocks_per_stage" in model_options(name):
        assert tuple(len(stage) for stage in model.stages) == model_options(name)["blocks_per_stage"]


# ------------------------------------------------------------------------------------- options
def _check_stem_kernel(name: str) -> None:
    default = _small(name)
    conv = _first_conv(default)
    assert conv is default.stem[0]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))

    model = _small(name, stem_kernel=7, in_channels=1, image_size=28)
    conv = _first_conv(model)
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())  # no ImageNet max-pool
    out = _forward_backward(model, (1, 28, 28))  # 28x28 still reaches the head with stride 2 in the stem
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def _check_stem_bn(name: str) -> None:
    default = _small(name)
    assert isinstance(_leaf_next_to(default, _first_conv(default), 1), nn.BatchNorm2d)
    assert _first_conv(default).bias is None

    model = _small(name, stem_bn=False)
    conv = _first_conv(model)
    assert not isinstance(_leaf_next_to(model, conv, 1), nn.BatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.stem)
    assert conv.bias is not None  # without BN the stem conv needs its own bias


def _check_dropout(name: str) -> None:
    default = _small(name)
    assert not any(isinstance(m, nn.Dropout) for m in default.modules())

    model = _small(name, dropout=0.4)
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    before = _leaf_next_to(model, last_linear, -1)
    assert isinstance(before, nn.Dropout) and before.p == pytest.approx(0.4)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 1


def _check_blocks_per_stage(name: str) -> None:
    num_stages = len(model_options(name)["blocks_per_stage"])
    blocks = tuple(1 + i % 2 for i in range(num_stages))  # 1, 2, 1, 2, ...
    model = _small(name, blocks_per_stage=list(blocks))
    assert tuple(len(stage) for stage in model.stages) == blocks
    out = _forward_backward(model, (3, 32, 32))
    assert out.shape == (2, 10)
    deeper = _small(name, blocks_per_stage=[b + 1 for b in blocks])
    assert _count(deeper) > _count(model)


def _check_width(name: str) -> None:
    full, half = _small(name, width=1.0), _small(name, width=0.5)
    assert _count(half) < _count(full)
    assert _first_conv(half).out_channels == round(_first_conv(full).out_channels * 0.5)
    out = _forward_backward(half, (3, 32, 32))
    assert out.shape == (2, 10)


OPTION_CHECKS = {
    "stem_kernel": _check_stem_kernel,
    "stem_bn": _check_stem_bn,
    "dropout": _check_dropout,
    "blocks_per_stage": _check_blocks_per_stage,
    "width": _check_width,
}


@pytest.mark.parametrize(("name", "option"), [(name, opt) for name in MODELS for opt in model_options(name)])
def test_option_changes_the_module(name, option):
    # A KeyError here means a family grew an option that no test checks yet.
    OPTION_CHECKS[option](name)


@pytest.mark.parametrize("name", _taking("stem_kernel"))
def test_none_means_family_default(name):
    explicit = _small(name)
    nones = _small(name, stem_kernel=None, stem_bn=None, dropout=None)
    assert repr(explicit) == repr(nones)


@pytest.mark.parametrize("name", ["basecnn", "lenet5"])
def test_base_cnn_layers_match_the_reports(name):
    model = build_model(name, num_classes=10, in_channels=3 if name == "basecnn" else 1,
                        image_size=32 if name == "basecnn" else 28)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3 if name == "basecnn" else 1, 6, (5, 5), (0, 0) if name == "basecnn" else (2, 2)),
        (6, 16, (5, 5), (0, 0)),
    ]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 4


def test_base_cnn_flatten_size_follows_image_size():
    model = build_model("basecnn", num_classes=10, in_channels=1, image_size=28)
    assert model.classifier.fc1.in_features == 16 * 4 * 4  # 28 -> 24 -> 12 -> 8 -> 4
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


# -------------------------------------------------------------- architecture against references
STEM_7_TO_3 = 64 * 3 * (7 * 7 - 3 * 3)  # torchvision's 7x7 ImageNet stem conv minus our 3x3 one


@pytest.mark.parametrize(
    ("name", "reference", "stem_difference"),
    [
        ("resnet50", torchvision.models.resnet50, STEM_7_TO_3),
        ("densenet121", torchvision.models.densenet121, STEM_7_TO_3),
        ("densenet161", torchvision.models.densenet161, 96 * 3 * (7 * 7 - 3 * 3)),
        ("mobilenet_v2", torchvision.models.mobilenet_v2, 0),
    ],
)
def test_parameter_count_matches_torchvision(name, reference, stem_difference):
    # Same blocks and widths as torchvision; only the stem conv differs (strides hold no weights).
    with torch.device("meta"):
        ours, theirs = build_model(name, num_classes=10), reference(num_classes=10)
    assert _count(ours) == _count(theirs) - stem_difference


def test_squeeze_excitation_on_every_residual_block():
    model = _small("se_resnet50", blocks_per_stage=[1, 2, 1, 1])
    blocks = [block for stage in model.stages for block in stage]
    assert len(blocks) == 5 and all(isinstance(b, SEBottleneck) for b in blocks)
    for block in blocks:
        assert isinstance(block.se, SqueezeExcitation)
        channels = block.bn3.num_features
        assert block.se.fc1.out_channels == max(1, channels // 16)  # reduction 16


@pytest.mark.parametrize("block_type", [SEBasicBlock, SEBottleneck])
def test_squeeze_excitation_scales_the_residual_branch_before_the_addition(block_type):
    channels = 32
    block = block_type(channels, channels // block_type.expansion).eval()
    # Force the SE gate to ~0: the residual branch vanishes and the block returns relu(shortcut).
    with torch.no_grad():
        block.se.fc2.weight.zero_()
        block.se.fc2.bias.fill_(-100.0)
    x = torch.randn(2, channels, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


# ---------------------------------------------------------------------------------- error paths
def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="known models") as info:
        build_model("resnet19", num_classes=10)
    message = str(info.value)
    assert "resnet19" in message and "resnet18" in message and "densenet121" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="known models"):
        model_options("vgg16")


def test_unsupported_option_names_option_model_and_accepted_options():
    with pytest.raises(ValueError) as info:
        build_model("basecnn", num_classes=10, stem_kernel=3)
    message = str(info.value)
    assert "stem_kernel" in message and "basecnn" in message and "dropout" in message and "width" in message
    with pytest.raises(ValueError, match="depth"):
        build_model("resnet18", num_classes=10, depth=3)


BAD_VALUES = [
    ("resnet18", {"stem_kernel": 5}, "stem_kernel must be 3 or 7"),
    ("densenet121", {"stem_kernel": "3"}, "stem_kernel must be 3 or 7"),
    ("resnet18", {"dropout": 1.2}, r"dropout must be a number in \[0, 1\)"),
    ("basecnn", {"dropout": -0.1}, r"dropout must be a number in \[0, 1\)"),
    ("mobilenet_v2", {"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
    ("resnet18", {"blocks_per_stage": [2, 2, 2]}, "sequence of 4 integers"),
    ("mobilenet_v2", {"blocks_per_stage": [1, 2, 3, 4]}, "sequence of 7 integers"),
    ("densenet121", {"blocks_per_stage": [6, 0, 24, 16]}, "integers >= 1"),
    ("resnet50", {"blocks_per_stage": [3, 4.5, 6, 3]}, "integers >= 1"),
    ("resnet18", {"blocks_per_stage": 2}, "sequence of 4 integers"),
    ("resnet18", {"width": 0}, "width must be a finite number > 0"),
    ("lenet5", {"width": -0.5}, "width must be a finite number > 0"),
    ("mobilenet_v1", {"width": float("inf")}, "width must be a finite number > 0"),
    ("resnet18", {"stem_bn": "yes"}, "stem_bn must be True or False"),
    ("resnet18", {"num_classes": 0}, "num_classes must be an integer >= 1"),
    ("basecnn", {"num_classes": 2.5}, "num_classes must be an integer >= 1"),
    ("resnet18", {"in_channels": 0}, "in_channels must be an integer >= 1"),
    ("se_resnet18", {"in_channels": -3}, "in_channels must be an integer >= 1"),
    ("basecnn", {"image_size": 12}, "image_size must be >= 16"),
    ("lenet5", {"image_size": 8}, "image_size must be >= 12"),
    ("densenet121", {"image_size": 8, "stem_kernel": 7}, "image_size must be >= 15"),
]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"), BAD_VALUES, ids=[f"{n}-{next(iter(k))}" for n, k, _ in BAD_VALUES]
)
def test_bad_values_raise_one_line_value_error(name, kwargs, pattern, device):
    kwargs = {"num_classes": 10, **kwargs}
    with torch.device(device), pytest.raises(ValueError, match=pattern) as info:
        build_model(name, **kwargs)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{name}: ")


# ---------------------------------------------------------------------------------- describe
def test_describe_resnet18_matches_the_cifar_reference():
    model = build_model("resnet18", num_classes=10)
    info = describe_model(model, (3, 32, 32))
    assert info["params"] == 11_173_962
    assert info["trainable_params"] == 11_173_962
    assert 1.0e9 < info["flops"] < 1.2e9  # 0.56 G multiply-adds, 2 FLOPs each
    with torch.device("meta"):  # the same count without real computation
        on_meta = describe_model(build_model("resnet18", num_classes=10), (3, 32, 32))
    assert on_meta == info


def test_describe_flops_grow_with_depth_and_shrink_with_width():
    flops = {
        key: describe_model(build_model(name, num_classes=10, **opts), (3, 32, 32))["flops"]
        for key, name, opts in [
            ("r18", "resnet18", {}),
            ("r34", "resnet34", {}),
            ("r18_half", "resnet18", {"width": 0.5}),
        ]
    }
    assert 0 < flops["r18"] < flops["r34"]
    assert 0 < flops["r18_half"] < flops["r18"]


def test_describe_counts_only_trainable_params_and_restores_modes():
    model = _small("resnet18")
    model.train()
    model.head.eval()  # a mixed state must come back as it was
    for param in model.stem.parameters():
        param.requires_grad_(False)
    info = describe_model(model, (3, 28, 28))
    frozen = sum(p.numel() for p in model.stem.parameters())
    assert info["trainable_params"] == info["params"] - frozen > 0
    assert model.training and model.stages.training and not model.head.training


def test_describe_rejects_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        describe_model(_small("lenet5"), (28, 28))


def test_models_cli_lists_every_model_with_its_options(capsys):
    from cnnsearch.models.__main__ import main

    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    resnet = next(line for line in lines if line.startswith("resnet18 "))
    assert "stem_kernel=3" in resnet and "blocks_per_stage=(2, 2, 2, 2)" in resnet
    # --help is help (not the list); anything else is a one-line error, exit 2.
    for argv, code in ((["--help"], 0), (["resnet"], 2)):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == code
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: python -m cnnsearch.models") and "resnet18" not in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and "unrecognized arguments: resnet" in captured.err
