"""Training data larger than memory: a ``.npy`` file memory-mapped and read in shuffled blocks.

:class:`NpyStream` holds the rows of one split of a ``.npy`` file (sorted file row numbers) and
reads them through a read-only ``mmap``. The rows are cut into blocks of about ``block_bytes``;
an epoch visits the blocks in a random order and the rows of each block in a random order
(:meth:`NpyStream.block_order`), so every row is seen exactly once per epoch while only the
current block (and the next, where a batch straddles two) is resident: each block is copied out
of the mapping, converted as :func:`vaekit.data.formats.interpret_array` converts a whole array
(uint8 images, float32 otherwise, NaN/Inf and range checks naming the file and rows), and its
pages are then dropped from the process (``madvise(MADV_DONTNEED)``; they stay in the page cache).
Peak resident memory is therefore about two blocks whatever the file's size.

The price is a less thorough shuffle: a batch draws its examples from one block (two at a
boundary) instead of from the whole split; with blocks of many batches this is rarely measurable.
"""

from __future__ import annotations

import math
import mmap
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vaekit.data import formats
from vaekit.errors import ConfigError, DataError

__all__ = ["NpyStream", "DEFAULT_BLOCK_BYTES", "read_npy_header"]

#: Default block size: 64 MiB of raw rows.
DEFAULT_BLOCK_BYTES = 64 << 20
_CACHED_BLOCKS = 2
_TAKE_CHUNK = 16


def read_npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a ``.npy`` file, without reading its data; raises
    :class:`DataError` for a file that is not a plain C-ordered numeric ``.npy`` array."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise DataError(f"{source}: unsupported .npy version {version}")
            offset = fh.tell()
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise DataError(f"{source}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DataError(f"{source}: not a readable .npy file ({exc})") from None
    if dtype.hasobject or dtype.kind not in "buif":
        raise DataError(f"{source}: holds {dtype} values; streaming needs a numeric array")
    if fortran and len(shape) > 1:
        raise DataError(f"{source}: is stored in Fortran order; streaming needs C order (np.ascontiguousarray)")
    if len(shape) < 2 or shape[0] == 0 or math.prod(shape) == 0:
        raise DataError(f"{source}: array of shape {shape}; streaming needs (N, ...) with N >= 1 non-empty examples")
    expected = offset + math.prod(shape) * dtype.itemsize
    if size < expected:
        raise DataError(f"{source}: truncated ({size} bytes, the header promises {expected})")
    return tuple(int(s) for s in shape), dtype, offset


class NpyStream:
    """Rows ``rows`` (file row numbers; default all) of the ``.npy`` file ``path``, memory-mapped.

    ``len(stream)`` rows; ``kind``, ``shape`` (one example, after conversion) and ``levels`` as
    :func:`vaekit.data.formats.interpret_array` reports them for the file's dtype. Positions
    ``0..len-1`` index ``rows``; :meth:`read` returns converted rows by position.
    """

    def __init__(self, path: str | os.PathLike[str], rows: np.ndarray | None = None, *,
                 block_bytes: int = DEFAULT_BLOCK_BYTES):
        if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) or block_bytes < 1:
            raise ConfigError(f"block_bytes: must be a positive integer, got {block_bytes!r}")
        self.path = Path(path)
        self.source = os.fspath(path)
        self.file_shape, self.dtype, self._offset = read_npy_header(path)
        n_file = self.file_shape[0]
        if rows is None:
            rows = np.arange(n_file, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or rows.size == 0:
            raise ConfigError(f"{self.source}: rows must be a non-empty 1-D array of row numbers")
        if np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= n_file:
            raise ConfigError(f"{self.source}: rows must be increasing row numbers in 0..{n_file - 1}")
        self.rows = rows
        self.row_bytes = math.prod(self.file_shape[1:]) * self.dtype.itemsize
        self.block_rows = max(1, block_bytes // self.row_bytes)
        with open(self.path, "rb") as fh:                      # the mapping keeps its own descriptor
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._array = np.frombuffer(self._map, dtype=self.dtype, count=math.prod(self.file_shape),
                                    offset=self._offset).reshape(self.file_shape)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        first = self._load_block(0)
        _, self.kind, self.shape, self.levels = formats.interpret_array(first[:1], self.source)

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def num_blocks(self) -> int:
        return math.ceil(len(self) / self.block_rows)

    def __repr__(self) -> str:
        return (f"NpyStream({self.source!r}, rows={len(self)}, shape={self.shape}, blocks={self.num_blocks} "
                f"of {self.block_rows} rows)")

    def close(self) -> None:
        """Release the mapping (reading afterwards is an error)."""
        self._cache.clear()
        self._array = None  # type: ignore[assignment]
        if not self._map.closed:
            self._map.close()

    def _release(self, first_row: int, last_row: int) -> None:
        """Drop the pages of file rows first_row..last_row from this process (not from the cache)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = self._offset + first_row * self.row_bytes
        end = self._offset + (last_row + 1) * self.row_bytes
        aligned = start - start % mmap.PAGESIZE
        self._map.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)

    def _load_block(self, block: int) -> np.ndarray:
        cached = self._cache.get(block)
        if cached is not None:
            self._cache.move_to_end(block)
            return cached
        lo = block * self.block_rows
        hi = min(len(self), lo + self.block_rows)
        rows = self.rows[lo:hi]
        first, last = int(rows[0]), int(rows[-1])
        if last - first + 1 == rows.size:
            raw = np.array(self._array[first:last + 1])
        else:
            raw = self._array[rows]
        self._release(first, last)
        converted, *_ = formats.interpret_array(raw, f"{self.source} (rows {first}..{last})")
        self._cache[block] = converted
        while len(self._cache) > _CACHED_BLOCKS:
            self._cache.popitem(last=False)
        return converted

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The converted rows at ``positions`` (into ``rows``), in that order: (len, *shape)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"{self.source}: positions must lie in 0..{len(self) - 1}")
        blocks = positions // self.block_rows
        out: np.ndarray | None = None
        for block in np.unique(blocks):
            data = self._load_block(int(block))
            mask = blocks == block
            if out is None:
                out = np.empty((positions.size, *data.shape[1:]), dtype=data.dtype)
            out[mask] = data[positions[mask] - int(block) * self.block_rows]
        if out is None:
            return np.empty((0, *self.shape), dtype=np.uint8 if self.levels else np.float32)
        return out

    def take(self, file_rows: np.ndarray) -> np.ndarray:
        """Converted file rows ``file_rows`` (any rows of the file, in the given order), read directly."""
        file_rows = np.asarray(file_rows, dtype=np.int64)
        if file_rows.size == 0:
            return np.empty((0, *self.shape), dtype=np.uint8 if self.levels else np.float32)
        order = np.argsort(file_rows, kind="stable")
        ordered = file_rows[order]
        raw = np.empty((ordered.size, *self.file_shape[1:]), dtype=self.dtype)
        for start in range(0, ordered.size, _TAKE_CHUNK):     # scattered rows: release as we go, since
            part = ordered[start:start + _TAKE_CHUNK]          # each fault maps its neighbourhood too
            raw[start:start + part.size] = self._array[part]
            self._release(int(part[0]), int(part[-1]))
        converted, *_ = formats.interpret_array(raw, self.source)
        out = np.empty_like(converted)
        out[order] = converted
        return out

    def block_order(self, generator: torch.Generator) -> torch.Tensor:
        """An epoch's order of positions: the blocks shuffled, then the rows within each block."""
        parts = []
        for block in torch.randperm(self.num_blocks, generator=generator).tolist():
            lo = block * self.block_rows
            hi = min(len(self), lo + self.block_rows)
            parts.append(torch.randperm(hi - lo, generator=generator) + lo)
        return torch.cat(parts)

    def iter_blocks(self) -> Iterator[np.ndarray]:
        """The converted rows, one block at a time, in file order."""
        for block in range(self.num_blocks):
            yield self._load_block(block)
