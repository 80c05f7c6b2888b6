"""What :func:`vaekit.training.loop.fit` writes beside the checkpoint: the best model so far (TensorBoard:
:mod:`vaekit.training.tensorboard`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from vaekit.store.checkpoint import checkpoint_paths
from vaekit.store.layout import RunLayout
from vaekit.store.model_files import save_model
from vaekit.store.weights import save_weights

__all__ = ["save_best", "has_checkpoint"]


def save_best(model: nn.Module, layout: RunLayout, extra: dict[str, Any]) -> None:
    if getattr(model, "config", None) is not None:       # built from a configuration: rebuildable by name
        save_model(model, layout.root, extra=extra)
    else:
        save_weights(model.state_dict(), layout.weights)


def has_checkpoint(layout: RunLayout) -> bool:
    return any(p.exists() for p in checkpoint_paths(layout.checkpoint))
