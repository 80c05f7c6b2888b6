"""The labels a conditional model trains on (:mod:`vaekit.models.conditional`), checked once before training.

A conditional model (``num_classes`` C > 0) needs the label of every training and validation example; an
unconditional one takes none. The labels are int64 tensors (N,) on the training device, gathered by the
batch plan with the same positions as the examples (:mod:`vaekit.training.batches`), so the pairs never
come apart, on any number of ranks. A checkpoint holds no labels: they come from the data on resume.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vaekit.errors import ConfigError
from vaekit.models.protocol import LatentModel

__all__ = ["training_labels"]


def training_labels(model: LatentModel, train_y: Any, val_y: Any, train_x: Any, val_x: Tensor,
                    device: torch.device) -> tuple[Tensor | None, Tensor | None]:
    """(train labels, validation labels) for ``model``: None and None for an unconditional model (labels
    given to one are a ConfigError), else both checked (one per example, each in 0..C−1) and on ``device``."""
    classes = int(getattr(model, "num_classes", 0) or 0)
    if classes == 0:
        for name, value in (("train_y", train_y), ("val_y", val_y)):
            if value is not None:
                raise ConfigError(f"{name}: the model is not conditional (num_classes 0), so it trains without "
                                  "labels; build it with VAEConfig(num_classes=...) to condition it on them")
        return None, None
    for name, value in (("train_y", train_y), ("val_y", val_y)):
        if value is None:
            raise ConfigError(f"{name}: the model is conditional on {classes} classes; give the labels of the "
                              "examples (train_y and val_y)")
    if not isinstance(train_x, Tensor):
        raise ConfigError("train_y: a conditional model trains on examples in memory; a streamed train_x has no "
                          "labels")
    # checked on the host (model.labels takes an accelerator's tensor unchecked), then moved to the device
    train = model.labels(train_y.cpu() if isinstance(train_y, Tensor) else train_y, train_x.shape[0], name="train_y")
    val = model.labels(val_y.cpu() if isinstance(val_y, Tensor) else val_y, val_x.shape[0], name="val_y")
    return train.expand(train_x.shape[0]).to(device), val.expand(val_x.shape[0]).to(device)
