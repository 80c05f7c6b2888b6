"""Heatmaps of tabular vectors ``(N, D)``: rows = examples, columns = features, in the data's own range."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from vaekit.viz.canvas import _new_figure


def _heatmap(ax: Axes, table: np.ndarray, *, vmin: float, vmax: float, ylabel: str,
             columns: Sequence[str] | None = None) -> AxesImage:
    """Draw ``table`` (rows = examples, columns = features) on ``ax``, the columns labelled with ``columns``
    (the data's column names) when there is one per column; return the image artist."""
    im = ax.imshow(table, aspect="auto", interpolation="nearest", cmap="viridis", vmin=vmin, vmax=vmax)
    if columns is not None and len(columns) == table.shape[1]:
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, rotation=90 if len(columns) > 8 or max(map(len, columns)) > 6 else 0,
                           fontsize=8)
    ax.set_xlabel("column")
    ax.set_ylabel(ylabel)
    return im


def _finite_range(*tables: np.ndarray) -> tuple[float, float]:
    """Common (vmin, vmax) over the finite entries of ``tables``; (0, 1) when there are none."""
    values = np.concatenate([t[np.isfinite(t)].ravel() for t in tables])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def _table_figure(table: np.ndarray, title: str | None, columns: Sequence[str] | None = None) -> Figure:
    """Heatmap figure of tabular vectors ``(N, D)`` with a colour bar (columns named by ``columns``)."""
    fig = _new_figure(7.0, min(8.0, 2.5 + 0.12 * table.shape[0]))
    ax = fig.add_subplot()
    vmin, vmax = _finite_range(table)
    im = _heatmap(ax, table, vmin=vmin, vmax=vmax, ylabel="example", columns=columns)
    fig.colorbar(im, ax=ax, label="value")
    if title:
        ax.set_title(title)
    return fig


def _table_pair_figure(orig: np.ndarray, rec: np.ndarray, columns: Sequence[str] | None = None) -> Figure:
    """Two stacked heatmaps (originals, reconstructions) sharing one colour scale."""
    fig = _new_figure(7.0, min(9.0, 3.5 + 0.2 * orig.shape[0]))
    top, bottom = fig.subplots(2, 1, sharex=True)
    vmin, vmax = _finite_range(orig, rec)
    _heatmap(top, orig, vmin=vmin, vmax=vmax, ylabel="example")
    im = _heatmap(bottom, rec, vmin=vmin, vmax=vmax, ylabel="example", columns=columns)
    top.set_title("original")
    bottom.set_title("reconstruction")
    top.set_xlabel("")
    fig.colorbar(im, ax=[top, bottom], label="value")
    return fig
