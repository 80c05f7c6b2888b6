"""Learning curves of a run (ELBO, KL, reconstruction term, and the beta / learning-rate schedule).

A panel with nothing to show is left out: a quantity never recorded, and the schedule panel when β
and the learning rate stay constant (the caption, :func:`training_curves_caption`, gives their values).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from vaekit.viz.canvas import _new_figure, _png_bytes, _save

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
    for split, split_name, color in (("train", "train", "tab:blue"), ("val", "validation", "tab:orange")):
        _plot_series(ax, x, _series(history, f"{split}_{quantity}"), split_name, color=color)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{title} ({_UNITS})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _varies(values: np.ndarray) -> bool:
    """True when the finite entries of ``values`` are not all equal."""
    finite = values[np.isfinite(values)]
    return finite.size > 1 and bool(finite.min() != finite.max())


def constant_schedule(history: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """``{"beta": b, "lr": r}`` for those of β and the learning rate recorded with one value at every epoch."""
    out = {}
    for key in ("beta", "lr"):
        values = _series(history, key)
        if np.isfinite(values).any() and not _varies(values):
            out[key] = float(values[np.isfinite(values)][0])
    return out


_QUANTITIES = (("elbo", "ELBO"), ("kl", "KL divergence"), ("reconstruction", "reconstruction term"))


def drawn_panels(history: Sequence[Mapping[str, object]]) -> list[str]:
    """The panels :func:`plot_training_curves` draws, in order: ``elbo``, ``kl``, ``reconstruction``
    (each when a train or validation value of it is recorded) and ``schedule`` (when β or the
    learning rate changes over the epochs)."""
    rows = list(history)
    panels = [q for q, _ in _QUANTITIES
              if any(np.isfinite(_series(rows, f"{split}_{q}")).any() for split in ("train", "val"))]
    if _varies(_series(rows, "beta")) or _varies(_series(rows, "lr")):
        panels.append("schedule")
    return panels


def training_curves_caption(history: Sequence[Mapping[str, object]]) -> str:
    """The caption of the figure :func:`plot_training_curves` draws: its panels and the constant schedule."""
    names = dict(_QUANTITIES)
    panels = drawn_panels(history)
    drawn = [names[p] for p in panels if p in names]
    text = "Training curves per epoch, train (blue) and validation (orange)"
    if drawn:
        text += f": {', '.join(drawn)} ({_UNITS})"
    if "schedule" in panels:
        text += "; the schedule: β (green, left axis) and the learning rate (red, log-scaled right axis)"
    constant = constant_schedule(history)
    if constant:
        said = [f"{'β' if key == 'beta' else 'the learning rate'} = {value:g}" for key, value in constant.items()]
        text += f"; {' and '.join(said)} at every epoch"
        if "schedule" not in panels:
            text += " (no schedule panel)"
    return text


def _schedule_panel(ax: Axes, x: np.ndarray, history: Sequence[Mapping[str, object]]) -> None:
    """The beta schedule (left axis, green) and learning rate (log-scaled right axis, red), each when it varies."""
    ax.set_title("schedule")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    beta = _series(history, "beta")
    has_beta = _varies(beta) and _plot_series(ax, x, beta, "β", color="tab:green")
    if has_beta:
        ax.set_ylabel("β, KL weight (dimensionless)", color="tab:green")
    else:
        ax.set_yticks([])
    lr = _series(history, "lr")
    lr = np.where(np.isfinite(lr) & (lr > 0), lr, np.nan)
    twin = ax.twinx()
    if _varies(lr) and _plot_series(twin, x, lr, "learning rate", color="tab:red"):
        twin.set_yscale("log")
        twin.set_ylabel("learning rate (per step)", color="tab:red")
    else:
        twin.set_axis_off()


def plot_training_curves(history: Sequence[Mapping[str, object]], path: str | os.PathLike[str]) -> Path:
    """Write the learning curves of a run to the PNG ``path``.

    Args:
        history: one dict per epoch with keys among ``epoch``, ``train_loss``, ``train_elbo``,
            ``train_kl``, ``train_reconstruction``, ``val_elbo``, ``val_kl``,
            ``val_reconstruction``, ``beta``, ``lr``. Missing keys, ``None`` and NaN are skipped;
            without finite ``epoch`` values the epochs are numbered 1, 2, ....
        path: output ``.png`` file.

    The panels of :func:`drawn_panels`, side by side (four: two by two): ELBO, KL divergence and
    reconstruction term (train and validation, in nats per example) and the schedule (β and learning
    rate), each only when it has something to show; with none of them, one panel that says so.
    """
    rows = list(history)
    panels = drawn_panels(rows)
    if not panels:                                 # nothing to show: one empty panel that says so
        fig = _new_figure(6.0, 4.0)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "training curves: nothing recorded", ha="center", va="center", transform=ax.transAxes,
                color="grey")
        return _save(fig, path)
    x = _epochs(rows)
    shape = (2, 2) if len(panels) == 4 else (1, len(panels))
    fig = _new_figure({1: 6.0, 2: 11.0, 3: 14.0, 4: 11.0}[len(panels)], 7.5 if len(panels) == 4 else 4.0)
    axes = np.atleast_1d(fig.subplots(*shape)).ravel()
    titles = dict(_QUANTITIES)
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "schedule":
            _schedule_panel(ax, x, rows)
        else:
            _curve_panel(ax, x, rows, panel, titles[panel])
    return _save(fig, path)


def validation_elbo_png(histories: Mapping[str, Sequence[Mapping[str, object]]]) -> bytes:
    """The validation ELBO per epoch of several runs on one set of axes (run name -> history), each
    run's best epoch starred: the bytes of an RGB PNG. Runs without a validation ELBO are left out
    (a ValueError when none has one)."""
    drawn = {name: rows for name, rows in histories.items() if np.isfinite(_series(list(rows), "val_elbo")).any()}
    if not drawn:
        raise ValueError("validation ELBO: no run records one")
    fig = _new_figure(9.0, 4.5)
    ax = fig.add_subplot()
    for name, rows in drawn.items():
        x, y = _epochs(list(rows)), _series(list(rows), "val_elbo")
        _plot_series(ax, x, y, name)
        best = int(np.nanargmax(y))
        ax.plot([x[best]], [y[best]], marker="*", markersize=12, color=ax.lines[-1].get_color(), linestyle="none")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation ELBO ({_UNITS})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _png_bytes(fig)
