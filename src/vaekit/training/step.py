"""One training step: forward, backward, then commit the update or skip it.

The step's loss is ``scale · Σ_b -objective_b`` over this rank's part of the global batch
(scale = 1/B in one process, R / B_global on rank r of R, so that DDP's average of the R gradients
is the global batch's mean gradient; scale 0 for a rank's weight-0 stand-in example). A step
whose loss (on any rank) or gradient norm is not finite changes nothing: the fused optimizer
skips it on the device, and the model's buffers (e.g. a running decoder variance) are restored.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from vaekit.errors import ConfigError
from vaekit.inference.objectives import Objective
from vaekit.models.protocol import LatentModel, with_labels
from vaekit.ops.linear import bfloat16_products
from vaekit.prob.distributions import Reduction
from vaekit.training import distributed
from vaekit.training.batches import LocalBatch
from vaekit.training.config import resolve_precision
from vaekit.training.interrupts import InterruptGate
from vaekit.training.state import EpochTotals

__all__ = ["batch_loss", "RoutedLoss", "routed_backward", "inference_parameters",
           "ObjectiveModule", "Stepper", "make_optimizer", "precision_context"]


@dataclass(frozen=True)
class RoutedLoss:
    """Two scalar losses for two parameter groups: ``inference`` trains the inference network (the
    model's ``encoder``), ``generative`` every other parameter (PIWAE's L_{M,K} and L_{MK})."""

    generative: Tensor
    inference: Tensor

    def total(self) -> Tensor:
        return self.generative.detach() + self.inference.detach()


def batch_loss(model: LatentModel, objective: Objective, x: Tensor, beta: float, eps: Tensor | None, scale: float,
               reduce: Reduction | None = None, y: Tensor | None = None) -> tuple[Tensor | RoutedLoss, Tensor]:
    """The scalar loss ``scale · Σ_b -objective_b`` and the batch sums of (loss, elbo, kl,
    reconstruction) in float64; the caller weights the sums. ``y``: the batch's labels, for a
    conditional model (the objective then sees the model given y). An objective with an
    ``inference_objective`` gives a :class:`RoutedLoss` (the second loss of the same form)."""
    t = objective.terms(with_labels(model, y), x, beta=beta, eps=eps, reduce=reduce)
    per_example = -t.objective
    stats = torch.stack([per_example.sum(), t.elbo.sum(), t.kl.sum(), t.reconstruction.sum()]).detach().double()
    if t.inference_objective is not None:
        return RoutedLoss(per_example.sum() * scale, -t.inference_objective.sum() * scale), stats
    return per_example.sum() * scale, stats


def inference_parameters(model: LatentModel) -> list[Tensor]:
    """The parameters of the model's inference network (``model.inference_parameters()`` of the protocol);
    a ConfigError for a model without one."""
    try:
        return list(model.inference_parameters())
    except NotImplementedError as exc:
        raise ConfigError(f"objective: routes a gradient of its own to the inference network, and {exc}") from None


def routed_backward(loss: RoutedLoss, params: list[Tensor], model: nn.Module,
                    scale: Callable[[Tensor], Tensor] = lambda t: t) -> None:
    """Accumulate the gradient of ``loss.inference`` into the inference network's parameters among
    ``params`` and that of ``loss.generative`` into the others (two backward passes over one graph)."""
    ids = {id(p) for p in inference_parameters(cast(LatentModel, model))}   # the step's model: the protocol's
    inference = [p for p in params if id(p) in ids]
    generative = [p for p in params if id(p) not in ids]
    if inference:
        torch.autograd.backward(scale(loss.inference), inputs=inference, retain_graph=bool(generative))
    if generative:
        torch.autograd.backward(scale(loss.generative), inputs=generative)


class ObjectiveModule(nn.Module):
    """The training loss as a module, for DistributedDataParallel, which synchronises gradients
    only for work done inside a wrapped module's forward. The model itself computes no loss."""

    def __init__(self, model: LatentModel, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: Tensor, beta: float, eps: Tensor | None, scale: float,
                reduce: Reduction | None = None, y: Tensor | None = None) -> tuple[Tensor | RoutedLoss, Tensor]:
        return batch_loss(self.model, self.objective, x, beta, eps, scale, reduce, y)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> tuple[torch.optim.Optimizer, bool]:
    """Adam (AdamW when weight_decay > 0), fused where supported; returns (optimizer, fused)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model: has no trainable parameters")
    cls = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, fused=True), True
    except (RuntimeError, ValueError, TypeError):
        return cls(params, lr=lr, weight_decay=weight_decay), False


def precision_context(precision: str, device: torch.device) -> tuple[Callable[[], Any], Any]:
    """(context factory for the forward pass, GradScaler or None) for "fp32", "bf16" or "fp16".

    "bf16" on the CPU: :func:`~vaekit.ops.linear.bfloat16_products`, the products of vaekit's linear
    layers in bfloat16 with float32 accumulation, nothing else cast (``torch.autocast`` casts the
    inputs of every operation, which costs more than the bf16 products save at a VAE's sizes);
    other layers (convolutions, the IAF's masked layers) stay float32. Elsewhere ``torch.autocast``."""
    if precision == "fp32":
        return contextlib.nullcontext, None
    if precision == "bf16" and device.type == "cpu":
        return bfloat16_products, None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _total_norm(grads: list[Tensor]) -> Tensor:
    get_total_norm = getattr(nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


@dataclass
class Stepper:
    """Runs steps for one model, objective and optimizer. ``loss`` computes (loss, stats) from
    (x, beta, eps, scale, reduce): :func:`batch_loss` bound to the model, or the DDP-wrapped
    :class:`ObjectiveModule`; ``world`` ranks; ``gate`` holds Ctrl-C back while a step commits."""

    loss: Callable[..., tuple[Tensor | RoutedLoss, Tensor]]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    fused: bool
    device: torch.device
    precision: str = "fp32"
    grad_clip: float | None = None
    world: int = 1
    gate: InterruptGate = field(default_factory=InterruptGate)

    def __post_init__(self) -> None:
        self.precision = resolve_precision(self.precision, self.device)      # "auto" -> what this device runs
        self.autocast, self.scaler = precision_context(self.precision, self.device)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.buffers = list(self.model.buffers())

    def step(self, local: LocalBatch, beta: float, totals: EpochTotals,
             on_commit: Callable[[float], None] | None = None) -> float:
        """One step on this rank's ``local`` batch with KL weight ``beta``: forward, backward, then
        (with Ctrl-C held back) the update or its skip, the scheduler, ``totals`` and
        ``on_commit(lr)``, with the learning rate the step used.
        An interrupt before the commit leaves the model's buffers as they were. Returns the
        learning rate the step used."""
        saved = [buf.clone() for buf in self.buffers]
        try:
            reduce = distributed.global_mean(local.weight) if self.world > 1 else None
            with self.autocast():
                loss, stats = self.loss(local.x, beta, local.eps, local.weight * self.world / local.global_size,
                                        reduce, y=local.y)
            self.optimizer.zero_grad(set_to_none=True)
            scale = self.scaler.scale if self.scaler is not None else (lambda t: t)
            if isinstance(loss, RoutedLoss):
                routed_backward(loss, self.params, self.model, scale)
            else:
                scale(loss).backward()
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            ok = self._finite(loss.total() if isinstance(loss, RoutedLoss) else loss)
        except BaseException:
            self._restore(saved)
            raise
        with self.gate.hold():
            if self.fused:
                self.optimizer.found_inf = (~ok).to(torch.float32)   # type: ignore[attr-defined]  # the kernel skips
                self.optimizer.step()
            elif bool(ok):
                self.optimizer.step()
            if self.scaler is not None:
                self.scaler.update()
            lr_used = float(self.optimizer.param_groups[0]["lr"])
            with warnings.catch_warnings():  # a skipped first step would warn about the order
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            for buf, old in zip(self.buffers, saved, strict=True):
                buf.copy_(torch.where(ok, buf, old))
            totals.add(ok, stats, float(local.x.shape[0]), local.weight)
            if on_commit is not None:
                on_commit(lr_used)
        return lr_used

    def _finite(self, loss: Tensor) -> Tensor:
        """Whether the loss on every rank and the (clipped) gradient norm are finite, on the device."""
        if self.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            norm = _total_norm(grads) if grads else torch.zeros((), device=self.device)
        finite = torch.isfinite(loss).to(torch.float32)
        if self.world > 1:                      # a non-finite loss on any rank skips the step everywhere
            finite = distributed.all_reduce_sum(finite) == self.world
        return finite.bool() & torch.isfinite(norm)

    def _restore(self, saved: list[Tensor]) -> None:
        for buf, old in zip(self.buffers, saved, strict=True):
            buf.copy_(old)

    def close(self) -> None:
        """Drop the fused optimizer's skip flag."""
        if self.fused and hasattr(self.optimizer, "found_inf"):
            del self.optimizer.found_inf
