"""Training options (:class:`TrainConfig`) and the two schedules computed from them: the KL weight
β_t and the learning-rate factor. Names (objective, schedule, precision) are checked here, once."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaekit.errors import ConfigError
from vaekit.inference.objectives import Objective
from vaekit.inference.training_objectives import OBJECTIVES, make_objective

__all__ = ["TrainConfig", "SCHEDULES", "PRECISIONS", "RESUMABLE_CHANGES", "kl_beta", "lr_factor", "check_resumable",
           "resolve_precision"]

SCHEDULES = ("constant", "cosine")
#: auto (bf16 on a CPU with native bf16 products, else fp32), fp32, bf16 (bfloat16 products with float32
#: accumulation), fp16 (autocast with dynamic loss scaling): see :func:`resolve_precision`.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Options that may differ between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = ("epochs", "early_stopping_patience", "device", "val_importance_samples", "precision")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, minimum: float, *, strict: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < minimum or (strict and value <= minimum):
        raise ConfigError(f"{name}: must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Training options (stored in a run's config.json under ``extra["train"]``).

    ``weight_decay`` > 0 selects AdamW (decoupled decay), else Adam. ``grad_clip`` bounds the
    total gradient norm. ``objective`` names the objective (:data:`vaekit.inference.training_objectives.OBJECTIVES`)
    and :meth:`build_objective` makes it; ``samples`` is S for "elbo" and K for "iwae". ``beta``,
    ``kl_warmup_epochs`` and ``free_bits`` apply to "elbo" only. ``early_stopping_patience``: stop
    after this many epochs without a better validation ELBO. ``val_importance_samples`` > 0 also
    estimates the validation log-likelihood with that many importance samples each epoch.
    ``precision``: "fp32"; "bf16", the matrix products in bfloat16 with float32 accumulation (on the
    CPU vaekit's linear layers only, :func:`vaekit.ops.linear.bfloat16_products`; elsewhere
    ``torch.autocast``); "fp16", ``torch.autocast`` to float16 with dynamic loss scaling, whose overflow
    steps count as skipped; parameters, gradients and the optimizer stay float32. "auto" (the default)
    is "bf16" on a CPU with native bf16 products and "fp32" everywhere else (:func:`resolve_precision`):
    on MNIST, bf16 training reaches the fp32 test ELBO to within 0.1 nats after 10 epochs
    (``benchmarks/bf16_training.py``). ``gradient``: the encoder's gradient estimator (reparam, stl for
    the ELBO, dreg for iwae, miwae, piwae); ``objective_args``: the objective's own options (miwae,
    piwae: groups; ciwae: beta; vr: alpha; btcvae: alpha, beta, gamma, estimator, dataset_size).
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None
    objective: str = "elbo"
    samples: int = 1
    beta: float = 1.0
    kl_warmup_epochs: float = 0.0
    free_bits: float = 0.0
    early_stopping_patience: int | None = None
    seed: int = 0
    device: str = "cpu"
    val_importance_samples: int = 0
    precision: str = "auto"
    gradient: str = "reparam"
    objective_args: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("lr", self.lr, 0.0, strict=True)
        _check_float("weight_decay", self.weight_decay, 0.0)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule: unknown {self.schedule!r}; choose one of {list(SCHEDULES)}")
        _check_int("warmup_steps", self.warmup_steps, 0)
        if self.grad_clip is not None:
            _check_float("grad_clip", self.grad_clip, 0.0, strict=True)
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective: unknown {self.objective!r}; choose one of {list(OBJECTIVES)}")
        _check_int("samples", self.samples, 1)
        _check_float("beta", self.beta, 0.0)
        _check_float("kl_warmup_epochs", self.kl_warmup_epochs, 0.0)
        _check_float("free_bits", self.free_bits, 0.0)
        if not OBJECTIVES[self.objective].uses_beta and (self.beta != 1.0 or self.kl_warmup_epochs > 0
                                                         or self.free_bits > 0):
            raise ConfigError(f"objective: {self.objective} has no KL term to weight; beta, kl_warmup_epochs and "
                              "free_bits apply to objective elbo only")
        if self.early_stopping_patience is not None:
            _check_int("early_stopping_patience", self.early_stopping_patience, 1)
        _check_int("seed", self.seed, 0)
        if not isinstance(self.device, str):
            raise ConfigError(f"device: expected a string such as 'cpu' or 'cuda', got {self.device!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise ConfigError(f"device: {self.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
        _check_int("val_importance_samples", self.val_importance_samples, 0)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: unknown {self.precision!r}; choose one of {list(PRECISIONS)}")
        self.build_objective()          # the objective's own checks: its gradient estimator and objective_args

    def build_objective(self) -> Objective:
        """The objective these options name, with its ``samples``, ``free_bits``, ``gradient`` and
        ``objective_args``."""
        return make_objective(self.objective, samples=self.samples, free_bits=self.free_bits, gradient=self.gradient,
                              options=self.objective_args)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"train config: expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"train config: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 products natively (AVX512-BF16 or AMX), where oneDNN's bf16
    GEMMs outrun its float32 ones (about 1.6× at a training step's shapes here,
    ``benchmarks/bf16_training.py``); elsewhere they are emulated."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and bool(check()) for check in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: ``precision`` itself, or for "auto" "bf16" on a CPU with native bf16
    products (:func:`native_bfloat16`) and "fp32" on other CPUs and other devices."""
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cpu" and native_bfloat16() else "fp32"


def kl_beta(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """β_t = β · min(1, t / (W · steps_per_epoch)) for the step t (from 0); β when W = 0."""
    if config.kl_warmup_epochs <= 0:
        return float(config.beta)
    return float(config.beta) * min(1.0, step / (config.kl_warmup_epochs * steps_per_epoch))


def lr_factor(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning-rate multiplier at step t: warm-up (t + 1) / (w + 1) for t < w, then 1
    (constant) or ½ (1 + cos(π (t - w) / (T - w))) (cosine, T = ``total_steps``)."""
    w = config.warmup_steps
    if step < w:
        return (step + 1) / (w + 1)
    if config.schedule == "constant":
        return 1.0
    span = max(1, total_steps - w)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - w) / span)))


def check_resumable(saved: dict[str, Any], config: TrainConfig, source: Path) -> None:
    """Raise a ConfigError unless a run saved with options ``saved`` may continue under ``config``."""
    try:
        old = TrainConfig.from_dict(saved)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{source}: stored training options are invalid ({exc})") from None
    changed = [k for k in old.to_dict() if old.to_dict()[k] != config.to_dict()[k] and k not in RESUMABLE_CHANGES]
    if changed:
        k = changed[0]
        raise ConfigError(f"{k}: the run being resumed used {getattr(old, k)!r}, got {getattr(config, k)!r} "
                          f"({source}); only {', '.join(RESUMABLE_CHANGES)} may change on resume")
    if old.epochs != config.epochs and config.schedule == "cosine":
        raise ConfigError(f"epochs: a cosine schedule was fitted to {old.epochs} epochs ({source}); "
                          "its length cannot change on resume")
