"""The IDX format of the MNIST distribution: recognise, parse, read (raw or gzip) and write IDX files.

IDX files (``.idx``, ``*-ubyte``, ``*.idx3-ubyte`` ..., and any ``.gz`` of those) are big-endian,
with dtype codes 0x08 (uint8), 0x09 (int8), 0x0B (int16), 0x0C (int32), 0x0D (float32), 0x0E (float64).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

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
_CHUNK = 1 << 24
_DRAIN = 1 << 26        # how far a compressed file with a bad header is read to find a gzip error first


def is_idx_path(path: Path) -> bool:
    """Return whether ``path``'s name looks like an IDX file (``.idx``, ``-ubyte``, or ``.gz``)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return True
    return name.endswith(".idx") or name.endswith("ubyte") or ".idx" in name


def idx_labels_path(path: Path) -> Path | None:
    """The labels file beside an MNIST-style images file: ``train-images-idx3-ubyte[.gz]`` (or
    ``train-images.idx3-ubyte``) → ``train-labels-idx1-ubyte`` or ``.gz``, whichever exists; None
    when the name is not of that form or neither file exists."""
    name = path.name
    if "images" not in name or "idx3" not in name:
        return None
    stem = name.replace("images", "labels").replace("idx3", "idx1").removesuffix(".gz")
    for candidate in (stem, stem + ".gz"):
        if (path.parent / candidate).is_file():
            return path.parent / candidate
    return None


def _header(read: Callable[[int], bytes], source: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """Read and check an IDX header through ``read(n)``: (header size, dimensions, big-endian dtype)."""
    head = read(4)
    if len(head) == 0:
        raise DataError(f"{source}: empty file")
    if len(head) < 4:
        raise DataError(f"{source}: file of {len(head)} bytes is too short for an IDX header")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{source}: bad IDX magic number 0x{head.hex()} (must start with two zero bytes)")
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{source}: unknown IDX dtype code 0x{code:02x} in the magic number")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    size = 4 + 4 * ndim
    sizes = read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{source}: file of {4 + len(sizes)} bytes is too short for an IDX header "
                        f"with {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(sizes, dtype=">u4"))
    return size, dims, np.dtype(_IDX_DTYPES[code])


def _payload_size(dims: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(dims) * dtype.itemsize


def _to_array(payload: bytes | bytearray, dims: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The payload as an array in native byte order (converted in place: no second copy)."""
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)
    if dtype.byteorder not in ("=", "|") and dtype.itemsize > 1:
        if not arr.flags.writeable:
            arr = arr.copy()
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return arr


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse the bytes of an IDX file into an array (native byte order); DataError if malformed."""
    view = memoryview(data)
    offset = 0

    def read(n: int) -> bytes:
        nonlocal offset
        chunk = bytes(view[offset:offset + n])
        offset += len(chunk)
        return chunk

    header, dims, dtype = _header(read, source)
    expected = header + _payload_size(dims, dtype)
    if len(data) != expected:
        raise DataError(f"{source}: IDX dimensions {dims} of {dtype.name} need {expected} bytes, file has {len(data)}")
    return _to_array(bytearray(view[header:]), dims, dtype)


def _read_at_most(stream: BinaryIO, limit: int) -> bytearray:
    """Up to ``limit`` bytes of ``stream``, read in chunks (memory grows with what is actually read)."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = stream.read(min(_CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def read_idx(path: str | os.PathLike[str]) -> tuple[np.ndarray, None]:
    """Read an IDX file, raw or gzip-compressed (by name or magic bytes); return ``(array, None)``.

    The header is read first and then at most the number of bytes it declares plus one, so a
    compressed file that inflates beyond its declared size (a gzip bomb) is refused after reading
    that much, never inflated whole; an uncompressed file's size is compared with the header's
    before its data are read."""
    path = Path(path)
    source = _name(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{source}: cannot read file ({_one_line(exc)})") from exc
    with fh:
        try:
            compressed = path.name.lower().endswith(".gz") or fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            file_size = os.fstat(fh.fileno()).st_size
        except OSError as exc:
            raise DataError(f"{source}: cannot read file ({_one_line(exc)})") from exc
        if compressed and file_size == 0:
            raise DataError(f"{source}: empty file")
        stream = cast(BinaryIO, gzip.GzipFile(fileobj=fh, mode="rb") if compressed else fh)
        try:
            try:
                header, dims, dtype = _header(stream.read, source)
            except DataError:
                if compressed:      # a damaged gzip stream is the better explanation of a bad header
                    while stream.read(_CHUNK) and stream.tell() < _DRAIN:
                        pass
                raise
            payload = _payload_size(dims, dtype)
            if not compressed and file_size != header + payload:
                raise DataError(f"{source}: IDX dimensions {dims} of {dtype.name} need {header + payload} bytes, "
                                f"file has {file_size}")
            data = _read_at_most(stream, payload + 1)
        except EOFError as exc:
            raise DataError(f"{source}: truncated gzip data ({_one_line(exc)})") from exc
        except (OSError, zlib.error) as exc:
            what = "corrupt gzip data" if compressed else "cannot read file"
            raise DataError(f"{source}: {what} ({_one_line(exc)})") from exc
    if len(data) != payload:
        has = f"{header + len(data)}" if len(data) < payload else "more (reading stopped there)"
        raise DataError(f"{source}: IDX dimensions {dims} of {dtype.name} need {header + payload} bytes, "
                        f"{'decompressed ' if compressed else ''}file has {has}")
    return _to_array(data, dims, dtype), None


def write_idx(path: str | os.PathLike[str], x: np.ndarray) -> None:
    """Write ``x`` as a new uncompressed IDX file (refuses to overwrite); for tests and tools."""
    x = np.asarray(x)
    code = _IDX_CODES.get(f"{x.dtype.kind}{x.dtype.itemsize}")
    if code is None or x.ndim == 0 or x.ndim > 255:
        raise ConfigError(f"write_idx: cannot store an array of dtype {x.dtype} and shape {x.shape}")
    header = bytes([0, 0, code, x.ndim]) + np.asarray(x.shape, dtype=">u4").tobytes()
    with open(path, "xb") as fh:
        fh.write(header + np.ascontiguousarray(x, dtype=_IDX_DTYPES[code]).tobytes())
