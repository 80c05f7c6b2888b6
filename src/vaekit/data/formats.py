"""Readers for the file formats :func:`vaekit.data.load_dataset` accepts, and array validation.

Every reader returns ``(x, labels)`` with ``x`` a numeric array of shape ``(N, ...)`` and
``labels`` an int64 array of shape ``(N,)`` or ``None``; every malformed input raises
:class:`~vaekit.errors.DataError` with a one-line message that starts with the file's name.

What is accepted (and how :func:`interpret_array` turns it into examples):

* ``.npy``: one numeric array (no pickled objects).
* ``.npz``: the data under the key ``x``, ``data`` or ``arr_0`` (first found); optional integer
  labels under ``y`` or ``labels``.
* ``.csv``: comma-separated numeric cells; the first row is a header when one of its cells is not a
  number; blank lines are skipped; an optional label column (by 0-based index or header name).
* IDX (``.idx``, ``*-ubyte``, ``*.idx3-ubyte`` ..., and any ``.gz`` of those): the format of the
  MNIST distribution, big-endian, dtype codes 0x08 (uint8), 0x09 (int8), 0x0B (int16),
  0x0C (int32), 0x0D (float32), 0x0E (float64).
* a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``; not recursive; sorted by name):
  grayscale (mode ``L``, or ``1`` which becomes ``L``) gives C=1, ``RGB`` (or palette ``P``, which
  is expanded to ``RGB``) gives C=3; other modes (e.g. ``RGBA``, 16-bit) are refused.

Array shapes: 2-D ``(N, D)`` is tabular (float32); 3-D ``(N, H, W)`` is a grayscale image batch
``(1, H, W)``; 4-D is ``(N, C, H, W)``, or ``(N, H, W, C)`` when axis 1 is not 1, 3 or 4 and the
last axis is (then it is transposed to channels-first). Images stored as uint8 (or integers in
0..255) have 256 levels; booleans become uint8 with 2 levels; float images keep ``levels=None``.
"""

from __future__ import annotations

import csv
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from vaekit.errors import ConfigError, DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "as_labels",
    "check_finite",
    "interpret_array",
    "is_idx_path",
    "parse_idx",
    "read_csv",
    "read_idx",
    "read_image_folder",
    "read_npy",
    "read_npz",
    "write_idx",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

# IDX dtype code -> big-endian numpy dtype
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_IDX_CODES = {f"{np.dtype(v).kind}{np.dtype(v).itemsize}": k for k, v in _IDX_DTYPES.items()}

_NPY_MAGIC = b"\x93NUMPY"
_NPZ_DATA_KEYS = ("x", "data", "arr_0")
_NPZ_LABEL_KEYS = ("y", "labels")


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


# --------------------------------------------------------------------------------------------
# IDX


def is_idx_path(path: Path) -> bool:
    """Return whether ``path``'s name looks like an IDX file (``.idx``, ``-ubyte``, or ``.gz``)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return True
    return name.endswith(".idx") or name.endswith("ubyte") or ".idx" in name


def _read_maybe_gzip(path: Path) -> bytes:
    """Read a file's bytes, decompressing gzip (by name or magic bytes); DataError if corrupt."""
    source = _name(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{source}: cannot read file ({_one_line(exc)})") from exc
    if path.name.lower().endswith(".gz") or raw[:2] == b"\x1f\x8b":
        if not raw:
            raise DataError(f"{source}: empty file")
        try:
            return gzip.decompress(raw)
        except EOFError as exc:
            raise DataError(f"{source}: truncated gzip data ({_one_line(exc)})") from exc
        except (OSError, zlib.error) as exc:
            raise DataError(f"{source}: corrupt gzip data ({_one_line(exc)})") from exc
    return raw


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse the bytes of an IDX file into an array (native byte order); DataError if malformed."""
    if len(data) == 0:
        raise DataError(f"{source}: empty file")
    if len(data) < 4:
        raise DataError(f"{source}: file of {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()} (must start with two zero bytes)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{source}: unknown IDX dtype code 0x{code:02x} in the magic number")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{source}: file of {len(data)} bytes is too short for an IDX header with {ndim} dimensions"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{source}: IDX dimensions {dims} of {dtype.name} need {expected} bytes, "
            f"file has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> tuple[np.ndarray, None]:
    """Read an IDX file, raw or gzip-compressed; return ``(array, None)``."""
    path = Path(path)
    return parse_idx(_read_maybe_gzip(path), _name(path)), None


def write_idx(path: str | os.PathLike[str], x: np.ndarray) -> None:
    """Write ``x`` as a new uncompressed IDX file (refuses to overwrite); for tests and tools."""
    x = np.asarray(x)
    code = _IDX_CODES.get(f"{x.dtype.kind}{x.dtype.itemsize}")
    if code is None or x.ndim == 0 or x.ndim > 255:
        raise ConfigError(f"write_idx: cannot store an array of dtype {x.dtype} and shape {x.shape}")
    header = bytes([0, 0, code, x.ndim]) + np.asarray(x.shape, dtype=">u4").tobytes()
    with open(path, "xb") as fh:
        fh.write(header + np.ascontiguousarray(x, dtype=_IDX_DTYPES[code]).tobytes())


# --------------------------------------------------------------------------------------------
# numpy files


def read_npy(path: str | os.PathLike[str]) -> tuple[np.ndarray, None]:
    """Read a ``.npy`` file (no pickles); return ``(array, None)``."""
    source = _name(path)
    if os.path.getsize(path) == 0:
        raise DataError(f"{source}: empty file")
    try:
        with open(path, "rb") as fh:  # np.load(path) leaks the handle on some errors
            # Without the magic string np.load falls back to "pickled data" and suggests allow_pickle,
            # which is wrong (the file is just not .npy) and not an option here.
            if fh.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise DataError(f"{source}: not a readable .npy file (it does not start with the .npy magic "
                                "string; is it another format?)")
            fh.seek(0)
            x = np.load(fh, allow_pickle=False)
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array: a pickle, never loaded
            raise DataError(f"{source}: not a readable .npy file (it holds Python objects, which are never "
                            "unpickled; save a numeric array)") from exc
        raise DataError(f"{source}: not a readable .npy file ({_one_line(exc)})") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{source}: not a readable .npy file ({_one_line(exc)})") from exc
    if not isinstance(x, np.ndarray):
        raise DataError(f"{source}: not a .npy array file")
    return x, None


def read_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a ``.npz`` file: data under ``x``/``data``/``arr_0``, labels under ``y``/``labels``."""
    source = _name(path)
    if os.path.getsize(path) == 0:
        raise DataError(f"{source}: empty file")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as archive:
            keys = list(archive.files)
            data_key = next((k for k in _NPZ_DATA_KEYS if k in keys), None)
            if data_key is None:
                raise DataError(
                    f"{source}: no data array; expected one of the keys "
                    f"{', '.join(_NPZ_DATA_KEYS)}, found {', '.join(keys) or 'none'}"
                )
            x = archive[data_key]
            label_key = next((k for k in _NPZ_LABEL_KEYS if k in keys), None)
            y = archive[label_key] if label_key is not None else None
    except DataError:
        raise
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise DataError(f"{source}: not a readable .npz file ({_one_line(exc)})") from exc
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise DataError(f"{source}: not a readable .npz file ({_one_line(exc)})") from exc
    if y is not None:
        y = as_labels(y, x.shape[0] if x.ndim else 0, source)
    return x, y


# --------------------------------------------------------------------------------------------
# CSV


def _parse_float(cell: str) -> float | None:
    """Parse one CSV cell as a float, or return None when it is not a number."""
    try:
        return float(cell)
    except ValueError:
        return None


def read_csv(
    path: str | os.PathLike[str], label_column: int | str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a numeric CSV file; return ``(float64 array (N, D), int64 labels or None)``.

    ``label_column`` is a 0-based column index (an int, or a string of digits as given on a
    command line) or a header name; that column is removed from the features and must hold
    integers. Rows in error messages are numbered by their line in the file (from 1).
    """
    source = _name(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [(i, row) for i, row in enumerate(csv.reader(fh), start=1) if row]
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not a UTF-8 text file ({_one_line(exc)})") from exc
    except csv.Error as exc:
        raise DataError(f"{source}: malformed CSV ({_one_line(exc)})") from exc
    if not rows:
        raise DataError(f"{source}: empty file")

    header: list[str] | None = None
    if any(_parse_float(c) is None for c in rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise DataError(f"{source}: no data rows (only a header)")
    ncols = len(header) if header is not None else len(rows[0][1])

    label_index: int | None = None
    if label_column is not None:
        if isinstance(label_column, str) and not label_column.lstrip("-").isdigit():
            if header is None or label_column not in header:
                raise ConfigError(
                    f"label_column: {source} has no column named {label_column!r}"
                    + (f" (columns: {', '.join(header)})" if header else " (no header row)")
                )
            label_index = header.index(label_column)
        else:
            label_index = int(label_column)
            if not -ncols <= label_index < ncols:
                raise ConfigError(
                    f"label_column: index {label_index} is out of range for {source} with {ncols} columns"
                )
            label_index %= ncols
        if ncols < 2:
            raise ConfigError(f"label_column: {source} has a single column, nothing left as data")

    values = np.empty((len(rows), ncols), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != ncols:
            raise DataError(f"{source}: row {line} has {len(row)} columns, expected {ncols}")
        for c, cell in enumerate(row):
            v = _parse_float(cell)
            if v is None:
                what = "an empty cell" if not cell.strip() else f"non-numeric cell {cell.strip()!r}"
                col = f"column {c + 1}" + (f" ({header[c]!r})" if header else "")
                raise DataError(f"{source}: row {line}, {col} has {what}")
            values[r, c] = v

    labels = None
    if label_index is not None:
        y = values[:, label_index]
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            bad = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0])
            raise DataError(
                f"{source}: row {rows[bad][0]}, label column {label_index + 1} has non-integer "
                f"value {float(y[bad]):g}"
            )
        labels = y.astype(np.int64)
        values = np.delete(values, label_index, axis=1)
    return values, labels


# --------------------------------------------------------------------------------------------
# image folders


def _validate_image_size(image_size: object) -> tuple[int, int]:
    """Return ``image_size`` as ``(H, W)`` positive ints, or raise :class:`ConfigError`."""
    try:
        h, w = image_size  # type: ignore[misc]
        if isinstance(h, bool) or isinstance(w, bool) or int(h) != h or int(w) != w:
            raise TypeError
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise ConfigError(f"image_size: expected (height, width), got {image_size!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"image_size: height and width must be positive, got {(h, w)}")
    return h, w


def read_image_folder(
    folder: str | os.PathLike[str], image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, None]:
    """Read every image file directly in ``folder`` into a uint8 array ``(N, C, H, W)``.

    All images must share one mode (grayscale or RGB) and, unless ``image_size=(H, W)`` is
    given (then each is resized with bilinear filtering), one size.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    source = _name(folder)
    size = _validate_image_size(image_size) if image_size is not None else None
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DataError(
            f"{source}: folder has no image files ({', '.join(IMAGE_SUFFIXES)})"
        )

    arrays: list[np.ndarray] = []
    first_mode: str | None = None
    first_size: tuple[int, int] | None = None
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                mode = im.mode
                if mode == "1":
                    im = im.convert("L")
                elif mode == "P":
                    im = im.convert("RGB")
                if im.mode not in ("L", "RGB"):
                    raise DataError(
                        f"{_name(p)}: unsupported image mode {mode} (expected grayscale or RGB)"
                    )
                if first_mode is None:
                    first_mode, first_size = im.mode, im.size
                elif im.mode != first_mode:
                    raise DataError(
                        f"{_name(p)}: image mode {im.mode} differs from {first_mode} of {_name(files[0])}"
                    )
                if size is not None:
                    if im.size != (size[1], size[0]):
                        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                elif im.size != first_size:
                    raise DataError(
                        f"{_name(p)}: image size {im.size[0]}x{im.size[1]} differs from "
                        f"{first_size[0]}x{first_size[1]} of {_name(files[0])}; "  # type: ignore[index]
                        "pass image_size to resize"
                    )
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{_name(p)}: cannot read image ({_one_line(exc)})") from exc
        arrays.append(arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1)))
    return np.stack(arrays), None
