"""The model checked against its objective before :func:`vaekit.fit` writes anything.

A model the objective cannot train (the optimal decoder variance c* = mean squared error with the IWAE
bound, whose maximiser is a different, importance-weighted c; a network whose output does not fit the
likelihood; ...) used to fail at the first step, after the run directory had been created and its metrics
and TensorBoard files written. :func:`check_model_objective` evaluates the objective once on the first
two validation examples, in training mode and without gradients, with the model's state and torch's
RNG put back afterwards, so the same error comes first and leaves nothing behind.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from vaekit.data import Preprocessing
from vaekit.inference.objectives import Objective
from vaekit.models.protocol import LatentModel, with_labels

__all__ = ["check_model_objective", "warn_loader_batch_size"]

#: Examples of the dry run: two, so that a batch statistic (the profiled c*, a batch mean) is defined.
_ROWS = 2


def check_model_objective(model: LatentModel, objective: Objective, val_x: Tensor, val_y: Any,
                          preprocessing: Preprocessing) -> None:
    """Evaluate ``objective.terms(model, x)`` on the first rows x of ``val_x`` (drawn through
    ``preprocessing.augment``) and let any error it raises propagate; change nothing. A conditional
    model given no ``val_y`` is left to the labels' own check."""
    classes = int(getattr(model, "num_classes", 0) or 0)
    if classes and val_y is None:
        return
    device = next((p.device for p in model.parameters()), val_x.device)
    x = val_x[:_ROWS].to(device)
    y = None
    if classes:
        y = model.labels(val_y.cpu() if isinstance(val_y, Tensor) else val_y, val_x.shape[0],
                         name="val_y").expand(val_x.shape[0])[:_ROWS].to(device)
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    was_training = model.training
    validate_args = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)      # as in training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.train()
            x = preprocessing.augment(x, torch.Generator(device=device).manual_seed(0))
            objective.terms(with_labels(model, y), x)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate_args)
        model.load_state_dict(saved)
        model.train(was_training)


def warn_loader_batch_size(train_x: Any, batch_size: int) -> None:
    """A ``DataLoader`` handed to :func:`vaekit.fit` is read once into one tensor; the steps take
    ``TrainConfig.batch_size`` examples (index permutations: exact resume). A loader whose own batch size
    differs is warned about (a UserWarning naming both), not honoured silently or ignored silently."""
    loader_batch = getattr(train_x, "batch_size", None) if isinstance(train_x, torch.utils.data.DataLoader) else None
    if loader_batch is not None and loader_batch != batch_size:
        warnings.warn(f"train_x: the DataLoader's batch_size={loader_batch} only reads the data; fit trains on batches "
                      f"of TrainConfig.batch_size={batch_size} (set that to {loader_batch} to train on batches of "
                      f"{loader_batch})", UserWarning, stacklevel=3)
