"""Learning curves of a run (ELBO, KL, reconstruction term, and the beta / learning-rate schedule)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from vaekit.viz.canvas import _new_figure, _save

_UNITS = "nats per example"


def _series(history: Sequence[Mapping[str, object]], key: str) -> np.ndarray:
    """The values of ``key`` per epoch as floats, NaN where missing or not a number."""
    out = np.full(len(history), np.nan)
    for i, row in enumerate(history):
        try:
            out[i] = float(row.get(key, math.nan))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    return out


def _epochs(history: Sequence[Mapping[str, object]]) -> np.ndarray:
    """The ``epoch`` values when every entry has a finite one, else ``1, 2, ..., len(history)``."""
    epochs = _series(history, "epoch")
    return epochs if np.isfinite(epochs).all() else np.arange(1, len(history) + 1, dtype=float)


def _plot_series(ax: Axes, x: np.ndarray, y: np.ndarray, label: str, **kw: Any) -> bool:
    """Plot the finite points of ``y`` against ``x`` as a line with markers; False if none."""
    keep = np.isfinite(y)
    if not keep.any():
        return False
    ax.plot(x[keep], y[keep], marker="o", markersize=3, label=label, **kw)
    return True


def _curve_panel(ax: Axes, x: np.ndarray, history: Sequence[Mapping[str, object]], quantity: str, title: str) -> None:
    """One panel: train and validation curves of ``quantity`` in nats per example."""
    drawn = [
        _plot_series(ax, x, _series(history, f"{split}_{quantity}"), split_name, color=color)
        for split, split_name, color in (("train", "train", "tab:blue"), ("val", "validation", "tab:orange"))
    ]
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{title} ({_UNITS})")
    ax.grid(True, alpha=0.3)
    if any(drawn):
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")


def _schedule_panel(ax: Axes, x: np.ndarray, history: Sequence[Mapping[str, object]]) -> None:
    """The beta schedule (left axis, green) and learning rate (log-scaled right axis, red)."""
    ax.set_title("schedule")
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)
    has_beta = _plot_series(ax, x, _series(history, "beta"), "β", color="tab:green")
    ax.set_ylabel("β, KL weight (dimensionless)", color="tab:green" if has_beta else "black")
    lr = _series(history, "lr")
    lr = np.where(np.isfinite(lr) & (lr > 0), lr, np.nan)
    twin = ax.twinx()
    has_lr = _plot_series(twin, x, lr, "learning rate", color="tab:red")
    if has_lr:
        twin.set_yscale("log")
        twin.set_ylabel("learning rate (per step)", color="tab:red")
    else:
        twin.set_axis_off()
    if not (has_beta or has_lr):
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_training_curves(history: Sequence[Mapping[str, object]], path: str | os.PathLike[str]) -> Path:
    """Write the learning curves of a run to the PNG ``path``.

    Args:
        history: one dict per epoch with keys among ``epoch``, ``train_loss``, ``train_elbo``,
            ``train_kl``, ``train_reconstruction``, ``val_elbo``, ``val_kl``,
            ``val_reconstruction``, ``beta``, ``lr``. Missing keys, ``None`` and NaN are skipped
            (a panel with nothing to show says "not recorded"); without finite ``epoch`` values
            the epochs are numbered 1, 2, ....
        path: output ``.png`` file.

    Four panels: ELBO, KL divergence and reconstruction term (train and validation, in nats per
    example) and the schedule (beta and learning rate).
    """
    rows = list(history)
    x = _epochs(rows)
    fig = _new_figure(11.0, 7.5)
    axes = fig.subplots(2, 2)
    _curve_panel(axes[0, 0], x, rows, "elbo", "ELBO")
    _curve_panel(axes[0, 1], x, rows, "kl", "KL divergence")
    _curve_panel(axes[1, 0], x, rows, "reconstruction", "reconstruction term")
    _schedule_panel(axes[1, 1], x, rows)
    return _save(fig, path)
