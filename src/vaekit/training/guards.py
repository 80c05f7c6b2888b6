"""What stops a training run that has gone wrong: non-finite steps in a row (counted across epochs), an
ELBO that no working model gives, and a checkpoint whose weights or optimizer state are not finite."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from vaekit.errors import CheckpointError, VaekitError
from vaekit.models.protocol import LatentModel
from vaekit.training.config import TrainConfig
from vaekit.training.state import EpochMetrics, EpochTotals

__all__ = ["MAX_BAD_STEPS", "ABSURD_NATS_PER_DIM", "DivergenceError", "check_divergence",
           "check_epoch_changed_something", "check_absurd", "refuse_non_finite"]

#: Consecutive non-finite steps (across epochs) after which training stops with a DivergenceError.
MAX_BAD_STEPS = 20
#: An epoch whose training or validation ELBO per example lies outside ±ABSURD_NATS_PER_DIM · D
#: (D: the dimensions of one example) stops training with a DivergenceError. Why this bound:
#: above, no built-in likelihood can give more than 7.08 nats per dimension (a Gaussian's density is
#: at most (2π c)^-1/2 and log c ≥ -16, so log p(x|z) ≤ -½ log(2π e^-16) = 7.08 per dimension; a
#: Bernoulli's is ≤ 0), and the ELBO is below log p(x). Below, -1e9 nats per dimension takes a
#: root-mean-square residual of 15 at the smallest decoder variance c = e^-16 (the Gaussian term
#: is -½ log(2π c) - r²/(2c) ≥ -8.9 - 4.4e6 r²), with prepared data in [0, 1] (images) or
#: standardised columns; or Bernoulli logits of 1e9 on the wrong side; or posterior means of order
#: 4e4·(D/K)^½. Such values come only from weights that have blown up (a learning rate far too high,
#: say), not from a model that is merely bad: on data in [0, 1] an untrained model's ELBO is of the
#: order of 1e6 nats per dimension at worst, with c fixed at its floor.
ABSURD_NATS_PER_DIM = 1e9


class DivergenceError(VaekitError, RuntimeError):
    """Training produced non-finite losses or gradients for many steps in a row."""


_CAUSES = "likely causes: learning rate too high (lr={lr:g}), decoder variance c too small, or data not scaled"


def check_divergence(totals: EpochTotals, epoch: int, config: TrainConfig) -> None:
    if int(totals.worst_run) >= MAX_BAD_STEPS:
        raise DivergenceError(
            f"training diverged: {int(totals.worst_run)} consecutive steps with a non-finite "
            f"loss or gradient (up to epoch {epoch}); {_CAUSES.format(lr=config.lr)}")


def check_epoch_changed_something(totals: EpochTotals, steps: int, epoch: int, config: TrainConfig) -> None:
    """A DivergenceError when every step of the epoch was skipped (the same on every rank: a bad step
    is skipped everywhere)."""
    if steps and int(totals.skipped) >= steps:
        raise DivergenceError(
            f"training diverged: every step of epoch {epoch} ({steps} steps) had a non-finite loss or gradient, "
            f"so the epoch changed nothing; {_CAUSES.format(lr=config.lr)}")


def check_absurd(metrics: EpochMetrics, model: LatentModel, config: TrainConfig) -> None:
    """A DivergenceError when the epoch's training or validation ELBO per example is finite but
    outside ±ABSURD_NATS_PER_DIM · D (before the epoch is recorded or saved)."""
    dims = math.prod(tuple(model.data_shape))
    limit = ABSURD_NATS_PER_DIM * max(1, dims)
    for what, value in (("training", metrics.train_elbo), ("validation", metrics.val_elbo)):
        if math.isfinite(value) and abs(value) > limit:
            raise DivergenceError(
                f"training diverged: epoch {metrics.epoch} has a {what} ELBO of {value:.3g} nats per example, "
                f"beyond ±{limit:.3g} ({ABSURD_NATS_PER_DIM:g} nats for each of its {dims} dimensions), which no "
                f"working model gives; {_CAUSES.format(lr=config.lr)}")


def refuse_non_finite(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """A CheckpointError when the model or optimizer state loaded for resume holds NaN or Inf:
    every step from it would be skipped (or spoil the weights)."""
    named = [(f"model.{k}", v) for k, v in model.state_dict().items()]
    named += [(f"optimizer state {name} of parameter {i}", v)
              for i, st in enumerate(optimizer.state.values()) for name, v in st.items()]
    for name, value in named:
        if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: {name} holds non-finite values (NaN or Inf), so the run cannot resume "
                                  "from this checkpoint (every step would be skipped); start a new run")
