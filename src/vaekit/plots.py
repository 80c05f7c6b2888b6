"""Figures of a trained VAE run, drawn from plain numpy arrays and written as PNG files.

Every public function takes arrays (or lists of dicts), draws one figure with matplotlib's object
API (a :class:`~matplotlib.figure.Figure` on a :class:`FigureCanvasAgg`; ``pyplot`` and global
``rcParams`` are never touched, so the module works headless and from several threads), writes one
RGB PNG atomically (a temporary file in the same folder, then :func:`os.replace`) and returns its
:class:`~pathlib.Path`. Parent folders are created. The path must end in ``.png``.

Image conventions: arrays are channels-first, ``(N, C, H, W)`` with ``C`` = 1 (grayscale) or 3
(RGB), or ``(N, H, W)`` (grayscale); float values are meant to lie in ``[0, 1]`` and are clipped
to it (NaN is drawn black); ``uint8`` arrays are read as ``0..255``. Flat vectors ``(N, D)`` are
reshaped with ``shape=(C, H, W)`` (or ``(H, W)``); without ``shape`` they are treated as tabular
data and drawn as a heatmap (rows = examples, columns = features, in the data's own range).

Image mosaics are drawn pixel-exact: each tile is enlarged by a whole factor (nearest neighbour),
never resampled, and a grid without a title is nothing but the mosaic.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from vaekit.atomic import atomic_write_bytes
from vaekit.errors import DataError, ShapeError

__all__ = [
    "image_grid",
    "plot_latent_scatter",
    "plot_latent_traversals",
    "plot_reconstructions",
    "plot_training_curves",
]

_DPI = 100
_PAD = 2  # mosaic pixels between tiles
_PAD_VALUE = 0.5  # mid-grey, visible against both black and white tiles
_TARGET_PX = 600  # an enlarged mosaic aims at about this many pixels on its long side
_MAX_SCALE = 8
_MAX_PAIRS = 16
_MAX_CATEGORIES = 20
_UNITS = "nats per example"


# --------------------------------------------------------------------------- writing


def _check_png_path(path: str | os.PathLike[str]) -> Path:
    """The path as a :class:`Path`; a ``ValueError`` unless it ends in ``.png``."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"figure path must end in .png, got {str(out)!r}")
    return out


def _new_figure(width_in: float, height_in: float, *, constrained: bool = True) -> Figure:
    """A white figure attached to its own Agg canvas (no pyplot, no global state)."""
    fig = Figure(
        figsize=(width_in, height_in),
        dpi=_DPI,
        facecolor="white",
        layout="constrained" if constrained else None,
    )
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` and write it as an RGB PNG at ``path`` (atomically); return the path."""
    out = _check_png_path(path)
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    return out


# --------------------------------------------------------------------------- array checks


def _as_float_array(values: object, name: str) -> np.ndarray:
    """``values`` as a float64 array; ``uint8`` data is rescaled from ``0..255`` to ``[0, 1]``."""
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _reshape_flat(arr: np.ndarray, shape: Sequence[int], name: str) -> np.ndarray:
    """Reshape ``(N, D)`` (or any ``(N, ...)``) vectors to ``(N, *shape)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
        raise ShapeError(f"shape must be (C, H, W) or (H, W) with positive sizes, got {shape}")
    if arr.ndim < 2 or math.prod(arr.shape[1:]) != math.prod(shape):
        raise ShapeError(
            f"{name} of shape {arr.shape} cannot be reshaped to (N, *{shape}): "
            f"{math.prod(arr.shape[1:])} values per example, shape needs {math.prod(shape)}"
        )
    return arr.reshape((arr.shape[0], *shape))


def _to_tiles(arr: np.ndarray, name: str) -> np.ndarray:
    """Images ``(N, C, H, W)`` or ``(N, H, W)`` -> RGB tiles ``(N, H, W, 3)`` clipped to [0, 1]."""
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ShapeError(f"{name} must be (N, C, H, W), (N, H, W) or (N, D) with shape=, got {arr.shape}")
    if arr.shape[1] not in (1, 3):
        hint = " (channels-last? expected channels-first)" if arr.shape[-1] in (1, 3) else ""
        raise ShapeError(f"{name} must have 1 or 3 channels in axis 1, got shape {arr.shape}{hint}")
    if arr.shape[0] == 0 or arr.shape[2] == 0 or arr.shape[3] == 0:
        raise ShapeError(f"{name} is empty: shape {arr.shape}")
    tiles = np.nan_to_num(np.clip(arr, 0.0, 1.0), nan=0.0)
    tiles = np.moveaxis(tiles, 1, -1)
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    return tiles


def _images_or_table(images: object, shape: Sequence[int] | None, name: str) -> tuple[np.ndarray, bool]:
    """``(tiles, True)`` for image-shaped input, ``(table (N, D), False)`` for tabular vectors."""
    arr = _as_float_array(images, name)
    if shape is not None:
        return _to_tiles(_reshape_flat(arr, shape, name), name), True
    if arr.ndim == 2:
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ShapeError(f"{name} is empty: shape {arr.shape}")
        return arr, False
    return _to_tiles(arr, name), True


# --------------------------------------------------------------------------- mosaics


@dataclass(frozen=True)
class _Grid:
    """Geometry of a mosaic of ``rows x cols`` tiles of ``tile_h x tile_w`` pixels."""

    rows: int
    cols: int
    tile_h: int
    tile_w: int
    pad: int = _PAD

    @property
    def height(self) -> int:
        """Mosaic height in (unscaled) pixels."""
        return self.rows * (self.tile_h + self.pad) + self.pad

    @property
    def width(self) -> int:
        """Mosaic width in (unscaled) pixels."""
        return self.cols * (self.tile_w + self.pad) + self.pad

    def row_center(self, r: int) -> float:
        """Vertical centre of tile row ``r`` in mosaic pixels from the top."""
        return self.pad + r * (self.tile_h + self.pad) + self.tile_h / 2

    def col_center(self, c: int) -> float:
        """Horizontal centre of tile column ``c`` in mosaic pixels from the left."""
        return self.pad + c * (self.tile_w + self.pad) + self.tile_w / 2


def _mosaic(tiles: np.ndarray, grid: _Grid) -> np.ndarray:
    """Place ``tiles`` ``(N, H, W, 3)`` row-major on a grey ``grid``; return ``(height, width, 3)``."""
    out = np.full((grid.height, grid.width, 3), _PAD_VALUE)
    for i, tile in enumerate(tiles[: grid.rows * grid.cols]):
        r, c = divmod(i, grid.cols)
        y = grid.pad + r * (grid.tile_h + grid.pad)
        x = grid.pad + c * (grid.tile_w + grid.pad)
        out[y : y + grid.tile_h, x : x + grid.tile_w] = tile
    return out


def _scale_for(grid: _Grid) -> int:
    """Whole enlargement factor that brings the mosaic's long side near ``_TARGET_PX``."""
    long_side = max(grid.height, grid.width)
    return int(min(_MAX_SCALE, max(1, math.ceil(_TARGET_PX / long_side))))


def _text_px(text: str, fontsize: float) -> float:
    """Rough rendered width of ``text`` in pixels (generous, for margins only)."""
    return len(text) * fontsize * 0.62 * _DPI / 72


def _render_mosaic(
    mosaic: np.ndarray,
    grid: _Grid,
    *,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> Figure:
    """A figure showing ``mosaic`` pixel-exact, with optional title, row and column labels."""
    s = _scale_for(grid)
    img = np.repeat(np.repeat(mosaic, s, axis=0), s, axis=1)
    img_h, img_w = img.shape[:2]
    left = int(max(_text_px(t, 10) for t in row_labels)) + 12 if row_labels else 0
    title_h = 30 if title else 0
    top = title_h + (22 if col_labels else 0)
    width = max(left + img_w, int(_text_px(title, 12)) + 20 if title else 0)
    height = top + img_h
    x0 = left + (width - left - img_w) // 2
    # +0.5 px so that the truncation of inches * dpi in Agg yields exactly width x height pixels
    fig = _new_figure((width + 0.5) / _DPI, (height + 0.5) / _DPI, constrained=False)
    fig.figimage(img, xo=x0, yo=0, origin="upper")

    def put(x_px: float, y_px: float, text: str, **kw: object) -> None:
        fig.text(x_px / width, 1 - y_px / height, text, va="center", **kw)

    if title:
        put(width / 2, title_h / 2, title, ha="center", fontsize=12)
    for c, label in enumerate(col_labels or ()):
        put(x0 + grid.col_center(c) * s, title_h + 11, label, ha="center", fontsize=8)
    for r, label in enumerate(row_labels or ()):
        put(left - 6, top + grid.row_center(r) * s, label, ha="right", fontsize=10)
    return fig


def _heatmap(ax: Axes, table: np.ndarray, *, vmin: float, vmax: float, ylabel: str) -> object:
    """Draw ``table`` (rows = examples, columns = features) on ``ax``; return the image artist."""
    im = ax.imshow(table, aspect="auto", interpolation="nearest", cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xlabel("feature")
    ax.set_ylabel(ylabel)
    return im


def _finite_range(*tables: np.ndarray) -> tuple[float, float]:
    """Common (vmin, vmax) over the finite entries of ``tables``; (0, 1) when there are none."""
    values = np.concatenate([t[np.isfinite(t)].ravel() for t in tables])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


# --------------------------------------------------------------------------- image_grid


def image_grid(
    images: np.ndarray,
    path: str | os.PathLike[str],
    *,
    nrow: int | None = None,
    title: str | None = None,
    shape: Sequence[int] | None = None,
) -> Path:
    """Write a tiled grid of images (or a heatmap of tabular vectors) to the PNG ``path``.

    Args:
        images: ``(N, C, H, W)`` with C in {1, 3}, ``(N, H, W)``, or ``(N, D)`` flat vectors.
            Values are clipped to ``[0, 1]``.
        path: output ``.png`` file.
        nrow: images per row of the grid (as in ``torchvision.utils.make_grid``); default
            ``ceil(sqrt(N))``. Tiles fill the grid row by row.
        title: optional title above the grid.
        shape: ``(C, H, W)`` or ``(H, W)`` to reshape flat ``(N, D)`` vectors into images. Flat
            vectors without ``shape`` are tabular data and are drawn as a heatmap (rows =
            examples, columns = features, colours in the data's own range).

    Returns:
        ``Path(path)``.
    """
    data, is_image = _images_or_table(images, shape, "images")
    if not is_image:
        return _save(_table_figure(data, title), path)
    n = data.shape[0]
    if nrow is not None and nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow}")
    cols = min(n, nrow) if nrow is not None else math.ceil(math.sqrt(n))
    grid = _Grid(rows=math.ceil(n / cols), cols=cols, tile_h=data.shape[1], tile_w=data.shape[2])
    return _save(_render_mosaic(_mosaic(data, grid), grid, title=title), path)


def _table_figure(table: np.ndarray, title: str | None) -> Figure:
    """Heatmap figure of tabular vectors ``(N, D)`` with a colour bar."""
    fig = _new_figure(7.0, min(8.0, 2.5 + 0.12 * table.shape[0]))
    ax = fig.add_subplot()
    vmin, vmax = _finite_range(table)
    im = _heatmap(ax, table, vmin=vmin, vmax=vmax, ylabel="example")
    fig.colorbar(im, ax=ax, label="value")
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- training curves


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


def _plot_series(ax: Axes, x: np.ndarray, y: np.ndarray, label: str, **kw: object) -> bool:
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


# --------------------------------------------------------------------------- reconstructions


def plot_reconstructions(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    path: str | os.PathLike[str],
    *,
    shape: Sequence[int] | None = None,
) -> Path:
    """Write originals (top row) above their reconstructions (bottom row), up to 16 pairs.

    Args:
        originals, reconstructions: arrays of the same shape, laid out as for :func:`image_grid`
            (images, or flat vectors with ``shape``, or tabular vectors drawn as two heatmaps on a
            common colour scale).
        path: output ``.png`` file.
        shape: ``(C, H, W)`` or ``(H, W)`` for flat vectors.

    Raises:
        ShapeError: (a ``ValueError``) when the two arrays' shapes differ; the message names both.
    """
    orig_shape, rec_shape = np.shape(originals), np.shape(reconstructions)
    if orig_shape != rec_shape:
        raise ShapeError(
            f"originals and reconstructions must have the same shape, got originals {orig_shape} "
            f"and reconstructions {rec_shape}"
        )
    orig, is_image = _images_or_table(np.asarray(originals)[:_MAX_PAIRS], shape, "originals")
    rec, _ = _images_or_table(np.asarray(reconstructions)[:_MAX_PAIRS], shape, "reconstructions")
    if not is_image:
        return _save(_table_pair_figure(orig, rec), path)
    n = orig.shape[0]
    grid = _Grid(rows=2, cols=n, tile_h=orig.shape[1], tile_w=orig.shape[2])
    mosaic = _mosaic(np.concatenate([orig, rec]), grid)
    return _save(_render_mosaic(mosaic, grid, row_labels=["original", "reconstruction"]), path)


def _table_pair_figure(orig: np.ndarray, rec: np.ndarray) -> Figure:
    """Two stacked heatmaps (originals, reconstructions) sharing one colour scale."""
    fig = _new_figure(7.0, min(9.0, 3.5 + 0.2 * orig.shape[0]))
    top, bottom = fig.subplots(2, 1, sharex=True)
    vmin, vmax = _finite_range(orig, rec)
    _heatmap(top, orig, vmin=vmin, vmax=vmax, ylabel="example")
    im = _heatmap(bottom, rec, vmin=vmin, vmax=vmax, ylabel="example")
    top.set_title("original")
    bottom.set_title("reconstruction")
    top.set_xlabel("")
    fig.colorbar(im, ax=[top, bottom], label="value")
    return fig


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
    style = {"s": size, "alpha": 0.7, "linewidths": 0}
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


def _check_means(means: object, labels: object | None) -> tuple[np.ndarray, np.ndarray | None]:
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
