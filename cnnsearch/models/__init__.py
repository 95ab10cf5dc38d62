"""The model zoo: every CNN the course reports trained, built by name.

    from cnnsearch.models import build_model, describe_model
    model = build_model("resnet18", num_classes=10, stem_kernel=3, dropout=0.4)
    describe_model(model, (3, 32, 32))  # {"params": ..., "trainable_params": ..., "flops": ...}

Importing this package registers all families (one module each; a variant is one line there).
"""

from __future__ import annotations

# Imported for their side effect: each family module registers its variants.
from . import basecnn, densenet, mobilenet, resnet, se_resnet  # noqa: F401
from .describe import describe_model
from .registry import build_model, count_parameters, list_models, model_options, register_model, variant

__all__ = [
    "build_model", "count_parameters", "describe_model", "list_models", "model_options", "register_model", "variant",
]
