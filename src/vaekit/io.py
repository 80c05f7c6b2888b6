"""Save and load models: configuration as JSON, weights as safetensors. Loading never unpickles.

A model directory holds ``config.json`` ({"format": "vaekit-model", "format_version": 1,
"model": VAEConfig, "extra": {...}}) and ``model.safetensors``. Both are written atomically
(temporary file in the same folder, flushed, fsynced, renamed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .atomic import atomic_write_bytes, atomic_write_json
from .errors import CheckpointError
from .model import VAE, VAEConfig, build_vae

__all__ = ["save_model", "load_model", "atomic_write_bytes", "atomic_write_json", "FORMAT_VERSION",
           "read_config", "save_weights", "load_weights"]

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a flat dict of tensors as safetensors, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    return atomic_write_bytes(path, save(tensors))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or malformed file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def save_model(model: VAE, directory: str | os.PathLike, *, extra: dict | None = None) -> Path:
    """Write ``model`` (built by :func:`~vaekit.model.build_vae`) to ``directory``; returns it.

    ``extra`` is stored verbatim in config.json (e.g. the data preprocessing).
    """
    if model.config is None:
        raise CheckpointError("save_model: this model has no VAEConfig (it was built from custom modules); "
                              "save its state_dict with vaekit.io.save_weights and rebuild it yourself")
    directory = Path(directory)
    save_weights(model.state_dict(), directory / WEIGHTS_FILE)
    atomic_write_json(directory / CONFIG_FILE, {"format": "vaekit-model", "format_version": FORMAT_VERSION,
                                                "model": model.config.to_dict(), "extra": extra or {}})
    return directory


def read_versioned_json(path: Path, *, fmt: str, max_version: int, what: str, missing: str) -> dict[str, Any]:
    """Read a vaekit JSON document whose ``format`` is ``fmt`` and whose ``format_version`` is at most
    ``max_version``; any other file is a CheckpointError naming it (``missing``: the not-found text)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: {missing}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CheckpointError(f"{path}: not a vaekit {what}")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise CheckpointError(f"{path}: format version {version!r} is newer than this vaekit reads "
                              f"({max_version}); upgrade vaekit")
    return doc


def read_config(directory: str | os.PathLike) -> tuple[VAEConfig, dict]:
    """The VAEConfig and the ``extra`` dict stored in ``directory/config.json``."""
    doc = read_versioned_json(Path(directory) / CONFIG_FILE, fmt="vaekit-model", max_version=FORMAT_VERSION,
                              what="model configuration",
                              missing=f"not found (is {directory} a vaekit model or run directory?)")
    return VAEConfig.from_dict(doc.get("model", {})), doc.get("extra", {})


def load_model(directory: str | os.PathLike, *, weights: str | os.PathLike | None = None,
               map_location: str | torch.device = "cpu") -> VAE:
    """Rebuild the model saved in ``directory`` (weights from ``weights`` if given)."""
    config, _ = read_config(directory)
    model = build_vae(config)
    path = Path(weights) if weights is not None else Path(directory) / WEIGHTS_FILE
    load_state_strict(model, load_weights(path), path, "the model in config.json")
    return model.to(map_location)


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch is a one-line CheckpointError naming
    ``path``, ``what`` the weights should have matched, and the first offending key."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not match {what} "
                              f"({lines[1].strip() if len(lines) > 1 else lines[0]})") from None
