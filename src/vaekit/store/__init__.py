"""Everything vaekit keeps on disk, written atomically and read without unpickling.

* :mod:`~vaekit.store.layout`      — :class:`RunLayout`, the one owner of a run directory's file names;
* :mod:`~vaekit.store.atomic`      — atomic file writes;
* :mod:`~vaekit.store.weights`     — tensors as safetensors; strict state-dict loading;
* :mod:`~vaekit.store.documents`   — versioned JSON documents;
* :mod:`~vaekit.store.model_files` — a model: config.json + model.safetensors (``save_model``, ``load_model``);
* :mod:`~vaekit.store.checkpoint`  — the full training state for ``--resume``;
* :mod:`~vaekit.store.metrics`     — the per-epoch history (metrics.jsonl, metrics.csv);
* :mod:`~vaekit.store.runs`        — a run directory as a whole (``load_run``).

The names below are importable from ``vaekit.store`` directly; all but :class:`RunLayout` are
loaded on first use, so importing one submodule does not import torch's model code.
"""

from __future__ import annotations

import importlib
from typing import Any

from vaekit.store.layout import RunLayout

__all__ = ["RunLayout", "save_model", "load_model", "read_config", "save_weights", "load_weights",
           "load_run", "Run", "DataSpec", "rewrite_metrics", "append_metrics", "read_history"]

_LAZY = {
    "save_model": "model_files", "load_model": "model_files", "read_config": "model_files",
    "save_weights": "weights", "load_weights": "weights",
    "load_run": "runs", "Run": "runs", "DataSpec": "runs",
    "rewrite_metrics": "metrics", "append_metrics": "metrics", "read_history": "metrics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vaekit.store' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vaekit.store.{module}"), name)
