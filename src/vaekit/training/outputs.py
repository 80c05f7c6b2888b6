"""What :func:`vaekit.training.loop.fit` writes beside the checkpoint: the best model so far, and TensorBoard
scalars when tensorboard is installed."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from vaekit.store.checkpoint import checkpoint_paths
from vaekit.store.layout import RunLayout
from vaekit.store.model_files import save_model
from vaekit.store.weights import save_weights

__all__ = ["tensorboard_writer", "save_best", "has_checkpoint"]


def tensorboard_writer(run_dir: RunLayout | None) -> Any:
    """A SummaryWriter on the run's tensorboard folder when tensorboard is installed, else None."""
    if run_dir is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(run_dir.tensorboard))
    except Exception:  # noqa: BLE001 - tensorboard is optional: any failure means "not available"
        return None


def save_best(model: nn.Module, layout: RunLayout, extra: dict[str, Any]) -> None:
    if getattr(model, "config", None) is not None:       # built from a configuration: rebuildable by name
        save_model(model, layout.root, extra=extra)
    else:
        save_weights(model.state_dict(), layout.weights)


def has_checkpoint(layout: RunLayout) -> bool:
    return any(p.exists() for p in checkpoint_paths(layout.checkpoint))
