"""The trainer: minibatch stochastic gradient ascent on an objective (the ELBO, or the IWAE bound).

Each step takes a batch x_1..x_B (indices from a per-epoch permutation, then the preprocessing's
random ``augment``: dynamic binarisation or dequantisation) and minimises

    loss = -(1/B) Σ_b [ E_q[log p(x_b|z)] - β_t · KL(q_{x_b}(z) || p(z)) ]      (objective ELBO)
    loss = -(1/B) Σ_b L_K(x_b)                                                   (objective IWAE)

with S (resp. K) = ``samples`` draws, KL warm-up β_t = β · min(1, t / (W · steps_per_epoch))
over W = ``kl_warmup_epochs`` epochs (t = the global step, from 0) and free bits λ. The learning
rate follows ``lr · factor(t)``: a linear warm-up (t + 1) / (w + 1) for the first w =
``warmup_steps`` steps, then 1 (``constant``) or ½ (1 + cos(π (t - w) / (T - w))) (``cosine``,
T = epochs · steps_per_epoch). The step itself is :class:`vaekit.training.step.Stepper`.

Randomness is derived from ``seed`` and the epoch number alone (the permutation, the augmentation
and the reparameterisation draws each get their own stream, re-seeded every epoch), so resuming
from a checkpoint reproduces an uninterrupted run bit for bit on the same device. A stop signal
(Ctrl-C, SIGTERM or SIGHUP: :class:`vaekit.training.interrupts.TrainingInterrupted`, a
KeyboardInterrupt) during an epoch's steps saves a checkpoint of the last completed step with a
"partial_epoch" record (batches done, running sums, augmentation and global RNG states) before it
propagates, and resuming continues that epoch exactly where it stopped. Torch's global
RNG is forked around :func:`fit`, so the caller's RNG state is left as it was. Argument validation
of torch distributions is switched off while training (it costs a host synchronisation per
distribution, and turns a NaN into an exception) and restored afterwards.

A step whose loss or gradient is not finite changes nothing and is counted. Training stops with
:class:`DivergenceError` (leaving the checkpoint of the last good epoch) when

* 20 steps in a row were skipped (:data:`MAX_BAD_STEPS`; the run of bad steps continues across
  epochs and across a checkpoint and resume),
* every step of an epoch was skipped (an epoch that changed nothing, e.g. weights that are already
  non-finite), or
* an epoch's training or validation ELBO per example, though finite, is absurd: beyond
  ±:data:`ABSURD_NATS_PER_DIM` nats per data dimension (see there).

The host synchronises every 20 steps, not every step. With a run directory, rank 0 holds the
run's lock (:mod:`vaekit.store.lock`) while it trains.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.data import Preprocessing, as_examples
from vaekit.devices import resolve_device
from vaekit.errors import ConfigError
from vaekit.inference.objectives import Objective
from vaekit.models.protocol import LatentModel
from vaekit.store.checkpoint import capture_rng, checkpoint_paths, load_training_state, save_training_state
from vaekit.store.layout import RunLayout
from vaekit.store.lock import run_lock
from vaekit.store.metrics import append_metrics, rewrite_metrics
from vaekit.store.weights import load_weights
from vaekit.training import distributed, step
from vaekit.training.batches import BatchPlan
from vaekit.training.config import TrainConfig, check_resumable, kl_beta, lr_factor
from vaekit.training.guards import (
    ABSURD_NATS_PER_DIM,
    MAX_BAD_STEPS,
    DivergenceError,
    check_absurd,
    check_divergence,
    check_epoch_changed_something,
    refuse_non_finite,
)
from vaekit.training.interrupts import InterruptGate, deferred_interrupt
from vaekit.training.labels import training_labels
from vaekit.training.outputs import has_checkpoint, save_best
from vaekit.training.preflight import check_model_objective, warn_loader_batch_size
from vaekit.training.state import (
    METRIC_FIELDS,
    STREAM_AUGMENT,
    STREAM_MODEL,
    STREAM_PERMUTATION,
    EpochMetrics,
    EpochTotals,
    FitResult,
    TrainState,
    checkpoint_extra,
    derive_seed,
    partial_record,
    resume_partial,
    rng_snapshot,
    seed_global,
)
from vaekit.training.step import ObjectiveModule, Stepper, make_optimizer
from vaekit.training.tensorboard import TensorBoardLog
from vaekit.training.validation import validate

__all__ = ["MAX_BAD_STEPS", "ABSURD_NATS_PER_DIM", "DivergenceError", "fit", "lr_factor"]

_SYNC_EVERY = 20
#: Training data of no preprocessing (already prepared): nothing is scaled or drawn.
_IDENTITY = Preprocessing("tabular", None, None, None, binarize=False, dequantize=False)


def fit(model: LatentModel, train_x: Any, val_x: Any, config: TrainConfig, *,
        preprocessing: Preprocessing | None = None, objective: Objective | None = None,
        run_dir: str | Path | None = None, resume: bool = False, progress: bool | Callable[..., Any] = False,
        callbacks: Sequence[Callable[[EpochMetrics], Any]] | None = None,
        model_extra: dict[str, Any] | None = None, tensorboard_images: int = 1, train_y: Any = None,
        val_y: Any = None, tensorboard_steps: int = 20, restore_best: bool = True) -> FitResult:
    """Train ``model`` (a :class:`~vaekit.models.protocol.LatentModel`) on ``train_x``, validating on ``val_x``.

    ``train_x`` and ``val_x``: prepared examples (N, *data_shape) as a tensor, a numpy array, a
    ``torch.utils.data.Dataset`` or a ``DataLoader`` (read once into one tensor, kept on the
    device: the trainer batches by index permutation, which makes resume exact), or for
    ``train_x`` a :class:`vaekit.data.stream.NpyStream` of raw rows, read in shuffled blocks and
    prepared batch by batch (for data larger than memory; see :mod:`vaekit.training.batches`).
    ``preprocessing``: its ``augment`` draws each batch's binarisation or dequantisation (and its
    ``prepare`` reads a stream); None for data used as they are. ``objective``: what to maximise
    (:mod:`vaekit.inference.objectives`); by default the one ``config`` names. ``train_y``, ``val_y``: the
    examples' labels (N,), which a conditional model needs (:mod:`vaekit.training.labels`).

    With ``run_dir``, after every epoch: the best model so far (highest validation ELBO) is saved
    with :func:`vaekit.store.model_files.save_model` (``extra=model_extra``, which gets
    "preprocessing" and "train" entries if missing), a row is appended to the metrics files and
    the full state is saved to the checkpoint (:class:`vaekit.store.layout.RunLayout`); when
    tensorboard is installed, per-step scalars every ``tensorboard_steps`` steps (each point the mean
    over its steps), per-epoch scalars, sample and reconstruction images every
    ``tensorboard_images`` epochs (0: none) and the hparams with the final metrics are written
    (:mod:`vaekit.training.tensorboard`). ``resume=True`` continues from the
    checkpoint (a finished run returns at once; no checkpoint yet means a fresh start). A
    KeyboardInterrupt during an epoch's steps first saves the checkpoint at the last completed step
    (with a "partial_epoch" record; no metrics row) and is then re-raised; resuming finishes that
    epoch exactly. Each callback is called with every epoch's :class:`EpochMetrics`; a truthy
    return value stops training.

    In a process group of R > 1 ranks (:mod:`vaekit.training.distributed`; every rank calls ``fit``
    with the same arguments) the model is wrapped in DistributedDataParallel, ``config.batch_size``
    is the global batch, metrics are summed over the ranks, and only rank 0 writes files (an
    interrupt then saves nothing mid-epoch: resuming starts from the last completed epoch). A
    checkpoint resumes with any number of ranks.

    When ``fit`` returns, the model holds the weights of the epoch with the best validation ELBO
    (``restore_best``, the default; the same weights as the run's weights file), not the last epoch's, which
    the checkpoint keeps for resuming; ``restore_best=False`` leaves the last epoch's. While it
    trains, rank 0 holds the run directory's lock (:func:`vaekit.store.lock.run_lock`): a run
    directory another process writes is a :class:`vaekit.store.lock.RunLockedError`.
    """
    if isinstance(config, TrainConfig):      # the model against its objective, before anything is written
        warn_loader_batch_size(train_x, config.batch_size)
        objective = config.build_objective() if objective is None else objective
        val_x = as_examples(val_x, name="val_x", data_shape=tuple(model.data_shape), check_finite=False)
        if isinstance(objective, Objective) and isinstance(val_x, Tensor):
            check_model_objective(model, objective, val_x, val_y, preprocessing or _IDENTITY)
    writer = run_dir is not None and distributed.rank() == 0
    with run_lock(run_dir) if writer and run_dir is not None else contextlib.nullcontext():
        return _fit(model, train_x, val_x, config, preprocessing, objective, run_dir, resume, progress,
                    list(callbacks or ()), model_extra, (tensorboard_images, tensorboard_steps), (train_y, val_y),
                    restore_best)


def _fit(model: LatentModel, train_x: Any, val_x: Any, config: TrainConfig, preprocessing: Preprocessing | None,
         objective: Objective | None, run_dir: str | Path | None, resume: bool, progress: bool | Callable[..., Any],
         callbacks: list[Callable[[EpochMetrics], Any]], model_extra: dict[str, Any] | None,
         tensorboard: tuple[int, int] = (1, 20), labels: tuple[Any, Any] = (None, None),
         restore_best: bool = True) -> FitResult:
    run = _Run.start(model, train_x, val_x, config, preprocessing, objective, run_dir, resume, progress,
                     callbacks, model_extra, tensorboard, labels)
    if run.state.stopped_early or run.state.epoch >= config.epochs:
        if restore_best:
            _restore_best(run)
        return run.state.result()
    validate_args = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)  # no host sync per step; NaN stays NaN
    fork_devices = [run.device.index] if run.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices, device_type="cuda"), run.stepper.gate:
            for epoch in range(run.state.epoch + 1, config.epochs + 1):
                t0, totals, beta, lr = _train_epoch(run, epoch)
                if _end_epoch(run, epoch, t0, totals, beta, lr):
                    break
            if run.writer is not None:
                run.writer.finish(run.state.result())
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate_args)
        run.close()
    distributed.barrier()                  # rank 0's files are complete when fit returns on any rank
    if restore_best:
        _restore_best(run)
    return run.state.result()


def _restore_best(run: _Run) -> None:
    """Load the best validation epoch's weights into the model: kept in memory when that epoch ran in this
    call, else read from the run directory's weights file (a resumed run whose best epoch came before)."""
    if run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    elif run.layout is not None and run.layout.weights.is_file():
        run.model.load_state_dict(load_weights(run.layout.weights))


@dataclass
class _Run:
    """Everything one call of :func:`fit` works with, set up by :meth:`start`."""

    model: LatentModel
    config: TrainConfig
    device: torch.device
    plan: BatchPlan
    noise: tuple[int, tuple[int, ...], torch.dtype] | None
    val_x: Tensor
    val_part: tuple[int, int]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    stepper: Stepper
    state: TrainState
    partial: dict[str, Any] | None
    layout: RunLayout | None
    writes: bool
    extra: dict[str, Any]
    callbacks: list[Callable[[EpochMetrics], Any]]
    world: int
    rank: int
    ddp: nn.Module | None = None
    writer: TensorBoardLog | None = None
    bar: Any = None
    val_y: Tensor | None = None
    best_state: dict[str, Tensor] | None = None    # the best validation epoch's weights, in this call

    @classmethod
    def start(cls, model: LatentModel, train_x: Any, val_x: Any, config: TrainConfig,
              preprocessing: Preprocessing | None, objective: Objective | None, run_dir: str | Path | None,
              resume: bool, progress: bool | Callable[..., Any], callbacks: list[Callable[[EpochMetrics], Any]],
              model_extra: dict[str, Any] | None, tensorboard: tuple[int, int] = (1, 20),
              labels: tuple[Any, Any] = (None, None)) -> _Run:
        """Check the arguments, read the data, build the optimizer and the step, and load the
        checkpoint when resuming. ``tensorboard``: (images every N epochs, step scalars every N steps)."""
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config: expected a TrainConfig, got {type(config).__name__}")
        tensorboard_images, tensorboard_steps = TensorBoardLog.check_counts(*tensorboard)
        objective = config.build_objective() if objective is None else objective
        if not isinstance(objective, Objective):
            raise ConfigError(f"objective: expected a vaekit Objective (e.g. vaekit.ELBO()), "
                              f"got {type(objective).__name__}")
        data_shape = tuple(model.data_shape)
        # non-finite values are not refused here: a step they spoil is skipped (and counted) by the step's guard
        train_x = as_examples(train_x, name="train_x", data_shape=data_shape, check_finite=False)
        val_x = as_examples(val_x, name="val_x", data_shape=data_shape, check_finite=False)
        if not isinstance(val_x, Tensor):
            raise ConfigError("val_x: a streamed file is for training data; give the validation examples in memory")
        if preprocessing is None:
            if not isinstance(train_x, Tensor):
                raise ConfigError("preprocessing: a streamed train_x holds raw rows; give the preprocessing that "
                                  "prepares them (vaekit.data.fit_preprocessing)")
            preprocessing = _IDENTITY
        if resume and run_dir is None:
            raise ConfigError("resume: needs a run directory to resume from")
        device = resolve_device(config.device)
        world, rank = distributed.world_size(), distributed.rank()
        layout = RunLayout.of(run_dir) if run_dir is not None else None
        extra = dict(model_extra or {})
        extra.setdefault("preprocessing", preprocessing.to_dict())
        extra.setdefault("train", config.to_dict())

        model.to(device)
        model.train()
        val_x = val_x.to(device)
        train_y, val_y = training_labels(model, *labels, train_x, val_x, device)   # a conditional model's
        val_eval = preprocessing.augment(val_x, torch.Generator(device=device).manual_seed(0))
        dtype = next(model.parameters()).dtype
        noise = (objective.samples, model.noise_shape, dtype) if model.noise_shape is not None else None
        plan = BatchPlan(train_x, preprocessing, config.batch_size, device, rank=rank, world=world, latent=noise,
                         labels=train_y)
        total_steps = config.epochs * plan.steps_per_epoch
        optimizer, fused = make_optimizer(model, config.lr, config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: lr_factor(config, t, total_steps))

        state, partial = TrainState(), None
        if layout is not None:
            if has_checkpoint(layout) and not resume:
                raise ConfigError(f"{layout.root}: already holds a training run ({layout.checkpoint.name}.json); "
                                  "resume it or choose another directory")
            if resume and has_checkpoint(layout):
                loaded = load_training_state(layout.checkpoint, model, optimizer, scheduler)
                refuse_non_finite(model, optimizer, checkpoint_paths(layout.checkpoint)[0])
                saved = loaded["extra"]
                check_resumable(saved.get("config", {}), config, checkpoint_paths(layout.checkpoint)[1])
                state = TrainState.from_checkpoint(loaded["epoch"], loaded["step"], saved)
                partial = saved.get("partial_epoch")
            distributed.barrier()          # every rank has read the checkpoint before rank 0 writes again
            if rank == 0:
                rewrite_metrics(layout, [m.to_dict() for m in state.history], METRIC_FIELDS)

        loss_fn: Callable[..., tuple[Tensor | step.RoutedLoss, Tensor]] = functools.partial(step.batch_loss, model,
                                                                                             objective)
        ddp = None
        if world > 1 and objective.routes_gradients:
            raise ConfigError(f"objective {objective.name}: trains its two parameter groups by two backward passes, "
                              "which data parallelism (torchrun) does not support; train it in one process")
        if world > 1 and not (state.stopped_early or state.epoch >= config.epochs):
            from torch.nn.parallel import DistributedDataParallel

            # buffers (the running decoder variance) follow rank 0's at every forward: DDP's default
            ddp = DistributedDataParallel(ObjectiveModule(model, objective),
                                          device_ids=[device.index] if device.type == "cuda" else None)
            loss_fn = ddp
        stepper = Stepper(loss_fn, model, optimizer, scheduler, fused, device, config.precision, config.grad_clip,
                          world, InterruptGate())
        writes = layout is not None and rank == 0
        run = cls(model, config, device, plan, noise, val_eval, distributed.shard(val_x.shape[0], world, rank),
                  optimizer, scheduler, stepper, state, partial, layout, writes, extra, callbacks, world, rank, ddp,
                  val_y=val_y)
        if not (state.stopped_early or state.epoch >= config.epochs):
            run.writer = TensorBoardLog.open(layout if writes else None, model=model, config=config,
                                             val_x=val_eval, val_y=val_y, images_every=tensorboard_images,
                                             steps_every=tensorboard_steps)
            if progress and rank == 0:          # True: a tqdm bar; a callable: a bar of that class (same arguments)
                from tqdm.auto import tqdm

                bar = progress if callable(progress) else tqdm
                run.bar = bar(total=total_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True)
        return run

    def save_checkpoint(self, partial: dict[str, Any] | None = None) -> None:
        """The full training state (rank 0 with a run directory only)."""
        if self.layout is not None:
            save_training_state(self.layout.checkpoint, model=self.model, optimizer=self.optimizer,
                                scheduler=self.scheduler, epoch=self.state.epoch, step=self.state.step,
                                rng=capture_rng(), extra=checkpoint_extra(self.config.to_dict(), self.state, partial))

    def close(self) -> None:
        if self.ddp is not None:         # free DDP's reducer (and its pending work) while the process group lives
            self.ddp = None
            self.stepper.loss = step.batch_loss
            gc.collect()
        self.stepper.close()
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _train_epoch(run: _Run, epoch: int) -> tuple[float, EpochTotals, float, float]:
    """The steps of one epoch (or of its rest, resuming mid-epoch): (start time, totals, β and
    learning rate of its last step). Ctrl-C saves a mid-epoch checkpoint (one process) and propagates."""
    config, device, state = run.config, run.device, run.state
    t0 = time.perf_counter()
    perm_gen = torch.Generator().manual_seed(derive_seed(config.seed, epoch, STREAM_PERMUTATION))
    aug_gen = torch.Generator(device=device).manual_seed(derive_seed(config.seed, epoch, STREAM_AUGMENT))
    seed_global(device, derive_seed(config.seed, epoch, STREAM_MODEL, run.rank))   # draws the model makes itself
    run.plan.start_epoch(perm_gen)
    totals = EpochTotals.zeros(device)
    totals.carry_bad_run(state.bad_run)                 # a run of bad steps continues across epochs
    steps = run.plan.steps_per_epoch
    done, beta, lr_used = 0, kl_beta(config, state.step, steps), config.lr
    if run.partial is not None and run.partial["epoch"] == epoch:       # resume mid-epoch
        done, beta, lr_used, seconds = resume_partial(run.partial, totals, aug_gen, device)
        if run.rank > 0:                      # the saved sums are the whole batch's: count them once
            totals.sums.zero_()
            totals.counted.zero_()
        t0 -= seconds
    run.partial = None
    snap = rng_snapshot(aug_gen, device) if run.writes and run.world == 1 else {}
    if run.writer is not None:
        run.writer.begin_epoch(totals)

    def committed(b: int, lr: float) -> None:
        nonlocal done, snap, lr_used
        state.step += 1
        done, lr_used = b + 1, lr
        if snap:
            snap = rng_snapshot(aug_gen, device)

    try:
        for b in range(done, steps):
            local = run.plan.batch(b, aug_gen)
            beta = kl_beta(config, state.step, steps)
            run.stepper.step(local, beta, totals, functools.partial(committed, b))
            if run.writer is not None:
                run.writer.after_step(state.step, beta, lr_used, totals, last=b + 1 == steps)
            if run.bar is not None:
                run.bar.update(1)
            if (b + 1) % _SYNC_EVERY == 0 or b + 1 == steps:
                check_divergence(totals, epoch, config)
                if run.writer is not None:
                    run.writer.flush_steps()
                if run.bar is not None:
                    loss_m, elbo_m, kl_m, _ = (totals.sums / totals.counted.clamp_min(1)).tolist()
                    run.bar.set_postfix(epoch=epoch, loss=f"{loss_m:.4g}", elbo=f"{elbo_m:.4g}", kl=f"{kl_m:.4g}",
                                        refresh=False)
    except KeyboardInterrupt:               # Ctrl-C, SIGTERM, SIGHUP (TrainingInterrupted)
        if run.writes and run.world == 1:
            with deferred_interrupt():
                run.save_checkpoint(partial_record(epoch, done, beta, lr_used, time.perf_counter() - t0, totals, snap))
        raise
    check_epoch_changed_something(totals, steps, epoch, config)
    return t0, totals, beta, lr_used


def _end_epoch(run: _Run, epoch: int, t0: float, totals: EpochTotals, beta: float, lr_used: float) -> bool:
    """Validate, record the epoch's metrics, keep the best model, save the checkpoint; whether to stop."""
    config, state = run.config, run.state
    val = validate(run.model, run.val_x, config, run.device, run.val_part, run.noise, run.val_y)
    epoch_sums = distributed.all_reduce_sum(torch.cat([totals.sums, totals.counted.reshape(1)]))
    counted = float(epoch_sums[4])
    loss_m, elbo_m, kl_m, rec_m = (epoch_sums[:4] / counted).tolist() if counted > 0 else [math.nan] * 4
    metrics = EpochMetrics(epoch, state.step, loss_m, elbo_m, kl_m, rec_m, val[0], val[1], val[2],
                           beta, lr_used, time.perf_counter() - t0, val[3], int(totals.skipped))
    check_absurd(metrics, run.model, config)
    improved = state.record(metrics, int(totals.bad_run))
    if improved:
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    stop = bool(config.early_stopping_patience and state.since_best >= config.early_stopping_patience)
    for callback in run.callbacks:
        stop = bool(callback(metrics)) or stop
    stop = distributed.broadcast_flag(stop, run.device)     # every rank stops with rank 0
    state.stopped_early = stop and epoch < config.epochs
    if run.bar is not None:
        run.bar.set_postfix(epoch=epoch, val_elbo=f"{metrics.val_elbo:.4g}", refresh=True)
    if run.writer is not None:
        run.writer.epoch(metrics, run.model, last=epoch == config.epochs)
    if run.writes and run.layout is not None:
        with deferred_interrupt():
            if improved:
                save_best(run.model, run.layout, run.extra)
            append_metrics(run.layout, metrics.to_dict(), METRIC_FIELDS)
            run.save_checkpoint()
    return stop
