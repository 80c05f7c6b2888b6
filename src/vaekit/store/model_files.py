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
from vaekit.store.weights import (
    count_values,
    load_state_strict,
    load_weights,
    load_weights_bytes,
    read_header,
    read_weights_bytes,
    save_weights,
)

__all__ = ["save_model", "load_model", "read_config", "check_shapes", "FORMAT_VERSION", "MODEL_FORMAT",
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
    :class:`~vaekit.errors.UntrustedCodeError`, and nothing is imported.

    The shapes the configuration implies are compared with the weights file's header before the
    model is built (:func:`check_shapes`), so a config.json describing a huge model is refused
    without allocating it; weights of another kind (integer, boolean) or with non-finite values are
    refused too (:func:`~vaekit.store.weights.load_state_strict`)."""
    layout = RunLayout.of(directory)
    config, _ = read_config(directory)
    path = Path(weights) if weights is not None else layout.weights
    data = read_weights_bytes(path)
    what = f"the model in {layout.config.name}"
    check_shapes(config, read_header(data, path), path, what, trust_code=trust_code)
    model = build_vae(config, trust_code=trust_code)
    load_state_strict(model, load_weights_bytes(data, path), path, what)
    return model.to(map_location)


def _shapes_of(config: VAEConfig, trust_code: bool) -> dict[str, tuple[int, ...]] | None:
    """The shapes of the tensors of the model ``config`` describes, from a build on the meta device
    (no memory is allocated); None when the modules cannot be built there (a module that looks at
    its initial values while it is made, e.g. a learned decoder variance)."""
    try:
        with torch.device("meta"):
            model = build_vae(config, trust_code=trust_code)
    except (ConfigError, CheckpointError):
        raise
    except Exception:  # noqa: BLE001 - the real build follows, and reports its own errors
        return None
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def check_shapes(config: VAEConfig, header: dict[str, tuple[str, tuple[int, ...]]], path: Path, what: str, *,
                 trust_code: bool = False) -> None:
    """Compare the tensors the model of ``config`` needs with those a weights file declares (its
    :func:`~vaekit.store.weights.read_header`) before building the model, so that a configuration
    describing a huge model is refused without allocating it: a tensor of another shape, or another
    number of values in all, is a CheckpointError naming ``path``. Key names are left to
    ``load_state_dict`` (a module may rename old keys while loading)."""
    expected = _shapes_of(config, trust_code)
    if expected is None:
        return
    stored = {key: shape for key, (_, shape) in header.items()}
    for key, shape in expected.items():
        if key in stored and stored[key] != shape:
            raise CheckpointError(f"{path}: weights do not match {what} (size mismatch for {key}: the weights "
                                  f"have shape {list(stored[key])}, the configuration needs {list(shape)})")
    need, have = count_values(expected), count_values(stored)
    if need != have:
        raise CheckpointError(f"{path}: weights do not match {what} (the configuration needs {need:,} values "
                              f"in {len(expected)} tensors, the weights hold {have:,} in {len(stored)})")
