"""Ordinary PyTorch/numpy data as model inputs: :func:`as_examples`.

:func:`vaekit.training.fit` and :func:`vaekit.inference.evaluate` take examples as a float tensor
of shape ``(N, *data_shape)``; :func:`as_examples` builds one from what users usually hold:

* a ``torch.Tensor`` or ``numpy.ndarray`` of shape ``(N, *data_shape)``;
* a map-style ``torch.utils.data.Dataset`` (e.g. ``TensorDataset``) or an ``IterableDataset``
  whose items are a tensor/array, or a tuple/list whose first element is the example, or a dict
  with key ``"x"``; it is read once, in order, through a ``DataLoader`` with the default collate;
* a ``torch.utils.data.DataLoader`` whose batches are a tensor/array, a tuple/list whose first
  element is the batch, or a dict with key ``"x"``; it is iterated once (a shuffled loader is
  fine: only the set of examples matters);
* a :class:`vaekit.data.stream.NpyStream`, returned unchanged.

Labels (the other elements of a tuple, the other keys of a dict) are ignored. Every problem is a
:class:`vaekit.errors.VaekitError` with a one-line message that starts with the input's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from vaekit.data.stream import NpyStream
from vaekit.errors import ConfigError, DataError, ShapeError

__all__ = ["as_examples"]

#: Items collated per batch when reading a Dataset.
_READ_BATCH = 1024
#: Elements checked at a time for NaN/Inf (bounds the temporary boolean mask).
_FINITE_CHUNK = 1 << 24
_KINDS = "a tensor, numpy array, torch Dataset or DataLoader"


def _shape(shape: Sequence[int]) -> str:
    """``(1, 8, 8)``, ``(3,)``, ``()``: a shape as Python writes a tuple."""
    return str(tuple(int(s) for s in shape))


def _batch_shape(shape: Sequence[int]) -> str:
    """``(*, 1, 8, 8)``: the shape of batches of examples of ``shape``."""
    return "(" + ", ".join(["*", *(str(int(s)) for s in shape)]) + ")"


def _check_data_shape(data_shape: Any) -> tuple[int, ...] | None:
    """``data_shape`` as a tuple of ints (None stays None); ConfigError unless positive sizes."""
    if data_shape is None:
        return None
    try:
        sizes = tuple(data_shape)
    except TypeError:
        sizes = None
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in sizes):
        raise ConfigError(f"data_shape: expected a non-empty tuple of positive integers, got {data_shape!r}")
    return tuple(int(s) for s in sizes)


def _numpy_to_tensor(a: np.ndarray, name: str, what: str) -> torch.Tensor:
    """``a`` as a tensor (sharing memory where torch can); non-numeric dtypes are a DataError."""
    if a.dtype.kind not in "buif":
        raise DataError(f"{name}: {what} holds {a.dtype} values, expected numbers (bool, integer or float)")
    if a.dtype.kind != "f":
        with np.errstate(over="ignore", invalid="ignore"):
            a = a.astype(np.float32)
    elif not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.writeable or any(s < 0 for s in a.strides):   # torch warns on the first, fails on the second
        a = a.copy()
    return torch.as_tensor(a)


def _as_tensor(value: Any, name: str, what: str) -> torch.Tensor:
    """A tensor or numpy array ``value`` as a real-valued tensor (any dtype but complex)."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
    elif isinstance(value, np.ndarray):
        t = _numpy_to_tensor(value, name, what)
    else:
        raise DataError(f"{name}: {what} is a {type(value).__name__}, expected a tensor or numpy array")
    if t.is_complex():
        raise DataError(f"{name}: {what} holds complex values ({t.dtype}), expected real numbers")
    return t


def _pick(value: Any, name: str, what: str) -> Any:
    """The example part of an item or batch: itself, the first element of a tuple/list, or ``["x"]``."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value
    if isinstance(value, Mapping):
        if "x" not in value:
            keys = ", ".join(repr(k) for k in list(value)[:8])
            raise DataError(f"{name}: {what} is a dict without key 'x' (keys: {keys}); expected the examples under 'x'")
        return value["x"]
    if isinstance(value, (tuple, list)):
        if not value:
            raise DataError(f"{name}: {what} is an empty {type(value).__name__}, "
                            "expected the examples as its first element")
        return value[0]
    return value


def _check_finite(x: torch.Tensor, name: str) -> None:
    """Raise DataError naming the first example of ``x`` (N, ...) that holds NaN or Inf."""
    if not x.is_floating_point() or x.numel() == 0:
        return
    per_example = max(1, math.prod(x.shape[1:]))
    rows = max(1, _FINITE_CHUNK // per_example)
    for start in range(0, x.shape[0], rows):
        chunk = x[start:start + rows]
        finite = torch.isfinite(chunk).reshape(chunk.shape[0], -1).all(dim=1)
        if not bool(finite.all()):
            first = start + int((~finite).nonzero()[0, 0])
            raise DataError(f"{name}: contains NaN or infinite values (first at example {first})")


class _Reader:
    """Checks the examples' shape batch by batch and collects the batches."""

    def __init__(self, name: str, data_shape: tuple[int, ...] | None):
        self.name, self.data_shape = name, data_shape
        self.example_shape: tuple[int, ...] | None = None
        self.batches: list[torch.Tensor] = []
        self.count = 0

    def check_example_shape(self, shape: tuple[int, ...], found: str) -> None:
        """Check the first example shape against ``data_shape``; ``found`` says where a scalar was found."""
        if self.example_shape is None:
            if not shape:
                raise ShapeError(f"{self.name}: {found}; expected examples with at least one dimension "
                                 "(data of shape (N, *data_shape))")
            if self.data_shape is not None and shape != self.data_shape:
                raise ShapeError(f"{self.name}: examples have shape {_shape(shape)}, "
                                 f"expected data_shape {_shape(self.data_shape)}")
            self.example_shape = shape

    def add(self, batch: torch.Tensor) -> None:
        """Append a batch (b, *shape) whose shape was checked (bool/integer values as float32)."""
        self.batches.append(batch if batch.is_floating_point() else batch.to(torch.float32))
        self.count += batch.shape[0]

    def result(self, empty: str) -> torch.Tensor:
        if not self.count:
            raise DataError(f"{self.name}: {empty}")
        x = self.batches[0] if len(self.batches) == 1 else torch.cat(self.batches)
        self.batches = []
        return x


def _check_whole(shape: tuple[int, ...], kind: str, name: str, data_shape: tuple[int, ...] | None) -> None:
    """Check the shape of a whole tensor or array of examples (``kind`` says which)."""
    if len(shape) < 2:
        raise ShapeError(f"{name}: expected a {kind} of shape (N, *data_shape) with at least 2 dimensions, "
                         f"got shape {_shape(shape)}")
    if shape[0] == 0:
        raise DataError(f"{name}: the {kind} holds no examples (shape {_shape(shape)})")
    if data_shape is not None and tuple(shape[1:]) != data_shape:
        raise ShapeError(f"{name}: examples have shape {_shape(shape[1:])}, "
                         f"expected data_shape {_shape(data_shape)} (got a {kind} of shape {_shape(shape)})")


def _read_dataset(data: Dataset, name: str, data_shape: tuple[int, ...] | None) -> torch.Tensor:
    """Read a map-style or iterable-style Dataset once, in order, through a DataLoader."""
    iterable = isinstance(data, IterableDataset)
    if not iterable:
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError:
            raise DataError(f"{name}: a map-style Dataset needs __len__, {type(data).__name__} has none "
                            "(make it an IterableDataset to read it by iteration)") from None
        if n == 0:
            raise DataError(f"{name}: the Dataset is empty")
    reader = _Reader(name, data_shape)

    def collate(items: list[Any]) -> torch.Tensor:
        start = reader.count
        examples = []
        for k, item in enumerate(items):
            where = f"example {start + k}"
            example = _pick(item, name, f"the Dataset's item {start + k}")
            if isinstance(example, (int, float, np.number)):
                shape: tuple[int, ...] = ()
            else:
                example = _as_tensor(example, name, where)
                shape = tuple(int(s) for s in example.shape)
            reader.check_example_shape(shape, f"{where} is a scalar")
            if shape != reader.example_shape:
                raise ShapeError(f"{name}: {where} of the Dataset has shape {_shape(shape)}, "
                                 f"after examples of shape {_shape(reader.example_shape or ())}")
            examples.append(example)
        return default_collate(examples)

    loader = DataLoader(data, batch_size=_READ_BATCH, shuffle=False, collate_fn=collate)
    for batch in loader:
        reader.add(batch)
    return reader.result("the Dataset is empty")


def _read_loader(loader: DataLoader, name: str, data_shape: tuple[int, ...] | None) -> torch.Tensor:
    """Iterate a DataLoader once and stack the example part of its batches."""
    reader = _Reader(name, data_shape)
    for index, raw in enumerate(loader):
        what = f"the DataLoader's batch {index}"
        batch = _as_tensor(_pick(raw, name, what), name, what)
        if batch.ndim == 0:
            raise ShapeError(f"{name}: {what} is a scalar, expected a batch of shape (B, *data_shape)")
        shape = tuple(int(s) for s in batch.shape[1:])
        reader.check_example_shape(shape, f"{what} has shape {_shape(batch.shape)}, so its examples are scalars")
        if shape != reader.example_shape:
            raise ShapeError(f"{name}: a DataLoader yielded a batch of shape {_shape(batch.shape)} "
                             f"after batches of shape {_batch_shape(reader.example_shape or ())}")
        if batch.shape[0]:
            reader.add(batch)
    return reader.result("the DataLoader yielded no examples")


def as_examples(data: Any, *, name: str, data_shape: tuple[int, ...] | None = None,
                check_finite: bool = True) -> torch.Tensor | NpyStream:
    """Turn user data into model inputs: a float tensor of shape ``(N, *data_shape)`` (or an NpyStream).

    ``data`` is a ``torch.Tensor``, a ``numpy.ndarray``, a ``torch.utils.data.Dataset`` (map-style
    or ``IterableDataset``; an item is the example, a tuple/list whose first element is it, or a
    dict with key ``"x"``), a ``torch.utils.data.DataLoader`` (a batch is the examples, a tuple/list
    whose first element is them, or a dict with key ``"x"``), or a
    :class:`vaekit.data.stream.NpyStream`. Labels are ignored. A Dataset is read once in order
    through a ``DataLoader`` with the default collate; a DataLoader is iterated once (shuffling is
    fine: the examples come back in the order it yields them).

    Returns an NpyStream unchanged. Otherwise returns a tensor of shape ``(N, *example shape)``,
    ``N >= 1``, on the device the data were on: floating data keep their dtype (a tensor or array
    that already has the right dtype and layout is returned without a copy, sharing memory with
    ``data``); bool and integer data become float32. ``name`` (e.g. ``"train_x"``) starts every
    error message. When ``data_shape`` is given, the example shape must equal it: a flat
    ``(N, prod(data_shape))`` input is an error, never reshaped silently.

    Raises :class:`ConfigError` for an unsupported kind of ``data`` (or a malformed ``data_shape``),
    :class:`ShapeError` for fewer than two dimensions, examples of different shapes, or a shape
    other than ``data_shape``, and :class:`DataError` for no examples, non-numeric or complex
    values, NaN or infinite values (naming the first such example; not checked with
    ``check_finite=False``), or items in an unknown form.
    """
    data_shape = _check_data_shape(data_shape)
    if isinstance(data, NpyStream):
        if data_shape is not None and tuple(data.shape) != data_shape:
            raise ShapeError(f"{name}: the NpyStream {data.source} has examples of shape {_shape(data.shape)}, "
                             f"expected data_shape {_shape(data_shape)}")
        return data
    if isinstance(data, torch.Tensor):
        x = _as_tensor(data, name, "the tensor")
        _check_whole(tuple(x.shape), "tensor", name, data_shape)
    elif isinstance(data, np.ndarray):
        if data.dtype.kind not in "buif":
            raise DataError(f"{name}: the array holds {data.dtype} values, expected numbers (bool, integer or float)")
        _check_whole(data.shape, "array", name, data_shape)     # before any conversion copies it
        x = _as_tensor(data, name, "the array")
    elif isinstance(data, DataLoader):
        x = _read_loader(data, name, data_shape)
    elif isinstance(data, Dataset):
        x = _read_dataset(data, name, data_shape)
    else:
        kind = type(data)
        found = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        raise ConfigError(f"{name}: expected {_KINDS}, got {found}")
    if not x.is_floating_point():
        x = x.to(torch.float32)
    if check_finite:
        _check_finite(x, name)
    return x
