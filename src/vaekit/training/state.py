"""What training keeps between steps and epochs: per-epoch metrics, the run's state, an epoch's
running totals, the record a mid-epoch checkpoint carries, and the per-epoch seeds."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["EpochMetrics", "METRIC_FIELDS", "FitResult", "TrainState", "EpochTotals", "derive_seed",
           "seed_global", "rng_snapshot", "partial_record", "resume_partial", "checkpoint_extra",
           "STREAM_PERMUTATION", "STREAM_AUGMENT", "STREAM_MODEL", "STREAM_VALIDATION"]

STREAM_PERMUTATION, STREAM_AUGMENT, STREAM_MODEL, STREAM_VALIDATION = range(4)


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch: training means over its (non-skipped) examples, validation means over the fixed
    validation set, the β and learning rate at its last step, and its wall-clock seconds. Nats."""

    epoch: int
    step: int
    train_loss: float
    train_elbo: float
    train_kl: float
    train_reconstruction: float
    val_elbo: float
    val_kl: float
    val_reconstruction: float
    beta: float
    lr: float
    seconds: float
    val_log_likelihood: float | None = None
    skipped_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochMetrics:
        """Inverse of :meth:`to_dict` (None becomes NaN, except the optional log-likelihood)."""
        values = dict(d)
        for f in dataclasses.fields(cls):
            if f.name not in ("val_log_likelihood", "epoch", "step", "skipped_steps") and values.get(f.name) is None:
                values[f.name] = math.nan
        return cls(**values)


METRIC_FIELDS = tuple(f.name for f in dataclasses.fields(EpochMetrics))


@dataclass(frozen=True)
class FitResult:
    """The per-epoch history, the epoch with the highest validation ELBO and that ELBO, and
    whether early stopping (or a callback) ended training before ``epochs``."""

    history: list[EpochMetrics]
    best_epoch: int
    best_val_elbo: float
    stopped_early: bool


@dataclass
class TrainState:
    """What a checkpoint carries besides the model, optimizer and scheduler. ``bad_run``: the
    non-finite steps in a row at the end of the last completed epoch (the run of bad steps goes on
    across epochs; a checkpoint without it, from an older vaekit, counts 0)."""

    epoch: int = 0
    step: int = 0
    best_val_elbo: float = -math.inf
    best_epoch: int = 0
    since_best: int = 0
    stopped_early: bool = False
    history: list[EpochMetrics] = field(default_factory=list)
    bad_run: int = 0

    def result(self) -> FitResult:
        return FitResult(self.history, self.best_epoch, self.best_val_elbo, self.stopped_early)

    def record(self, metrics: EpochMetrics, bad_run: int) -> bool:
        """Count the finished epoch ``metrics.epoch``: its metrics, the run of bad steps it ended with, and
        the epochs since the best validation ELBO; returns whether this epoch's is the best so far."""
        self.epoch, self.bad_run = metrics.epoch, bad_run
        self.history.append(metrics)
        improved = math.isfinite(metrics.val_elbo) and metrics.val_elbo > self.best_val_elbo
        if improved:
            self.best_val_elbo, self.best_epoch, self.since_best = metrics.val_elbo, metrics.epoch, 0
        else:
            self.since_best += 1
        return improved

    @classmethod
    def from_checkpoint(cls, epoch: int, step: int, extra: dict[str, Any]) -> TrainState:
        return cls(epoch, step, extra["best_val_elbo"], extra["best_epoch"], extra["since_best"],
                   extra["stopped_early"], [EpochMetrics.from_dict(m) for m in extra["history"]],
                   max(0, int(extra.get("bad_run", 0))))


@dataclass
class EpochTotals:
    """An epoch's running sums (loss, elbo, kl, reconstruction), examples counted, skipped steps,
    the current and the longest run of non-finite steps (the current run may have started in an
    earlier epoch: :meth:`carry_bad_run`); on the device (no host sync per step)."""

    sums: Tensor
    counted: Tensor
    skipped: Tensor
    bad_run: Tensor
    worst_run: Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> EpochTotals:
        return cls(torch.zeros(4, dtype=torch.float64, device=device),
                   torch.zeros((), dtype=torch.float64, device=device),
                   *(torch.zeros((), dtype=torch.long, device=device) for _ in range(3)))

    def carry_bad_run(self, bad_run: int) -> None:
        """Continue a run of ``bad_run`` non-finite steps that ended the previous epoch."""
        self.bad_run.fill_(int(bad_run))
        self.worst_run.fill_(int(bad_run))

    def add(self, ok: Tensor, stats: Tensor, examples: float, weight: float) -> None:
        """Count one step: its batch sums ``stats`` and ``examples`` (times ``weight``) if ``ok``."""
        self.sums += torch.where(ok, stats * weight, 0.0)
        self.counted += torch.where(ok, examples * weight, 0.0)
        self.bad_run = torch.where(ok, 0, self.bad_run + 1)
        self.worst_run = torch.maximum(self.worst_run, self.bad_run)
        self.skipped += (~ok).long()

    def to_record(self) -> dict[str, Any]:
        return {"sums": self.sums.tolist(), "counted": float(self.counted), "skipped": int(self.skipped),
                "bad_run": int(self.bad_run), "worst_run": int(self.worst_run)}

    def load_record(self, record: dict[str, Any]) -> None:
        self.sums.copy_(torch.tensor(record["sums"], dtype=torch.float64))
        self.counted.fill_(record["counted"])
        for name in ("skipped", "bad_run", "worst_run"):
            getattr(self, name).fill_(int(record[name]))


def derive_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """A well-mixed 63-bit seed for one (seed, epoch, stream) and, beyond rank 0, one rank."""
    entropy = [seed, epoch, stream] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seed_global(device: torch.device, seed: int) -> None:
    """Seed torch's global generators (CPU, and the CUDA device when training there)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def rng_snapshot(aug_gen: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """The states of the augmentation generator and of torch's global RNG (CPU, and the CUDA device)."""
    snap = {"augment_rng": aug_gen.get_state(), "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        snap["cuda_rng"] = torch.cuda.get_rng_state(device)
    return snap


def _restore_rng_snapshot(snap: dict[str, Tensor], aug_gen: torch.Generator, device: torch.device) -> None:
    aug_gen.set_state(snap["augment_rng"])
    torch.set_rng_state(snap["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in snap:
        torch.cuda.set_rng_state(snap["cuda_rng"], device)


def partial_record(epoch: int, batches: int, beta: float, lr_used: float, seconds: float, totals: EpochTotals,
                   snap: dict[str, Tensor]) -> dict[str, Any]:
    """What a checkpoint taken mid-epoch needs to continue that epoch exactly ("partial_epoch")."""
    return {"epoch": epoch, "batches": batches, "beta": beta, "lr": lr_used, "seconds": seconds,
            **totals.to_record(), **snap}


def resume_partial(record: dict[str, Any], totals: EpochTotals, aug_gen: torch.Generator,
                   device: torch.device) -> tuple[int, float, float, float]:
    """Continue a partial epoch (after the per-epoch seeding): restore its totals and RNG states;
    returns (batches done, beta, lr, seconds spent)."""
    totals.load_record(record)
    _restore_rng_snapshot({k: record[k] for k in ("augment_rng", "torch_rng", "cuda_rng") if k in record},
                          aug_gen, device)
    return int(record["batches"]), float(record["beta"]), float(record["lr"]), float(record["seconds"])


def checkpoint_extra(config_dict: dict[str, Any], state: TrainState,
                     partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON part of a training checkpoint: options, best-so-far bookkeeping, history and, for a
    mid-epoch checkpoint, the partial epoch."""
    extra = {"config": config_dict, "best_val_elbo": state.best_val_elbo, "best_epoch": state.best_epoch,
             "since_best": state.since_best, "stopped_early": state.stopped_early,
             "history": [m.to_dict() for m in state.history], "bad_run": state.bad_run}
    if partial is not None:
        extra["partial_epoch"] = partial
    return extra
