"""Interpolations between two examples: each row begins and ends with the two real examples.

Row p shows the original x_a, then E[x|z_t] along z_t = (1 - t) z_a + t z_b for the given values of
t, then the original x_b, so that a reader sees what the decoded path starts from and arrives at (and
how far E[x|z_a] is from x_a). The originals are set apart from the path by one blank tile column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vaekit.errors import ShapeError
from vaekit.viz.arrays import _as_float_array, _to_tiles
from vaekit.viz.canvas import _save
from vaekit.viz.mosaic import _PAD_VALUE, _Grid, _mosaic, _render_mosaic

__all__ = ["plot_interpolations"]


def _check(images: np.ndarray, starts: np.ndarray, ends: np.ndarray, values: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray]:
    """The path as tiles (P, S, H, W, 3) and the column values (S,), after checking the shapes."""
    if images.ndim not in (4, 5) or images.shape[0] == 0 or images.shape[1] == 0:
        raise ShapeError(f"images must be (P, S, C, H, W) or (P, S, H, W), got shape {images.shape}")
    pairs, steps, item = images.shape[0], images.shape[1], images.shape[2:]
    for name, ends_ in (("starts", starts), ("ends", ends)):
        if ends_.shape != (pairs, *item):
            raise ShapeError(f"{name} must have shape {(pairs, *item)} to match images {images.shape}, "
                             f"got {ends_.shape}")
    t = np.linspace(0.0, 1.0, steps) if values is None else np.asarray(values, dtype=float).reshape(-1)
    if t.shape != (steps,):
        raise ShapeError(f"values must have shape ({steps},) to match images {images.shape}, got {t.shape}")
    tiles = _to_tiles(images.reshape((pairs * steps, *item)), "images")
    return tiles.reshape((pairs, steps, *tiles.shape[1:])), t


def plot_interpolations(images: np.ndarray, path: str | os.PathLike[str], *, starts: np.ndarray,
                        ends: np.ndarray, values: Sequence[float] | np.ndarray | None = None) -> Path:
    """Write interpolations with their endpoint originals to the PNG ``path``.

    Args:
        images: ``(P, S, C, H, W)`` or ``(P, S, H, W)``: row p's S decodings E[x|z_t], values in [0, 1].
        path: output ``.png`` file.
        starts, ends: ``(P, C, H, W)`` (or ``(P, H, W)``): the originals x_a and x_b of each row.
        values: ``(S,)`` the t of each column (column labels); default ``linspace(0, 1, S)``.

    Each row reads: x_a, a blank column, the S decodings, a blank column, x_b.
    """
    a, b = _as_float_array(starts, "starts"), _as_float_array(ends, "ends")
    path_tiles, t = _check(_as_float_array(images, "images"), a, b, None if values is None else np.asarray(values))
    pairs, steps = path_tiles.shape[:2]
    first, last = _to_tiles(a, "starts"), _to_tiles(b, "ends")                                # (P, H, W, 3)
    blank = np.full((pairs, 1, *path_tiles.shape[2:]), _PAD_VALUE)
    rows = np.concatenate([first[:, None], blank, path_tiles, blank, last[:, None]], axis=1)   # (P, S + 4, H, W, 3)
    grid = _Grid(rows=pairs, cols=steps + 4, tile_h=rows.shape[2], tile_w=rows.shape[3])
    labels = ["$x_a$", "", *(f"{v:.2g}" for v in t), "", "$x_b$"]
    fig = _render_mosaic(_mosaic(rows.reshape((-1, *rows.shape[2:])), grid), grid, col_labels=labels)
    return _save(fig, path)
