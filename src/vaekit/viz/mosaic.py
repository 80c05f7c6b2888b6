"""Pixel-exact image mosaics: the tile layout of a grid, and its rendering as a figure.

Each tile is enlarged by a whole factor s (nearest neighbour), never resampled, and a mosaic without
a title or labels is nothing but the mosaic. The factor is the larger of two: the one that brings the
mosaic's long side near ``_TARGET_PX`` (at most ``_MAX_SCALE``), and the one that draws each tile at
least ``_MIN_TILE_PX`` pixels on its short side (so that 8x8 digits are 48 px, not 8 px, across),
unless that would take the mosaic past ``_MAX_PX`` on its long side:

    s = max(min(_MAX_SCALE, ceil(_TARGET_PX / long)), min(ceil(_MIN_TILE_PX / tile_short), floor(_MAX_PX / long)))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vaekit.viz.canvas import _DPI, _new_figure

_PAD = 2  # mosaic pixels between tiles
_PAD_VALUE = 0.5  # mid-grey, visible against both black and white tiles
_TARGET_PX = 600  # an enlarged mosaic aims at about this many pixels on its long side
_MAX_SCALE = 8
_MIN_TILE_PX = 48  # a tile is drawn at least this many pixels on its short side ...
_MAX_PX = 2400  # ... unless the mosaic's long side would exceed this


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
    """Whole enlargement factor s (module docstring): the mosaic's long side near ``_TARGET_PX``, and
    each tile at least ``_MIN_TILE_PX`` pixels on its short side where the result stays within ``_MAX_PX``."""
    long_side = max(grid.height, grid.width)
    to_target = min(_MAX_SCALE, math.ceil(_TARGET_PX / long_side))
    to_min_tile = min(math.ceil(_MIN_TILE_PX / min(grid.tile_h, grid.tile_w)), _MAX_PX // long_side)
    return int(max(1, to_target, to_min_tile))


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

    def put(x_px: float, y_px: float, text: str, **kw: Any) -> None:
        fig.text(x_px / width, 1 - y_px / height, text, va="center", **kw)

    if title:
        put(width / 2, title_h / 2, title, ha="center", fontsize=12)
    for c, label in enumerate(col_labels or ()):
        put(x0 + grid.col_center(c) * s, title_h + 11, label, ha="center", fontsize=8)
    for r, label in enumerate(row_labels or ()):
        put(left - 6, top + grid.row_center(r) * s, label, ha="right", fontsize=10)
    return fig
