"""Readers of numpy files: ``.npy`` (one numeric array, no pickles) and ``.npz`` (data and optional labels).

In a ``.npz`` the data is under the key ``x``, ``data`` or ``arr_0`` (first found), and optional
integer labels under ``y`` or ``labels``. Each member read has its .npy header checked against its
size in the zip directory first (a zip bomb, or a header claiming more than the member holds, is
refused before anything is allocated).
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np
from numpy.lib import format as npformat

from vaekit.data.validation import _name, _one_line, as_labels
from vaekit.errors import DataError

_NPY_MAGIC = b"\x93NUMPY"
_NPZ_DATA_KEYS = ("x", "data", "arr_0")
_NPZ_LABEL_KEYS = ("y", "labels")


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


def _check_member(archive: zipfile.ZipFile, key: str, source: str) -> None:
    """Compare the size a member's .npy header declares with the size the zip directory gives it,
    reading the header only: numpy allocates what the header declares before it inflates the data,
    so a member whose header claims more than the member holds (or less: a zip bomb) is refused
    first."""
    info = archive.getinfo(f"{key}.npy")
    with archive.open(info) as member:
        version = npformat.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(member)
        else:
            shape, _, dtype = npformat.read_array_header_2_0(member)
        if dtype.hasobject:
            return                      # refused by np.load (allow_pickle=False), nothing allocated
        declared = member.tell() + math.prod(shape) * dtype.itemsize
    if declared != info.file_size:
        raise DataError(f"{source}: member {key!r} declares a {dtype} array of shape {tuple(shape)} "
                        f"({declared} bytes with its header) but holds {info.file_size} bytes")


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
            label_key = next((k for k in _NPZ_LABEL_KEYS if k in keys), None)
            for key in (data_key, label_key):
                if key is not None:
                    _check_member(archive.zip, key, source)
            x = archive[data_key]
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
