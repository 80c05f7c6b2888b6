"""Checks and conversions of the arrays the plots accept: numeric input, reshaping, RGB tiles.

Image conventions: arrays are channels-first, ``(N, C, H, W)`` with ``C`` = 1 (grayscale) or 3
(RGB), or ``(N, H, W)`` (grayscale); float values are meant to lie in ``[0, 1]`` and are clipped
to it (NaN is drawn black); ``uint8`` arrays are read as ``0..255``. Flat vectors ``(N, D)`` are
reshaped with ``shape=(C, H, W)`` (or ``(H, W)``); without ``shape`` they are treated as tabular
data (see :mod:`vaekit.viz.tables`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vaekit.errors import DataError, ShapeError


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
