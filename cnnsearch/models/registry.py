"""The model registry: names -> builders, and `build_model` that checks options before building.

A builder is a function registered with `@register_model(name)` whose parameters are all
keyword-only: `num_classes`, `in_channels`, `image_size`, then the options the family takes, each
with its default. `model_options` reads the options and defaults off that signature, so a builder's
signature is the single place where a family's options are declared.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

__all__ = ["build_model", "list_models", "model_options", "register_model"]

Builder = Callable[..., nn.Module]

# Arguments every builder takes; they describe the data, not the architecture, so they are not options.
_DATA_ARGS = ("num_classes", "in_channels", "image_size")

_BUILDERS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator that registers a builder under `name`; a name already taken raises ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string, got {name!r}")

    def decorator(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"a model named {name!r} is already registered")
        params = inspect.signature(builder).parameters
        missing = [arg for arg in _DATA_ARGS if arg not in params]
        positional = [p.name for p in params.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        no_default = [
            p.name
            for p in params.values()
            if p.name not in _DATA_ARGS and p.default is inspect.Parameter.empty
        ]
        if missing or positional or no_default:
            raise TypeError(
                f"builder for {name!r} must take only keyword-only parameters, including "
                f"{', '.join(_DATA_ARGS)}, and give every option a default "
                f"(missing: {missing}, not keyword-only: {positional}, no default: {no_default})"
            )
        _BUILDERS[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_BUILDERS)


def _builder(name: str) -> Builder:
    try:
        return _BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def model_options(name: str) -> dict[str, object]:
    """The options model `name` accepts, mapped to their default values (in declaration order)."""
    params = inspect.signature(_builder(name)).parameters
    return {p.name: p.default for p in params.values() if p.name not in _DATA_ARGS}


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    **options: object,
) -> nn.Module:
    """Build registered model `name` for `in_channels` x `image_size` x `image_size` inputs.

    An option passed as None takes the family default. An unknown name, an option the family does
    not take, or a bad value raises ValueError with a one-line message saying what is allowed.
    Builders compute layer sizes arithmetically (no dummy forward), so this also works under
    `with torch.device("meta"):`, which is a cheap way to validate a configuration.
    """
    builder = _builder(name)
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )
    given = {key: value for key, value in options.items() if value is not None}
    try:
        return builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **given)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err
