"""The trainer: minibatch stochastic gradient ascent on the ELBO (or the IWAE bound).

Each step takes a batch x_1..x_B (indices from a per-epoch permutation, then the preprocessing's
random ``augment``: dynamic binarisation or dequantisation) and minimises

    loss = -(1/B) Σ_b [ E_q[log p(x_b|z)] - β_t · KL(q_{x_b}(z) || p(z)) ]      (objective "elbo")
    loss = -(1/B) Σ_b L_K(x_b)                                                   (objective "iwae")

with S (resp. K) = ``samples`` draws, KL warm-up β_t = β · min(1, t / (W · steps_per_epoch))
over W = ``kl_warmup_epochs`` epochs (t = the global step, from 0) and free bits λ. The learning
rate follows ``lr · factor(t)``: a linear warm-up (t + 1) / (w + 1) for the first w =
``warmup_steps`` steps, then 1 (``constant``) or ½ (1 + cos(π (t - w) / (T - w))) (``cosine``,
T = epochs · steps_per_epoch).

Randomness is derived from ``seed`` and the epoch number alone (the permutation, the augmentation
and the reparameterisation draws each get their own stream, re-seeded every epoch), so resuming
from a checkpoint reproduces an uninterrupted run bit for bit on the same device. Ctrl-C
(KeyboardInterrupt) during an epoch's steps saves a checkpoint of the last completed step with a
"partial_epoch" record (batches done, running sums, augmentation and global RNG states) before it
propagates, and resuming continues that epoch exactly where it stopped. Torch's global
RNG is forked around :func:`fit`, so the caller's RNG state is left as it was. Argument validation
of torch distributions is switched off while training (it costs a host synchronisation per
distribution, and turns a NaN into an exception) and restored afterwards.

A step whose loss or gradient is not finite changes nothing (the fused optimizer skips it on the
device, buffers such as the running decoder variance are restored) and is counted; 20 such steps
in a row raise :class:`DivergenceError`. The host synchronises every 20 steps, not every step.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import gc
import io
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from . import distributed
from .batches import BatchPlan
from .checkpoint import (
    capture_rng,
    checkpoint_paths,
    load_training_state,
    save_training_state,
)
from .data import Preprocessing
from .distributions import DiagonalNormal, profile_mean
from .errors import ConfigError, ShapeError, VaekitError
from .estimators import estimate_log_likelihood
from .io import atomic_write_bytes, save_model, save_weights
from .objectives import check_batch, elbo_terms, importance_terms

__all__ = [
    "MAX_BAD_STEPS",
    "OBJECTIVES",
    "PRECISIONS",
    "SCHEDULES",
    "DivergenceError",
    "EpochMetrics",
    "FitResult",
    "TrainConfig",
    "fit",
    "kl_beta",
    "lr_factor",
]

OBJECTIVES = ("elbo", "iwae")
SCHEDULES = ("constant", "cosine")
#: fp32, or autocast to bfloat16 / float16 (float16 with dynamic loss scaling) for the forward pass.
PRECISIONS = ("fp32", "bf16", "fp16")
#: Consecutive non-finite steps after which training stops with a DivergenceError.
MAX_BAD_STEPS = 20
_SYNC_EVERY = 20
_STREAM_PERMUTATION, _STREAM_AUGMENT, _STREAM_MODEL, _STREAM_VALIDATION = range(4)
#: Options that may differ between a checkpoint and the run that resumes it.
_RESUMABLE_CHANGES = ("epochs", "early_stopping_patience", "device", "val_importance_samples", "precision")


class DivergenceError(VaekitError, RuntimeError):
    """Training produced non-finite losses or gradients for many steps in a row."""


# --- configuration ------------------------------------------------------------------------------

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
    total gradient norm. ``samples`` is S for "elbo" and K for "iwae". ``beta``, ``kl_warmup_epochs``
    and ``free_bits`` apply to "elbo" only. ``early_stopping_patience``: stop after this many
    epochs without a better validation ELBO. ``val_importance_samples`` > 0 also estimates the
    validation log-likelihood with that many importance samples each epoch. ``precision`` "bf16"
    or "fp16" runs the forward pass under ``torch.autocast`` (parameters and optimizer stay
    float32; "fp16" adds dynamic loss scaling, whose overflow steps count as skipped).
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
    precision: str = "fp32"

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
        if self.objective == "iwae" and (self.beta != 1.0 or self.kl_warmup_epochs > 0 or self.free_bits > 0):
            raise ConfigError("objective: iwae has no KL term to weight; beta, kl_warmup_epochs and free_bits "
                              "apply to objective elbo only")
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


# --- results ------------------------------------------------------------------------------------

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
class _State:
    """What a checkpoint carries besides the model, optimizer and scheduler."""

    epoch: int = 0
    step: int = 0
    best_val_elbo: float = -math.inf
    best_epoch: int = 0
    since_best: int = 0
    stopped_early: bool = False
    history: list[EpochMetrics] = field(default_factory=list)


# --- helpers ------------------------------------------------------------------------------------

def _seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """A well-mixed 63-bit seed for one (seed, epoch, stream) and, beyond rank 0, one rank."""
    entropy = [seed, epoch, stream] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _seed_global(device: torch.device, seed: int) -> None:
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} requested but CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError):
            raise ConfigError(f"device: {name!r} is not available on this machine") from None
    return device


def _make_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, bool]:
    """Adam (AdamW when weight_decay > 0), fused where supported; returns (optimizer, fused)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model: has no trainable parameters")
    cls = torch.optim.AdamW if config.weight_decay > 0 else torch.optim.Adam
    try:
        return cls(params, lr=config.lr, weight_decay=config.weight_decay, fused=True), True
    except (RuntimeError, ValueError, TypeError):
        return cls(params, lr=config.lr, weight_decay=config.weight_decay), False


def _total_norm(grads: list[Tensor]) -> Tensor:
    get_total_norm = getattr(nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _iwae_terms(model, x: Tensor, k: int, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """L_K(x) = log (1/K) Σ_k w_k and, from the same draws, the ELBO estimate mean_k log w_k,
    KL estimate mean_k [log q(z_k) - log p(z_k)] and reconstruction mean_k log p(x|z_k); each (B,)."""
    log_px, log_pz, log_qz = importance_terms(model, x, k, eps=eps)
    bound = torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(k)
    reconstruction, kl = log_px.mean(0), (log_qz - log_pz).mean(0)
    return bound, reconstruction - kl, kl, reconstruction


def _batch_loss(model, x: Tensor, beta: float, eps: Tensor | None, scale: float, *,
                config: TrainConfig) -> tuple[Tensor, Tensor]:
    """The scalar loss ``scale · Σ_b loss_b`` and the batch sums of (loss, elbo, kl, reconstruction)
    in float64. One process uses scale = 1/B (the batch mean); rank r of R uses R / B_global, so
    that DDP's average of the R gradients is the global batch's mean gradient; scale 0 marks a
    rank's weight-0 stand-in example (:mod:`vaekit.batches`); the caller weights the sums."""
    if config.objective == "elbo":
        t = elbo_terms(model, x, beta=beta, n_samples=config.samples, free_bits=config.free_bits, eps=eps)
        per_example, elbo, kl, rec = -t.objective, t.elbo, t.kl, t.reconstruction
    else:
        bound, elbo, kl, rec = _iwae_terms(model, x, config.samples, eps)
        per_example = -bound
    stats = torch.stack([per_example.sum(), elbo.sum(), kl.sum(), rec.sum()]).detach().double()
    return per_example.sum() * scale, stats


@torch.no_grad()
def _validate(model, x: Tensor, config: TrainConfig, device: torch.device, rank_part: tuple[int, int],
              latent: tuple[int, int, torch.dtype] | None) -> tuple[float, float, float, float | None]:
    """Mean ELBO, KL and reconstruction (and log-likelihood if asked) over the fixed validation
    set ``x``, of which this rank evaluates rows ``rank_part`` (sums are added over the ranks). The
    ε of the ELBO are drawn for the whole set from a fixed seed, so the figure does not depend on
    the number of ranks; the importance sampling uses torch's generator, seeded per rank."""
    was_training = model.training
    model.eval()
    _seed_global(device, _seed(config.seed, 0, _STREAM_VALIDATION, distributed.rank()))
    eps = None
    if latent is not None:
        generator = torch.Generator(device=device).manual_seed(_seed(config.seed, 0, _STREAM_VALIDATION))
        eps = torch.randn((1, x.shape[0], latent[1]), generator=generator, device=device, dtype=latent[2])
    lo, hi = rank_part
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    try:
        for start in range(lo, hi, config.batch_size):
            end = min(hi, start + config.batch_size)
            chunk = x[start:end]
            t = elbo_terms(model, chunk, n_samples=1, eps=None if eps is None else eps[:, start:end])
            sums[:3] += torch.stack([t.elbo.sum(), t.kl.sum(), t.reconstruction.sum()]).double()
            if config.val_importance_samples:
                est = estimate_log_likelihood(model, chunk, n_samples=config.val_importance_samples)
                sums[3] += est.log_likelihood.double().sum()
    finally:
        model.train(was_training)
    elbo, kl, rec, ll = (distributed.all_reduce_sum(sums) / x.shape[0]).tolist()
    return elbo, kl, rec, (ll if config.val_importance_samples else None)


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C while files are written; re-raise KeyboardInterrupt afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


class _RunFiles:
    """The files :func:`fit` keeps in a run directory (see :mod:`vaekit.runs`)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.checkpoint = run_dir / "checkpoints" / "last"
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"

    def has_checkpoint(self) -> bool:
        return any(p.exists() for p in checkpoint_paths(self.checkpoint))

    def rewrite_metrics(self, history: list[EpochMetrics]) -> None:
        """Replace both metrics files by ``history`` (used on resume: no duplicate rows)."""
        atomic_write_bytes(self.jsonl, "".join(json.dumps(m.to_dict()) + "\n" for m in history).encode())
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(m.to_dict() for m in history)
        atomic_write_bytes(self.csv, buf.getvalue().encode())

    def append_metrics(self, m: EpochMetrics) -> None:
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(m.to_dict()) + "\n")
        new = not self.csv.exists() or self.csv.stat().st_size == 0
        with self.csv.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow(m.to_dict())


def _tensorboard(run_dir: Path | None):
    """A SummaryWriter on run_dir/tensorboard when tensorboard is installed, else None."""
    if run_dir is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    except Exception:  # noqa: BLE001 - tensorboard is optional: any failure means "not available"
        return None


def _save_best(model: nn.Module, run_dir: Path, extra: dict[str, Any]) -> None:
    if getattr(model, "config", None) is not None:
        save_model(model, run_dir, extra=extra)
    else:
        save_weights(model.state_dict(), run_dir / "model.safetensors")


def _check_resumable(saved: dict[str, Any], config: TrainConfig, source: Path) -> None:
    try:
        old = TrainConfig.from_dict(saved)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{source}: stored training options are invalid ({exc})") from None
    changed = [k for k in old.to_dict() if old.to_dict()[k] != config.to_dict()[k] and k not in _RESUMABLE_CHANGES]
    if changed:
        k = changed[0]
        raise ConfigError(f"{k}: the run being resumed used {getattr(old, k)!r}, got {getattr(config, k)!r} "
                          f"({source}); only {', '.join(_RESUMABLE_CHANGES)} may change on resume")
    if old.epochs != config.epochs and config.schedule == "cosine":
        raise ConfigError(f"epochs: a cosine schedule was fitted to {old.epochs} epochs ({source}); "
                          "its length cannot change on resume")


@dataclass
class _EpochTotals:
    """An epoch's running sums (loss, elbo, kl, reconstruction), examples counted, skipped steps,
    the current and the longest run of non-finite steps; on the device (no host sync per step)."""

    sums: Tensor
    counted: Tensor
    skipped: Tensor
    bad_run: Tensor
    worst_run: Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> _EpochTotals:
        return cls(torch.zeros(4, dtype=torch.float64, device=device),
                   torch.zeros((), dtype=torch.float64, device=device),
                   *(torch.zeros((), dtype=torch.long, device=device) for _ in range(3)))

    def to_record(self) -> dict[str, Any]:
        return {"sums": self.sums.tolist(), "counted": float(self.counted), "skipped": int(self.skipped),
                "bad_run": int(self.bad_run), "worst_run": int(self.worst_run)}

    def load_record(self, record: dict[str, Any]) -> None:
        self.sums.copy_(torch.tensor(record["sums"], dtype=torch.float64))
        self.counted.fill_(record["counted"])
        for name in ("skipped", "bad_run", "worst_run"):
            getattr(self, name).fill_(int(record[name]))


def _rng_snapshot(aug_gen: torch.Generator, device: torch.device) -> dict[str, Tensor]:
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


def _partial_record(epoch: int, batches: int, beta: float, lr_used: float, seconds: float, totals: _EpochTotals,
                    snap: dict[str, Tensor]) -> dict[str, Any]:
    """What a checkpoint taken mid-epoch needs to continue that epoch exactly ("partial_epoch")."""
    return {"epoch": epoch, "batches": batches, "beta": beta, "lr": lr_used, "seconds": seconds,
            **totals.to_record(), **snap}


def _resume_partial(record: dict[str, Any], totals: _EpochTotals, aug_gen: torch.Generator,
                    device: torch.device) -> tuple[int, float, float, float]:
    """Continue a partial epoch (after the per-epoch seeding): restore its totals and RNG states;
    returns (batches done, beta, lr, seconds spent)."""
    totals.load_record(record)
    _restore_rng_snapshot({k: record[k] for k in ("augment_rng", "torch_rng", "cuda_rng") if k in record},
                          aug_gen, device)
    return int(record["batches"]), float(record["beta"]), float(record["lr"]), float(record["seconds"])


class _InterruptGate:
    """SIGINT during the step loop: KeyboardInterrupt at once, except while a step commits its
    update (optimizer, scheduler, buffers, totals), when it is held back to the end of the commit,
    so that an interrupt always finds the state of a completed step. Installed only over Python's
    default handler, in the main thread."""

    def __init__(self) -> None:
        self.holding = False
        self.pending = False
        self.previous: Any = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> None:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _checkpoint_extra(config: TrainConfig, state: _State, partial: dict[str, Any] | None = None) -> dict[str, Any]:
    extra = {"config": config.to_dict(), "best_val_elbo": state.best_val_elbo, "best_epoch": state.best_epoch,
             "since_best": state.since_best, "stopped_early": state.stopped_early,
             "history": [m.to_dict() for m in state.history]}
    if partial is not None:
        extra["partial_epoch"] = partial
    return extra


# --- the loop -----------------------------------------------------------------------------------

def _posterior_is_gaussian(model: nn.Module, x: Tensor) -> bool:
    """Whether the trainer can draw ε for ``model``: a Gaussian posterior over a latent vector."""
    validate_args = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)    # NaN weights are the guard's business
    try:
        with torch.no_grad():
            q = model.encode(x)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate_args)
    return isinstance(q, (DiagonalNormal, MultivariateNormal)) and len(q.event_shape) == 1


class _Objective(nn.Module):
    """The training loss as a module, for DistributedDataParallel, which synchronises gradients
    only for work done inside a wrapped module's forward. The model itself computes no loss."""

    def __init__(self, model: nn.Module, config: TrainConfig):
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, x: Tensor, beta: float, eps: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
        return _batch_loss(self.model, x, beta, eps, scale, config=self.config)


def _global_profile_mean(weight: float) -> contextlib.AbstractContextManager:
    """c* of the optimal decoder variance from the global batch: the mean squared residual over
    every rank's part (a weight-0 stand-in contributes nothing), as one process computes it."""
    def reduce(residual_sq: Tensor) -> Tensor:
        total = torch.stack([residual_sq.sum(dtype=torch.float64), torch.tensor(float(residual_sq.numel()),
                             dtype=torch.float64, device=residual_sq.device)]) * weight
        distributed.all_reduce_sum(total)
        return (total[0] / total[1]).to(residual_sq.dtype)
    return profile_mean(reduce)


def _precision(config: TrainConfig, device: torch.device):
    """(autocast context factory, GradScaler or None) for ``config.precision``."""
    if config.precision == "fp32":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def fit(model: nn.Module, train_x, val_x: Tensor, config: TrainConfig, *, preprocessing: Preprocessing,
        run_dir: str | Path | None = None, resume: bool = False, progress: bool = False,
        callbacks: Sequence[Callable[[EpochMetrics], Any]] | None = None,
        model_extra: dict[str, Any] | None = None) -> FitResult:
    """Train ``model`` on ``train_x``, validating on ``val_x`` (``preprocessing.prepare`` output).

    ``train_x`` is a prepared tensor (N, *data_shape), kept on the device, or a
    :class:`vaekit.data.stream.NpyStream` of raw rows, read in shuffled blocks and prepared batch
    by batch (for data larger than memory; see :mod:`vaekit.batches`).

    With ``run_dir``, after every epoch: the best model so far (highest validation ELBO) is saved
    with :func:`vaekit.io.save_model` (``extra=model_extra``, which gets "preprocessing" and
    "train" entries if missing), a row is appended to metrics.jsonl and metrics.csv, and the full
    state to checkpoints/last.{safetensors,json}; TensorBoard scalars go to run_dir/tensorboard
    when tensorboard is installed. ``resume=True`` continues from checkpoints/last (a finished
    run returns at once; no checkpoint yet means a fresh start). A KeyboardInterrupt during an
    epoch's steps first saves checkpoints/last at the last completed step (with a "partial_epoch"
    record; no metrics row) and is then re-raised; resuming finishes that epoch exactly. Each callback is called with
    every epoch's :class:`EpochMetrics`; a truthy return value stops training.

    In a process group of R > 1 ranks (:mod:`vaekit.distributed`; every rank calls ``fit`` with the
    same arguments) the model is wrapped in DistributedDataParallel, ``config.batch_size`` is the
    global batch, metrics are summed over the ranks, and only rank 0 writes files (an interrupt
    then saves nothing mid-epoch: resuming starts from the last completed epoch). A checkpoint
    resumes with any number of ranks.

    The model keeps the last epoch's weights (the best are in run_dir/model.safetensors).
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config: expected a TrainConfig, got {type(config).__name__}")
    streamed = not isinstance(train_x, Tensor)
    if streamed and not hasattr(train_x, "block_order"):
        raise ConfigError(f"train_x: expected a tensor or a vaekit.data.stream.NpyStream, got {type(train_x).__name__}")
    first = preprocessing.prepare(train_x.read(np.zeros(1, dtype=np.int64))) if streamed else train_x
    for name, x in (("train_x", first), ("val_x", val_x)):
        if not isinstance(x, Tensor) or x.shape[:1] == (0,) or x.ndim == 0:
            raise ShapeError(f"{name}: needs at least one example (a tensor of shape (N, *data_shape), N >= 1)")
        check_batch(model, x[:1])
    if resume and run_dir is None:
        raise ConfigError("resume: needs a run directory to resume from")
    device = _resolve_device(config.device)
    world, rank = distributed.world_size(), distributed.rank()
    main = rank == 0
    files = _RunFiles(Path(run_dir)) if run_dir is not None else None
    writes = files is not None and main
    extra = dict(model_extra or {})
    extra.setdefault("preprocessing", preprocessing.to_dict())
    extra.setdefault("train", config.to_dict())

    model.to(device)
    model.train()
    val_x = val_x.to(device)
    val_eval = preprocessing.augment(val_x, torch.Generator(device=device).manual_seed(0))
    val_part = distributed.shard(val_x.shape[0], world, rank)
    dtype = next(model.parameters()).dtype
    latent = getattr(model, "latent_dim", None)
    draw_eps = isinstance(latent, int) and _posterior_is_gaussian(model, first[:1].to(device, dtype))
    plan = BatchPlan(train_x, preprocessing, config.batch_size, device, rank=rank, world=world,
                     latent=(config.samples, latent, dtype) if draw_eps else None)
    steps_per_epoch = plan.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    optimizer, fused = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: lr_factor(config, t, total_steps))
    autocast, scaler = _precision(config, device)

    state = _State()
    partial: dict[str, Any] | None = None
    if files is not None:
        if files.has_checkpoint() and not resume:
            raise ConfigError(f"{files.run_dir}: already holds a training run (checkpoints/last.json); "
                              "resume it or choose another directory")
        if resume and files.has_checkpoint():
            loaded = load_training_state(files.checkpoint, model, optimizer, scheduler)
            saved = loaded["extra"]
            _check_resumable(saved.get("config", {}), config, checkpoint_paths(files.checkpoint)[1])
            state = _State(loaded["epoch"], loaded["step"], saved["best_val_elbo"], saved["best_epoch"],
                           saved["since_best"], saved["stopped_early"],
                           [EpochMetrics.from_dict(m) for m in saved["history"]])
            partial = saved.get("partial_epoch")
        distributed.barrier()          # every rank has read the checkpoint before rank 0 writes again
        if writes:
            files.rewrite_metrics(state.history)
    if state.stopped_early or state.epoch >= config.epochs:
        return FitResult(state.history, state.best_epoch, state.best_val_elbo, state.stopped_early)

    step_loss: Callable[..., tuple[Tensor, Tensor]] = functools.partial(_batch_loss, model, config=config)
    ddp = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # buffers (the running decoder variance) follow rank 0's at every forward: DDP's default
        ddp = DistributedDataParallel(_Objective(model, config),
                                      device_ids=[device.index] if device.type == "cuda" else None)
        step_loss = ddp
    profiled = _global_profile_mean if world > 1 else (lambda weight: contextlib.nullcontext())
    writer = _tensorboard(files.run_dir if writes else None)
    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    buffers = list(model.buffers())
    validate_args = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)  # no host sync per step; NaN stays NaN
    fork_devices = [device.index] if device.type == "cuda" else []
    gate = _InterruptGate()
    try:
        with torch.random.fork_rng(devices=fork_devices, device_type="cuda"), gate:
            for epoch in range(state.epoch + 1, config.epochs + 1):
                t0 = time.perf_counter()
                perm_gen = torch.Generator().manual_seed(_seed(config.seed, epoch, _STREAM_PERMUTATION))
                aug_gen = torch.Generator(device=device).manual_seed(_seed(config.seed, epoch, _STREAM_AUGMENT))
                _seed_global(device, _seed(config.seed, epoch, _STREAM_MODEL, rank))   # draws the model makes itself
                plan.start_epoch(perm_gen)
                totals = _EpochTotals.zeros(device)
                done, beta, lr_used = 0, kl_beta(config, state.step, steps_per_epoch), config.lr
                if partial is not None and partial["epoch"] == epoch:    # resume mid-epoch
                    done, beta, lr_used, seconds = _resume_partial(partial, totals, aug_gen, device)
                    if rank > 0:                  # the saved sums are the whole batch's: count them once
                        totals.sums.zero_()
                        totals.counted.zero_()
                    t0 -= seconds
                partial = None
                snap = _rng_snapshot(aug_gen, device) if writes and world == 1 else {}
                saved_buffers: list[Tensor] | None = None
                try:
                    for b in range(done, steps_per_epoch):
                        local = plan.batch(b, aug_gen)
                        beta = kl_beta(config, state.step, steps_per_epoch)
                        saved_buffers = [buf.clone() for buf in buffers]
                        with autocast(), profiled(local.weight):
                            loss, stats = step_loss(local.x, beta, local.eps, local.weight * world / local.global_size)
                        optimizer.zero_grad(set_to_none=True)
                        if scaler is not None:
                            scaler.scale(loss).backward()
                            scaler.unscale_(optimizer)
                        else:
                            loss.backward()
                        grads = [p.grad for p in params if p.grad is not None]
                        if config.grad_clip is not None:
                            norm = nn.utils.clip_grad_norm_(params, config.grad_clip)
                        else:
                            norm = _total_norm(grads) if grads else torch.zeros((), device=device)
                        finite = torch.isfinite(loss).to(torch.float32)
                        if world > 1:                      # a non-finite loss on any rank skips the step everywhere
                            finite = distributed.all_reduce_sum(finite) == world
                        ok = finite.bool() & torch.isfinite(norm)
                        with gate.hold():
                            if fused:
                                optimizer.found_inf = (~ok).to(torch.float32)  # the fused kernel skips the update
                                optimizer.step()
                            elif bool(ok):
                                optimizer.step()
                            if scaler is not None:
                                scaler.update()
                            lr_used = float(optimizer.param_groups[0]["lr"])
                            with warnings.catch_warnings():  # a skipped first step would warn about the order
                                warnings.simplefilter("ignore", UserWarning)
                                scheduler.step()
                            for buf, old in zip(buffers, saved_buffers, strict=True):
                                buf.copy_(torch.where(ok, buf, old))
                            saved_buffers = None
                            totals.sums += torch.where(ok, stats * local.weight, 0.0)
                            totals.counted += torch.where(ok, float(local.x.shape[0]) * local.weight, 0.0)
                            totals.bad_run = torch.where(ok, 0, totals.bad_run + 1)
                            totals.worst_run = torch.maximum(totals.worst_run, totals.bad_run)
                            totals.skipped += (~ok).long()
                            state.step += 1
                            done = b + 1
                            if snap:
                                snap = _rng_snapshot(aug_gen, device)
                        if bar is not None:
                            bar.update(1)
                        if (b + 1) % _SYNC_EVERY == 0 or b + 1 == steps_per_epoch:
                            if int(totals.worst_run) >= MAX_BAD_STEPS:
                                raise DivergenceError(
                                    f"training diverged: {int(totals.worst_run)} consecutive steps with a non-finite "
                                    f"loss or gradient in epoch {epoch}; likely causes: learning rate too high "
                                    f"(lr={config.lr:g}), decoder variance c too small, or data not scaled")
                            if bar is not None:
                                loss_m, elbo_m, kl_m, _ = (totals.sums / totals.counted.clamp_min(1)).tolist()
                                bar.set_postfix(epoch=epoch, loss=f"{loss_m:.4g}", elbo=f"{elbo_m:.4g}",
                                                kl=f"{kl_m:.4g}", refresh=False)
                except KeyboardInterrupt:
                    if writes and world == 1:
                        with _deferred_interrupt():
                            if saved_buffers is not None:        # the interrupted step changes nothing
                                for buf, old in zip(buffers, saved_buffers, strict=True):
                                    buf.copy_(old)
                            record = _partial_record(epoch, done, beta, lr_used, time.perf_counter() - t0,
                                                     totals, snap)
                            save_training_state(
                                files.checkpoint, model=model, optimizer=optimizer, scheduler=scheduler,
                                epoch=state.epoch, step=state.step, rng=capture_rng(),
                                extra=_checkpoint_extra(config, state, record))
                    raise
                val = _validate(model, val_eval, config, device, val_part, plan.latent)
                epoch_sums = distributed.all_reduce_sum(torch.cat([totals.sums, totals.counted.reshape(1)]))
                counted = float(epoch_sums[4])
                loss_m, elbo_m, kl_m, rec_m = (epoch_sums[:4] / counted).tolist() if counted > 0 else [math.nan] * 4
                metrics = EpochMetrics(epoch, state.step, loss_m, elbo_m, kl_m, rec_m, val[0], val[1], val[2],
                                       beta, lr_used, time.perf_counter() - t0,
                                       val[3], int(totals.skipped))
                state.epoch = epoch
                state.history.append(metrics)
                improved = math.isfinite(metrics.val_elbo) and metrics.val_elbo > state.best_val_elbo
                if improved:
                    state.best_val_elbo, state.best_epoch, state.since_best = metrics.val_elbo, epoch, 0
                else:
                    state.since_best += 1
                stop = bool(config.early_stopping_patience and state.since_best >= config.early_stopping_patience)
                for callback in callbacks or ():
                    stop = bool(callback(metrics)) or stop
                stop = distributed.broadcast_flag(stop, device)     # every rank stops with rank 0
                state.stopped_early = stop and epoch < config.epochs
                if bar is not None:
                    bar.set_postfix(epoch=epoch, val_elbo=f"{metrics.val_elbo:.4g}", refresh=True)
                if writer is not None:
                    for key, value in metrics.to_dict().items():
                        if key not in ("epoch", "step") and isinstance(value, (int, float)):
                            writer.add_scalar(f"epoch/{key}", value, epoch)
                    writer.flush()
                if writes:
                    with _deferred_interrupt():
                        if improved:
                            _save_best(model, files.run_dir, extra)
                        files.append_metrics(metrics)
                        save_training_state(
                            files.checkpoint, model=model, optimizer=optimizer, scheduler=scheduler,
                            epoch=epoch, step=state.step, rng=capture_rng(),
                            extra=_checkpoint_extra(config, state))
                if stop:
                    break
    finally:
        if ddp is not None:              # free DDP's reducer (and its pending work) while the process group lives
            del step_loss, ddp
            gc.collect()
        torch.distributions.Distribution.set_default_validate_args(validate_args)
        if fused and hasattr(optimizer, "found_inf"):
            del optimizer.found_inf
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    distributed.barrier()                  # rank 0's files are complete when fit returns on any rank
    return FitResult(state.history, state.best_epoch, state.best_val_elbo, state.stopped_early)
