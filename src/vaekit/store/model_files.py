"""Save and load models: configuration as JSON, weights as safetensors. Loading never unpickles.

A model directory holds ``config.json`` ({"format": "vaekit-model", "format_version": 2,
"model": VAEConfig.to_dict(), "extra": {...}}) and ``model.safetensors`` (file names:
:class:`~vaekit.store.layout.RunLayout`). Both are written atomically (temporary file in the same
folder, flushed, fsynced, renamed).

Format versions: 2 stores the architecture's arguments under ``model.arch_args``; 1 (vaekit 0.1)
kept ``hidden`` and ``activation`` at the top of ``model``. Both are read
(:meth:`~vaekit.models.config.VAEConfig.from_dict` understands either), and weights written by 0.1
load into today's modules (the decoder renames its old keys on load).

A configuration may name the user's own network builder (``arch="MODULE:FUNCTION"``); loading it
imports that module, so :func:`load_model` does so only with ``trust_code=True``.

Generic persistence lives in :mod:`vaekit.store.weights` and :mod:`vaekit.store.documents`; its
names are re-exported here for the code that imported them from this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vaekit.errors import CheckpointError, ConfigError
from vaekit.models.config import VAEConfig
from vaekit.models.vae import VAE, build_vae
from vaekit.store.atomic import atomic_write_bytes, atomic_write_json
from vaekit.store.documents import read_versioned_json
from vaekit.store.layout import RunLayout
from vaekit.store.weights import load_state_strict, load_weights, save_weights

__all__ = ["save_model", "load_model", "read_config", "FORMAT_VERSION", "MODEL_FORMAT",
           # re-exported from vaekit.store.weights, .documents and .atomic
           "save_weights", "load_weights", "load_state_strict", "read_versioned_json",
           "atomic_write_bytes", "atomic_write_json"]

#: The config.json format written; every version from 1 up to it is read.
FORMAT_VERSION = 2
MODEL_FORMAT = "vaekit-model"


def save_model(model: torch.nn.Module, directory: str | os.PathLike[str], *,
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (built by :func:`~vaekit.models.vae.build_vae`: it carries its ``config``) to
    ``directory``; returns it.

    ``extra`` is stored verbatim in config.json (e.g. the data preprocessing).
    """
    config = getattr(model, "config", None)
    if config is None:
        raise CheckpointError("save_model: this model has no VAEConfig (it was built from custom modules); "
                              "save its state_dict with vaekit.store.weights.save_weights and rebuild it yourself")
    layout = RunLayout.of(directory)
    save_weights(model.state_dict(), layout.weights)
    atomic_write_json(layout.config, {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION,
                                      "model": config.to_dict(), "extra": extra or {}})
    return layout.root


def read_config(directory: str | os.PathLike[str]) -> tuple[VAEConfig, dict[str, Any]]:
    """The VAEConfig and the ``extra`` dict stored in ``directory/config.json`` (format 1 or 2).

    Reading imports nothing: a configuration that names user code is only checked for its form."""
    layout = RunLayout.of(directory)
    doc = read_versioned_json(layout.config, fmt=MODEL_FORMAT, max_version=FORMAT_VERSION,
                              what="model configuration",
                              missing=f"not found (is {directory} a vaekit model or run directory?)")
    model, extra = doc.get("model", {}), doc.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{layout.config}: \"extra\" must be a JSON object, got {type(extra).__name__}")
    try:
        config = VAEConfig.from_dict(model)
    except ConfigError as exc:
        raise ConfigError(f"{layout.config}: {exc}") from None
    return config, extra


def load_model(directory: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None,
               map_location: str | torch.device = "cpu", trust_code: bool = False) -> VAE:
    """Rebuild the model saved in ``directory`` (weights from ``weights`` if given).

    A model whose configuration names the user's own networks (``MODULE:FUNCTION``) imports and
    runs that code only with ``trust_code=True``; otherwise
    :class:`~vaekit.errors.UntrustedCodeError`, and nothing is imported."""
    layout = RunLayout.of(directory)
    config, _ = read_config(directory)
    model = build_vae(config, trust_code=trust_code)
    path = Path(weights) if weights is not None else layout.weights
    load_state_strict(model, load_weights(path), path, f"the model in {layout.config.name}")
    return model.to(map_location)
