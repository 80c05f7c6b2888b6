"""Validation of the arrays the readers return, their interpretation as examples, and error-message helpers.

Array shapes: 2-D ``(N, D)`` is tabular (float32); 3-D ``(N, H, W)`` is a grayscale image batch
``(1, H, W)``; 4-D is ``(N, C, H, W)``, or ``(N, H, W, C)`` when axis 1 is not 1, 3 or 4 and the
last axis is (then it is transposed to channels-first). Images stored as uint8 (or integers in
0..255) have 256 levels; booleans become uint8 with 2 levels; float images keep ``levels=None``.

Malformed input raises :class:`~vaekit.errors.DataError` with a one-line message that starts with
the source's name (:func:`_name`, :func:`_one_line`).
"""

from __future__ import annotations

import os

import numpy as np

from vaekit.errors import DataError


def _one_line(exc: BaseException) -> str:
    """Return an exception's message squashed onto one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _name(path: str | os.PathLike[str]) -> str:
    """Return the string used to name ``path`` in error messages."""
    return os.fspath(path)


# --------------------------------------------------------------------------------------------
# validation and interpretation


def check_finite(x: np.ndarray, source: str) -> None:
    """Raise :class:`DataError` naming ``source`` and counting the values of ``x`` that are NaN/Inf."""
    if x.dtype.kind in "fc":
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(
                f"{source}: {bad} non-finite value{'s' if bad != 1 else ''} (NaN or Inf) "
                f"out of {x.size}; remove or impute them"
            )


def _check_numeric(x: np.ndarray, source: str) -> None:
    """Raise :class:`DataError` unless ``x`` holds booleans, integers or real floats."""
    if x.dtype.kind not in "buif":
        raise DataError(f"{source}: array of dtype {x.dtype} is not numeric")


def _to_float32(x: np.ndarray) -> np.ndarray:
    """Cast to float32 without a warning; values beyond float32's range become Inf (checked later)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(np.float32)


def interpret_array(x: np.ndarray, source: str) -> tuple[np.ndarray, str, tuple[int, ...], int | None]:
    """Turn a raw ``(N, ...)`` array into examples: return ``(array, kind, shape, levels)``.

    See the module docstring for the shapes and dtypes accepted. The returned array is uint8
    (images with discrete levels) or float32 (everything else), and always finite.
    """
    x = np.asarray(x)
    _check_numeric(x, source)
    if x.ndim < 2:
        raise DataError(
            f"{source}: array of shape {x.shape} has {x.ndim} dimension(s), expected (N, D), "
            "(N, H, W) or (N, C, H, W); reshape 1-D data to (N, 1)"
        )
    if x.ndim > 4:
        raise DataError(f"{source}: array of shape {x.shape} has more than 4 dimensions")
    if x.shape[0] == 0:
        raise DataError(f"{source}: no examples (array of shape {x.shape})")
    if x.size == 0:
        raise DataError(f"{source}: examples are empty (array of shape {x.shape})")
    check_finite(x, source)

    if x.ndim == 2:
        out = _to_float32(x)
        check_finite(out, f"{source} (after conversion to float32)")
        return out, "tabular", (int(x.shape[1]),), None

    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = np.transpose(x, (0, 3, 1, 2))
    shape = tuple(int(s) for s in x.shape[1:])

    if x.dtype.kind == "b":
        return np.ascontiguousarray(x, dtype=np.uint8), "image", shape, 2
    if x.dtype.kind in "ui":
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{source}: integer image values must lie in 0..255, found {lo}..{hi}; "
                "store them as floats in [0, 1] instead"
            )
        return np.ascontiguousarray(x, dtype=np.uint8), "image", shape, 256
    out = np.ascontiguousarray(_to_float32(x))
    check_finite(out, f"{source} (after conversion to float32)")
    return out, "image", shape, None


def as_labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    """Validate integer class labels for ``n`` examples and return them as int64 of shape (n,)."""
    y = np.asarray(y)
    if y.dtype.kind not in "buif":
        raise DataError(f"{source}: labels of dtype {y.dtype} are not numeric")
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{source}: labels have shape {y.shape}, expected ({n},)")
    if y.dtype.kind == "f":
        check_finite(y, f"{source} labels")
        if not np.all(y == np.round(y)):
            raise DataError(f"{source}: labels must be integers")
    return y.astype(np.int64)
