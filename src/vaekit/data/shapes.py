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


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether (u, v), in the sprite's own frame (unit half-width, v up), is inside ``shape``."""
    square = np.maximum(np.abs(u), np.abs(v)) <= 1.0
    ellipse = u ** 2 + (v / 0.5) ** 2 <= 1.0
    hu, hv = u * 1.15, v * 1.15 + 0.15                # the heart's curve spans about [-1.14, 1.14] x [-1, 1.25]
    heart = (hu ** 2 + hv ** 2 - 1.0) ** 3 - hu ** 2 * hv ** 3 <= 0.0
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))


def render(indices: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """The images of the factor index rows ``indices`` (N, 5): uint8 (N, 1, size, size), values 0 or 1."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
    if idx.size and (idx.min() < 0 or np.any(idx >= np.asarray(FACTOR_SIZES))):
        raise ValueError(f"factor indices out of range; sizes are {FACTOR_SIZES}")
    values = factor_values(idx)
    n, s = len(idx), _SUBSAMPLES
    grid = (np.arange(size * s) + 0.5) / (size * s)                   # sub-pixel centres in [0, 1]
    px, py = np.meshgrid(grid, grid, indexing="xy")                   # (size*s, size*s); py grows downwards
    centre_x = _MARGIN + (1 - 2 * _MARGIN) * values[:, 3]
    centre_y = _MARGIN + (1 - 2 * _MARGIN) * values[:, 4]
    out = np.empty((n, 1, size, size), dtype=np.uint8)
    for start in range(0, n, 256):                                    # (256, size*s, size*s) at a time
        sl = slice(start, start + 256)
        half = (_HALF_WIDTH * values[sl, 1])[:, None, None]
        dx = (px[None] - centre_x[sl, None, None]) / half
        dy = -(py[None] - centre_y[sl, None, None]) / half            # v up
        cos, sin = np.cos(values[sl, 2])[:, None, None], np.sin(values[sl, 2])[:, None, None]
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy              # rotate the frame by -angle
        hit = _inside(idx[sl, 0][:, None, None], u, v).astype(np.float32)
        coverage = hit.reshape(-1, size, s, size, s).mean(axis=(2, 4))
        out[sl, 0] = (coverage >= 0.5).astype(np.uint8)
    return out
