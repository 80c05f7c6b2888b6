"""Tensors on disk: a flat dict of tensors as one safetensors file, written atomically and read
without unpickling anything; and a strict ``load_state_dict`` whose failure is one line.

Files are read as bytes (``Path.read_bytes``) and decoded in memory, so any path the operating
system accepts works, a name that is not valid UTF-8 included. :func:`read_header` gives the names,
dtypes and shapes a file declares without decoding a tensor, so a caller can compare them with
what it expects before it allocates anything.

Nothing here knows about VAEs or run directories: :mod:`vaekit.store.model_files` (models) and
:mod:`vaekit.store.checkpoint` (training state) build on it.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from vaekit.errors import CheckpointError
from vaekit.store.atomic import atomic_write_bytes
from vaekit.store.documents import loads

__all__ = ["save_weights", "load_weights", "read_weights_bytes", "load_weights_bytes", "read_header", "count_values",
           "load_state_strict"]

#: The largest JSON header accepted (safetensors' own limit).
MAX_HEADER_BYTES = 100_000_000


def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write a flat dict of tensors as safetensors, atomically; returns the path."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    return atomic_write_bytes(path, save(tensors))


def read_weights_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a weights file; a missing or unreadable file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the weights file ({exc.strerror or exc})") from None


def read_header(data: bytes, path: str | os.PathLike[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors a safetensors file declares, ``{name: (dtype, shape)}``, read from its JSON header
    only (no tensor is decoded); a malformed header is a CheckpointError naming ``path``."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a readable safetensors file ({why})")

    if len(data) < 8:
        raise bad(f"{len(data)} bytes, too short for a header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(len(data) - 8, MAX_HEADER_BYTES):
        raise bad(f"its header claims {size} bytes, the file has {len(data)}")
    try:
        header = loads(data[8:8 + size])          # a tensor named twice is refused (DuplicateKeyError)
    except (ValueError, RecursionError) as exc:        # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise bad(f"the header is not valid JSON: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if (not isinstance(dtype, str) or not isinstance(shape, list)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise bad(f"tensor {name!r} has no valid dtype and shape")
        tensors[name] = (dtype, tuple(shape))
    return tensors


def load_weights_bytes(data: bytes, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Decode the bytes of a safetensors file (``path`` names it in errors)."""
    try:
        return load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from None


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or malformed file is a CheckpointError naming it."""
    return load_weights_bytes(read_weights_bytes(path), path)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _check_values(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse what ``load_state_dict`` would silently accept: a tensor of another kind than the
    model's (integer or boolean values cast to floating point, or the reverse) and non-finite values."""
    expected = model.state_dict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue                                        # load_state_dict reports it
        target = expected.get(key)                          # None: an unexpected key, or one a module renames
        if target is not None and (value.is_floating_point() != target.is_floating_point()
                                   or value.is_complex() != target.is_complex()
                                   or (value.dtype == torch.bool) != (target.dtype == torch.bool)):
            raise CheckpointError(f"{path}: tensor {key!r} is {str(value.dtype).removeprefix('torch.')}, the model "
                                  f"needs {str(target.dtype).removeprefix('torch.')} (values of another kind are "
                                  "never converted)")
        if (value.is_floating_point() or value.is_complex()) and value.numel() and not bool(value.isfinite().all()):
            bad = int((~value.isfinite()).sum())
            raise CheckpointError(f"{path}: tensor {key!r} holds {bad} non-finite value{'s' if bad > 1 else ''} "
                                  "(NaN or Inf); the weights are unusable")


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``model.load_state_dict(state, strict=True)`` after checking that each tensor is of the kind
    (floating point, integer, boolean) the model's is and holds finite values; a mismatch is a
    one-line CheckpointError naming ``path``, ``what`` the weights should have matched, and the first
    offending key."""
    _check_values(model, state, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not match {what} "
                              f"({lines[1].strip() if len(lines) > 1 else lines[0]})") from None


def count_values(shapes: dict[str, tuple[int, ...]]) -> int:
    """The number of values in tensors of these shapes."""
    return sum(math.prod(shape) for shape in shapes.values())
