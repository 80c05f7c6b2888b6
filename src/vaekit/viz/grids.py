"""Image figures: a tiled grid of images (:func:`image_grid`) and originals above reconstructions.

Image-shaped input is drawn as a pixel-exact mosaic (:mod:`vaekit.viz.mosaic`); tabular vectors
``(N, D)`` without ``shape`` are drawn as heatmaps (:mod:`vaekit.viz.tables`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vaekit.errors import ShapeError
from vaekit.viz.arrays import _images_or_table
from vaekit.viz.canvas import _save
from vaekit.viz.mosaic import _Grid, _mosaic, _render_mosaic
from vaekit.viz.tables import _table_figure, _table_pair_figure

_MAX_PAIRS = 16


# --------------------------------------------------------------------------- image_grid


def image_grid(
    images: np.ndarray,
    path: str | os.PathLike[str],
    *,
    nrow: int | None = None,
    title: str | None = None,
    shape: Sequence[int] | None = None,
    col_labels: Sequence[str] | None = None,
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
        col_labels: a label above each column of an image grid (e.g. a conditional model's classes), or
            the names of a table's columns under its heatmap.

    Returns:
        ``Path(path)``.
    """
    data, is_image = _images_or_table(images, shape, "images")
    if not is_image:
        return _save(_table_figure(data, title, col_labels), path)
    n = data.shape[0]
    if nrow is not None and nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow}")
    cols = min(n, nrow) if nrow is not None else math.ceil(math.sqrt(n))
    grid = _Grid(rows=math.ceil(n / cols), cols=cols, tile_h=data.shape[1], tile_w=data.shape[2])
    labels = list(col_labels)[:cols] if col_labels is not None else None
    return _save(_render_mosaic(_mosaic(data, grid), grid, title=title, col_labels=labels), path)


# --------------------------------------------------------------------------- reconstructions


def plot_reconstructions(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    path: str | os.PathLike[str],
    *,
    shape: Sequence[int] | None = None,
    columns: Sequence[str] | None = None,
) -> Path:
    """Write originals (top row) above their reconstructions (bottom row), up to 16 pairs.

    Args:
        originals, reconstructions: arrays of the same shape, laid out as for :func:`image_grid`
            (images, or flat vectors with ``shape``, or tabular vectors drawn as two heatmaps on a
            common colour scale).
        path: output ``.png`` file.
        shape: ``(C, H, W)`` or ``(H, W)`` for flat vectors.
        columns: the names of a table's columns, under its heatmaps.

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
        return _save(_table_pair_figure(orig, rec, columns), path)
    n = orig.shape[0]
    grid = _Grid(rows=2, cols=n, tile_h=orig.shape[1], tile_w=orig.shape[2])
    mosaic = _mosaic(np.concatenate([orig, rec]), grid)
    return _save(_render_mosaic(mosaic, grid, row_labels=["original", "reconstruction"]), path)
