"""Tensors on disk: a flat dict of tensors as one safetensors file, written atomically and read
without unpickling anything; and a strict ``load_state_dict`` whose failure is one line.

Nothing here knows about VAEs or run directories: :mod:`vaekit.store.model_files` (models) and
:mod:`vaekit.store.checkpoint` (training state) build on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vaekit.errors import CheckpointError
from vaekit.store.atomic import atomic_write_bytes

__all__ = ["save_weights", "load_weights", "load_state_strict"]


def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write a flat dict of tensors as safetensors, atomically; returns the path."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    return atomic_write_bytes(path, save(tensors))


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or malformed file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch is a one-line CheckpointError naming
    ``path``, ``what`` the weights should have matched, and the first offending key."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not match {what} "
                              f"({lines[1].strip() if len(lines) > 1 else lines[0]})") from None
