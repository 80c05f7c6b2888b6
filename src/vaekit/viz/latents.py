"""Figures of the latent space: a scatter of posterior means (PCA above two dims) and latent traversals."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from vaekit.errors import DataError, ShapeError
from vaekit.viz.arrays import _as_float_array, _to_tiles
from vaekit.viz.canvas import _new_figure, _save
from vaekit.viz.mosaic import _Grid, _mosaic, _render_mosaic

_MAX_CATEGORIES = 20


# --------------------------------------------------------------------------- latent scatter


def _pca_2d(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``means`` ``(N, K)`` on their first two principal components.

    Returns the ``(N, 2)`` coordinates and the two explained-variance fractions. Degenerate
    inputs (fewer than two points, or all points equal: a collapsed posterior) give zeros.
    """
    centred = means - means.mean(axis=0)
    if means.shape[0] < 2 or not np.any(centred):
        return np.zeros((means.shape[0], 2)), np.zeros(2)
    from sklearn.decomposition import PCA  # imported lazily: sklearn is slow to import

    pca = PCA(n_components=2, svd_solver="full")
    coords = pca.fit_transform(means)
    return coords, np.asarray(pca.explained_variance_ratio_, dtype=float)


def _categories(labels: np.ndarray) -> np.ndarray | None:
    """The sorted classes when ``labels`` look categorical, else ``None`` (continuous values)."""
    if labels.dtype.kind not in "biuf":
        return np.unique(labels.astype(str))
    finite = labels[np.isfinite(labels)] if labels.dtype.kind == "f" else labels
    classes = np.unique(finite)
    if labels.dtype.kind != "f" or np.all(classes == np.round(classes)):
        if classes.size <= _MAX_CATEGORIES:
            return classes
    return None


def _class_name(value: object) -> str:
    """Legend text of one class: ``3`` rather than ``3.0``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _scatter(fig: Figure, ax: Axes, x: np.ndarray, y: np.ndarray, labels: np.ndarray | None) -> None:
    """Scatter ``(x, y)`` coloured by ``labels``: a legend for classes, a colour bar otherwise."""
    size = float(np.clip(3000 / max(len(x), 1), 3, 30))
    style: dict[str, Any] = {"s": size, "alpha": 0.7, "linewidths": 0}
    if labels is None:
        ax.scatter(x, y, color="tab:blue", **style)
        return
    classes = _categories(labels)
    if classes is None:
        points = ax.scatter(x, y, c=labels.astype(float), cmap="viridis", **style)
        fig.colorbar(points, ax=ax, label="label")
        return
    cmap = colormaps["tab10" if classes.size <= 10 else "tab20"]
    keys = labels.astype(str) if labels.dtype.kind not in "biuf" else labels
    for i, cls in enumerate(classes):
        mask = keys == cls
        ax.scatter(x[mask], y[mask], color=cmap(i % cmap.N), label=_class_name(cls), **style)
    fig.legend(loc="outside right upper", title="label", fontsize="small", markerscale=max(1.0, 30 / size) ** 0.5)


def _check_means(means: ArrayLike, labels: ArrayLike | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate ``means`` ``(N, K)`` (finite, N >= 1) and ``labels`` ``(N,)``."""
    arr = np.asarray(means)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ShapeError(f"means must be (N, K) with N, K >= 1, got shape {np.shape(means)}")
    arr = _as_float_array(arr, "means")
    if not np.isfinite(arr).all():
        raise DataError(f"means contain {int((~np.isfinite(arr)).sum())} non-finite values")
    if labels is None:
        return arr, None
    lab = np.asarray(labels)
    if lab.ndim == 2 and lab.shape[1] == 1:  # a column vector of labels
        lab = lab[:, 0]
    if lab.shape != (arr.shape[0],):
        raise ShapeError(f"labels must have shape ({arr.shape[0]},) to match means {arr.shape}, got {np.shape(labels)}")
    return arr, lab


def plot_latent_scatter(
    means: np.ndarray,
    path: str | os.PathLike[str],
    *,
    labels: np.ndarray | None = None,
) -> Path:
    """Write a scatter plot of posterior means to the PNG ``path``.

    Args:
        means: ``(N, K)`` encoder means (a 1-D array is read as K = 1). K = 1: a histogram above a
            jittered strip plot; K = 2: the means themselves; K > 2: their projection on the
            first two principal components (``sklearn.decomposition.PCA``), with the explained
            variance in the axis labels, e.g. ``PC1 (43.2% var)``.
        path: output ``.png`` file.
        labels: optional ``(N,)`` labels. Strings, and integers with at most 20 distinct values,
            are classes (one colour each, with a legend); other numbers get a colour bar.
    """
    arr, lab = _check_means(means, labels)
    fig = _strip_figure(arr[:, 0], lab) if arr.shape[1] == 1 else _scatter_figure(arr, lab)
    return _save(fig, path)


def _scatter_figure(means: np.ndarray, labels: np.ndarray | None) -> Figure:
    """K >= 2: the first two latent dims (K = 2) or the first two principal components."""
    n, k = means.shape
    fig = _new_figure(7.5 if labels is not None else 6.5, 5.5)
    ax = fig.add_subplot()
    if k == 2:
        xy, names = means, ("$z_{0}$ (posterior mean)", "$z_{1}$ (posterior mean)")
        ax.set_title(f"posterior means ({n} examples)")
    else:
        xy, ratio = _pca_2d(means)
        names = (f"PC1 ({100 * ratio[0]:.1f}% var)", f"PC2 ({100 * ratio[1]:.1f}% var)")
        ax.set_title(f"posterior means, PCA of {k} latent dims ({n} examples)")
    _scatter(fig, ax, xy[:, 0], xy[:, 1], labels)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.grid(True, alpha=0.3)
    return fig


def _strip_figure(z: np.ndarray, labels: np.ndarray | None) -> Figure:
    """K = 1: histogram of the means above a strip plot (vertical jitter only)."""
    fig = _new_figure(7.5 if labels is not None else 6.5, 5.5)
    hist_ax, strip_ax = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    hist_ax.hist(z, bins=min(50, max(5, int(np.sqrt(z.size)))), color="tab:blue", alpha=0.8)
    hist_ax.set_ylabel("count")
    hist_ax.set_title(f"posterior means, 1 latent dim ({z.size} examples)")
    jitter = np.random.default_rng(0).uniform(-1.0, 1.0, size=z.size)
    _scatter(fig, strip_ax, z, jitter, labels)
    strip_ax.set_yticks([])
    strip_ax.set_ylim(-1.5, 1.5)
    strip_ax.set_xlabel("$z_{0}$ (posterior mean)")
    for ax in (hist_ax, strip_ax):
        ax.grid(True, axis="x", alpha=0.3)
    return fig


# --------------------------------------------------------------------------- traversals


def plot_latent_traversals(images: np.ndarray, path: str | os.PathLike[str], *, values: np.ndarray,
                           dims: Sequence[int] | None = None) -> Path:
    """Write latent traversals: row ``i`` decodes while latent ``z_i`` moves across ``values``.

    Args:
        images: ``(K_dims, n_steps, C, H, W)`` (or ``(K_dims, n_steps, H, W)``) decodings, values
            in ``[0, 1]``; all other latent coordinates fixed.
        path: output ``.png`` file.
        values: ``(n_steps,)`` the latent values of the columns (column labels).
        dims: the latent index of each row (default ``0, 1, ...``).

    Rows are labelled ``z_i`` for their latent index and columns by their value.
    """
    arr = _as_float_array(images, "images")
    vals = np.asarray(values, dtype=float).reshape(-1)
    if arr.ndim not in (4, 5) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ShapeError(f"images must be (K_dims, n_steps, C, H, W), got shape {arr.shape}")
    k, steps = arr.shape[:2]
    if vals.shape != (steps,):
        raise ShapeError(f"values must have shape ({steps},) to match images {arr.shape}, got {np.shape(values)}")
    dims = list(range(k)) if dims is None else [int(d) for d in dims]
    if len(dims) != k:
        raise ShapeError(f"dims must name one latent index per row ({k}), got {len(dims)}")
    tiles = _to_tiles(arr.reshape((k * steps, *arr.shape[2:])), "images")
    grid = _Grid(rows=k, cols=steps, tile_h=tiles.shape[1], tile_w=tiles.shape[2])
    fig = _render_mosaic(
        _mosaic(tiles, grid),
        grid,
        title="latent traversals (columns: value of the moved latent)",
        row_labels=[f"$z_{{{i}}}$" for i in dims],
        col_labels=[f"{v:.3g}" for v in vals],
    )
    return _save(fig, path)
