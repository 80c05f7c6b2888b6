"""``shapes``: a dSprites-like image set with known generative factors, drawn procedurally.

dSprites (Matthey et al. 2017) renders 2D sprites from five independent factors: shape (square,
ellipse, heart), scale (6 values in [0.5, 1]), orientation (40 values in [0, 2π]), x and y
position (32 values each in [0, 1]) on 64x64 binary images. ``shapes`` keeps those factors and
their ranges on a grid small enough for a CPU: 3 shapes × 4 scales × 8 orientations (0, π/4, ...,
7π/4) × 8 x × 8 y = 6,144 binary 32x32 images, every combination once (:data:`FACTOR_SIZES`).
The images are a pure function of the factors (no randomness): each pixel is on when at least half
of its 4x4 sub-pixel samples fall inside the shape, the shape's outline an implicit curve in its
own frame (square max(|u|, |v|) ≤ 1; ellipse u² + (v/0.5)² ≤ 1; heart (u² + v² − 1)³ ≤ u² v³),
rotated by the orientation, scaled by the scale and centred at the position. As in dSprites, a
square looks the same after a quarter turn and an ellipse after a half turn, so orientation is not
fully identifiable from the image.

:func:`factor_grid` lists the factor indices of every image (row i of the grid is image i) and
:func:`render` draws the images of any factor rows, which is what the disentanglement metrics
(:mod:`vaekit.inference.disentanglement`) sample from.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FACTOR_NAMES", "FACTOR_SIZES", "SHAPES", "IMAGE_SIZE", "factor_grid", "factor_values", "render"]

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 4, 8, 8, 8)
SHAPES = ("square", "ellipse", "heart")
IMAGE_SIZE = 32
_SUBSAMPLES = 4
#: The sprite's half-width at scale 1, and the band of centres, as fractions of the image width.
_HALF_WIDTH = 0.16
_MARGIN = 0.2


def factor_grid() -> np.ndarray:
    """Every combination of factor indices, (N, 5) int64 in C order (the last factor fastest)."""
    grids = np.meshgrid(*(np.arange(n) for n in FACTOR_SIZES), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


def factor_values(indices: np.ndarray) -> np.ndarray:
    """The factors' values (N, 5) for their indices: shape index; scale in [0.5, 1]; orientation in
    radians [0, 2π); x and y positions in [0, 1]."""
    idx = np.asarray(indices, dtype=np.int64)
    scale = np.linspace(0.5, 1.0, FACTOR_SIZES[1])[idx[:, 1]]
    angle = (2 * np.pi * np.arange(FACTOR_SIZES[2]) / FACTOR_SIZES[2])[idx[:, 2]]
    pos_x = np.linspace(0.0, 1.0, FACTOR_SIZES[3])[idx[:, 3]]
    pos_y = np.linspace(0.0, 1.0, FACTOR_SIZES[4])[idx[:, 4]]
    return np.stack([idx[:, 0].astype(float), scale, angle, pos_x, pos_y], axis=1)


_SHAPE_TESTS = (
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 1.0,                       # square
    lambda u, v: u ** 2 + (v / 0.5) ** 2 <= 1.0,                                 # ellipse
    lambda u, v: ((1.15 * u) ** 2 + (1.15 * v + 0.15) ** 2 - 1.0) ** 3           # heart: the curve spans about
    - (1.15 * u) ** 2 * (1.15 * v + 0.15) ** 3 <= 0.0,                           # [-1.14, 1.14] x [-1, 1.25]
)
#: The window around a sprite's centre that holds it (pixels; the largest reaches 0.16 * 32 * sqrt(2) < 8).
_WINDOW = 16


def render(indices: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """The images of the factor index rows ``indices`` (N, 5): uint8 (N, 1, size, size), values 0 or 1."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
    if idx.size and (idx.min() < 0 or np.any(idx >= np.asarray(FACTOR_SIZES))):
        raise ValueError(f"factor indices out of range; sizes are {FACTOR_SIZES}")
    values = factor_values(idx)
    n, s, w = len(idx), _SUBSAMPLES, max(_WINDOW, int(np.ceil(_HALF_WIDTH * size * 1.5)) * 2)
    centre = (_MARGIN + (1 - 2 * _MARGIN) * values[:, 3:5]) * size             # (N, 2) x, y in pixels
    origin = np.floor(centre).astype(np.int64) - w // 2                         # the window's top-left pixel
    offsets = (np.arange(w * s) + 0.5) / s                                      # sub-pixel centres in the window
    coverage = np.zeros((n, w, w), dtype=np.float32)
    for shape, inside in enumerate(_SHAPE_TESTS):
        rows = np.flatnonzero(idx[:, 0] == shape)
        for start in range(0, len(rows), 512):
            r = rows[start:start + 512]
            half = (_HALF_WIDTH * size * values[r, 1])[:, None, None]
            dx = (origin[r, 0, None, None] + offsets[None, None, :] - centre[r, 0, None, None]) / half
            dy = -(origin[r, 1, None, None] + offsets[None, :, None] - centre[r, 1, None, None]) / half   # v up
            cos, sin = np.cos(values[r, 2])[:, None, None], np.sin(values[r, 2])[:, None, None]
            hit = inside(cos * dx + sin * dy, -sin * dx + cos * dy)          # the frame rotated by -angle
            coverage[r] = hit.reshape(len(r), w, s, w, s).mean(axis=(2, 4))
    canvas = np.zeros((n, size + 2 * w, size + 2 * w), dtype=np.uint8)         # room for windows past the edge
    ys = origin[:, 1, None, None] + w + np.arange(w)[None, :, None]
    xs = origin[:, 0, None, None] + w + np.arange(w)[None, None, :]
    canvas[np.arange(n)[:, None, None], ys, xs] = coverage >= 0.5
    return canvas[:, None, w:w + size, w:w + size].copy()
