"""The IDX format of the MNIST distribution: recognise, parse, read (raw or gzip) and write IDX files.

IDX files (``.idx``, ``*-ubyte``, ``*.idx3-ubyte`` ..., and any ``.gz`` of those) are big-endian,
with dtype codes 0x08 (uint8), 0x09 (int8), 0x0B (int16), 0x0C (int32), 0x0D (float32), 0x0E (float64).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from vaekit.data.validation import _name, _one_line
from vaekit.errors import ConfigError, DataError

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
