"""What :func:`vaekit.training.fit` writes to TensorBoard (``RUN_DIR/tensorboard/``, when tensorboard is
installed; rank 0 only).

Tags (the x axis is the global step t = 1..T for ``step/``, the epoch for the others):

* ``step/loss``, ``step/elbo``, ``step/kl``, ``step/reconstruction``: one point every ``steps_every``
  global steps t (t = N, 2N, …; and at each epoch's last step), the mean over the examples of the
  steps since the epoch's previous point, Σ v / (examples counted) (rank 0's part of each batch under
  torchrun); with N = 1, the mean over each step's batch. Skipped steps (non-finite loss or gradient)
  count nothing, and a point whose steps were all skipped writes none of these four. The mean of an
  epoch's ``step/loss`` weighted by the examples each point covers is that epoch's
  ``epoch/train_loss``. ``step/beta`` and ``step/lr``: the KL weight and learning rate of the point's
  last step. Values are collected on the device and written at the loop's host synchronisations
  (every 20 steps), so they cost no extra synchronisation; N > 1 keeps the event file small (a
  long run at N = 1 writes six scalars for each of its hundreds of thousands of steps).
* ``epoch/<field>``: every numeric field of :class:`~vaekit.training.state.EpochMetrics`.
* ``images/samples``: E[x|z] for :data:`N_SAMPLES` draws z ~ p(z), the same draws every time (the
  first draws of ``torch.manual_seed(seed)``, ``seed`` the training seed), so that the images show
  the decoder learning; ``images/reconstructions``: the first :data:`N_RECONSTRUCTIONS` validation
  examples (top row) above E[x|z] at z = E_q[z] (bottom row); for a conditional model the samples are
  of the classes 0, 1, …, C−1, 0, … in turn and the reconstructions given each example's label. Every
  ``images_every`` epochs (and at
  the last epoch), for image-shaped data ((C, H, W) with C in {1, 3}, or (H, W)) only; values
  clipped to [0, 1], tiles enlarged by a whole factor (nearest neighbour) to at least
  :data:`MIN_TILE_PX` pixels.
* hparams (the HParams dashboard): the training options ``train.*`` and the model configuration
  ``model.*`` (:func:`flat_params`) with the final metrics ``hparam/best_val_elbo``,
  ``hparam/best_epoch``, ``hparam/final_train_elbo``, ``hparam/final_val_elbo`` and
  ``hparam/final_train_kl``, written once training ends.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vaekit.errors import ConfigError
from vaekit.models.protocol import LatentModel
from vaekit.store.layout import RunLayout
from vaekit.training.state import EpochMetrics, EpochTotals, FitResult

__all__ = ["TensorBoardLog", "flat_params", "STEP_TAGS", "N_SAMPLES", "N_RECONSTRUCTIONS", "MIN_TILE_PX"]

#: The per-step means, in the order of :class:`EpochTotals` ``sums``.
STEP_TAGS = ("step/loss", "step/elbo", "step/kl", "step/reconstruction")
N_SAMPLES = 64
N_RECONSTRUCTIONS = 16
MIN_TILE_PX = 48
_PAD = 2
_PAD_VALUE = 0.5
_MAX_PX = 2400


def flat_params(doc: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{prefix + key: value}`` for a configuration dict: numbers, booleans and strings as they are,
    anything else (None, lists, dicts) as its JSON text (``json.dumps(v, sort_keys=True)``)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        plain = isinstance(value, (str, bool, int, float))
        out[f"{prefix}{key}"] = value if plain else json.dumps(value, sort_keys=True)
    return out


def _is_image_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))


def image_grid(images: Tensor, cols: int) -> np.ndarray:
    """Images (N, C, H, W) (or (N, H, W)) as one grid image (C, H', W') in [0, 1]: tiles in rows of
    ``cols``, 2-pixel grey gaps, every pixel repeated s = ceil(MIN_TILE_PX / min(H, W)) times each
    way (nearest neighbour; s smaller if the grid would pass 2400 pixels)."""
    arr = images.detach().to("cpu", torch.float32).clamp(0.0, 1.0).nan_to_num(0.0).numpy()
    if arr.ndim == 3:
        arr = arr[:, None]
    n, c, h, w = arr.shape
    rows = math.ceil(n / cols)
    grid = np.full((c, rows * (h + _PAD) + _PAD, cols * (w + _PAD) + _PAD), _PAD_VALUE, dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = _PAD + r * (h + _PAD), _PAD + k * (w + _PAD)
        grid[:, y:y + h, x:x + w] = arr[i]
    scale = max(1, min(math.ceil(MIN_TILE_PX / min(h, w)), _MAX_PX // max(grid.shape[1:])))
    return np.repeat(np.repeat(grid, scale, axis=1), scale, axis=2)


def _summary_writer(layout: RunLayout) -> Any:
    """A SummaryWriter on the run's tensorboard folder, or None when tensorboard is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(layout.tensorboard))
    except Exception:  # noqa: BLE001 - tensorboard is optional: any failure means "not available"
        return None


class TensorBoardLog:
    """The TensorBoard side of one call of ``fit`` (module docstring). :meth:`open` gives None without
    tensorboard; then ``fit`` writes nothing there."""

    def __init__(self, writer: Any, *, val_x: Tensor, seed: int, images_every: int, hparams: dict[str, Any],
                 val_y: Tensor | None = None, steps_every: int = 1):
        self.writer = writer
        self.steps_every = steps_every
        self.val_x = val_x[:N_RECONSTRUCTIONS]
        self.val_y = None if val_y is None else val_y[:N_RECONSTRUCTIONS]
        self.seed = seed
        self.images_every = images_every
        self.hparams = hparams
        self._baseline: Tensor | None = None
        self._pending: list[tuple[int, float, float, Tensor]] = []

    @staticmethod
    def check_counts(images_every: Any, steps_every: Any) -> tuple[int, int]:
        """``fit``'s ``tensorboard_images`` (an integer >= 0) and ``tensorboard_steps`` (>= 1), checked."""
        for name, value, least in (("tensorboard_images", images_every, 0), ("tensorboard_steps", steps_every, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name}: must be an integer >= {least}, got {value!r}")
        return images_every, steps_every

    @classmethod
    def open(cls, layout: RunLayout | None, *, model: nn.Module, config: Any, val_x: Tensor,
             images_every: int, val_y: Tensor | None = None, steps_every: int = 1) -> TensorBoardLog | None:
        """The log of a run written to ``layout`` (None: no run directory, or not rank 0), or None.
        ``config`` is the :class:`~vaekit.training.TrainConfig`; ``images_every`` the epochs between
        image summaries (0: none); ``steps_every`` the global steps between points of the per-step scalars."""
        writer = _summary_writer(layout) if layout is not None else None
        if writer is None:
            return None
        hparams = flat_params(config.to_dict(), "train.")
        to_dict = getattr(getattr(model, "config", None), "to_dict", None)   # a VAEConfig, when the model has one
        if callable(to_dict):
            hparams.update(flat_params(to_dict(), "model."))
        return cls(writer, val_x=val_x, seed=config.seed, images_every=images_every, hparams=hparams, val_y=val_y,
                   steps_every=steps_every)

    # ----------------------------------------------------------------- per step

    @staticmethod
    def _snapshot(totals: EpochTotals) -> Tensor:
        return torch.cat([totals.sums, totals.counted.reshape(1)])          # (5,) on the device, no sync

    def begin_epoch(self, totals: EpochTotals) -> None:
        """The epoch's running totals as they start (zero, or a resumed epoch's saved sums)."""
        self.flush_steps()
        self._baseline = self._snapshot(totals)

    def after_step(self, step: int, beta: float, lr: float, totals: EpochTotals, *, last: bool = False) -> None:
        """Note global step ``step`` (counted from 1) with the totals it left, a point when ``step`` is a multiple
        of ``steps_every`` or the epoch's ``last`` step; nothing is copied to the host."""
        if last or step % self.steps_every == 0:
            self._pending.append((step, beta, lr, self._snapshot(totals)))

    def flush_steps(self) -> None:
        """Write the recorded points (one host copy for all of them)."""
        if not self._pending or self._baseline is None:
            self._pending.clear()
            return
        snaps = torch.stack([self._baseline, *(s for *_, s in self._pending)]).cpu().double()
        diffs = snaps[1:] - snaps[:-1]                                       # (n, 5): one point's sums, count
        for (step, beta, lr, _), d in zip(self._pending, diffs.tolist(), strict=True):
            if d[4] > 0:                                                     # skipped steps counted nothing
                for tag, total in zip(STEP_TAGS, d[:4], strict=True):
                    self.writer.add_scalar(tag, total / d[4], step)
            self.writer.add_scalar("step/beta", beta, step)
            self.writer.add_scalar("step/lr", lr, step)
        self._baseline = self._pending[-1][3]
        self._pending.clear()

    # ----------------------------------------------------------------- per epoch

    def epoch(self, metrics: EpochMetrics, model: LatentModel, *, last: bool = False) -> None:
        """The epoch's scalars, and its images every ``images_every`` epochs (and at the ``last`` one)."""
        self.flush_steps()
        for key, value in metrics.to_dict().items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, metrics.epoch)
        due = self.images_every > 0 and (metrics.epoch % self.images_every == 0 or last)
        if due and _is_image_shape(tuple(model.data_shape)):
            self.images(model, metrics.epoch)
        self.writer.flush()

    @torch.no_grad()
    def images(self, model: LatentModel, epoch: int) -> None:
        """``images/samples`` and ``images/reconstructions`` of ``model`` at ``epoch`` (eval mode, then
        restored; torch's global RNG left as it was)."""
        was_training = model.training
        model.eval()
        device = self.val_x.device
        try:
            with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                z = model.prior().sample((N_SAMPLES,))                      # (N, K): the same draws every epoch
            sampled, recon_of = model, model
            if getattr(model, "num_classes", 0):                             # conditional: classes in turn
                sampled = model.given(torch.arange(N_SAMPLES, device=device) % model.num_classes)
                recon_of = model.given(self.val_y)
            samples = sampled.decode(z).mean                                 # E[x|z], (N, *data_shape)
            recon = recon_of.decode(recon_of.summary(self.val_x)).mean       # E[x|z] at z = E_q[z]
        finally:
            model.train(was_training)
        self.writer.add_image("images/samples", image_grid(samples, 8), epoch)
        pair = torch.cat([self.val_x.to(recon.dtype), recon])
        self.writer.add_image("images/reconstructions", image_grid(pair, self.val_x.shape[0]), epoch)

    # ----------------------------------------------------------------- the end

    def finish(self, result: FitResult) -> None:
        """The hparams summary: the options with the final metrics (nothing before the first epoch)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        if not result.history:
            return
        last = result.history[-1]
        final = {"hparam/best_val_elbo": result.best_val_elbo, "hparam/best_epoch": float(result.best_epoch),
                 "hparam/final_train_elbo": last.train_elbo, "hparam/final_val_elbo": last.val_elbo,
                 "hparam/final_train_kl": last.train_kl}
        final = {k: float(v) for k, v in final.items() if math.isfinite(v)}
        exp, ssi, sei = hparams_summary(self.hparams, final)
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for key, value in final.items():
            self.writer.add_scalar(key, value, last.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.flush_steps()
        self.writer.close()
