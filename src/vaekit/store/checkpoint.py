"""Training state on disk (for ``--resume``): tensors as safetensors, everything else as JSON.

A checkpoint is a pair of files sharing a stem (a run's is :attr:`vaekit.store.layout.RunLayout.checkpoint`):

* ``last.safetensors`` — every tensor: the model's state_dict under ``model.``, the optimizer's
  state under ``optim.state.{param_index}.{name}``, RNG states (``rng.torch``, a uint8 tensor)
  and any tensor found in the scheduler state or ``extra``;
* ``last.json`` — everything else (optimizer param_groups, scheduler state, epoch, step, the
  numpy/python RNG states, ``extra``) with ``{"__tensor__": key}`` where a tensor was, and the
  sha256 of the safetensors file.

Saving replaces the pair so that a crash (even SIGKILL) at any moment leaves a loadable
checkpoint, the previous one or the new one: the new tensors go to ``last.safetensors.next``
(atomically), then the JSON, with their sha256, replaces ``last.json`` (atomically: the commit),
then ``.next`` is renamed onto ``last.safetensors``. Between the last two steps ``last.json``
names tensors that are still in ``.next``; :func:`load_training_state` takes them from there,
and the next save completes the rename first. A weights file whose hash does not match the JSON
is reported, never loaded. Nothing is ever unpickled.

The sha256 detects corruption (a torn write, a flipped bit), not tampering: anyone who can edit the
files can recompute it. So nothing read is trusted. Before torch sees the state,
:func:`load_training_state` checks every model tensor (the model's kind of dtype, finite values),
every optimizer state tensor against its parameter (Adam's ``exp_avg`` and ``exp_avg_sq``: the
parameter's shape and dtype, finite, second moments >= 0; ``step``: a finite scalar >= 0; a moment
of the wrong size would make the fused Adam kernel write out of bounds), every hyperparameter and
scheduler value against the live object's (same type, finite, ``lr`` >= 0, betas in [0, 1)), the RNG
states (tried on throwaway generators), and ``epoch`` and ``step`` (integers >= 0). A key that
``extra`` lacks is a CheckpointError naming the file when it is read. Every failure is one line.

JSON cannot hold every Python value exactly, so a few are tagged: tuples ``{"__tuple__": [...]}``,
dicts with non-string keys ``{"__dict__": [[key, value], ...]}``, numpy arrays
``{"__ndarray__": [...], "dtype": "uint32"}`` and non-finite floats ``{"__float__": "nan"}``;
the round trip is exact (``load(save(state)) == state`` bit for bit).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from vaekit.errors import CheckpointError
from vaekit.store.atomic import atomic_write_bytes, atomic_write_json, remove_stale_temporaries
from vaekit.store.checkpoint_checks import _check_like, _check_optimizer_state, _check_rng, _describe, _records
from vaekit.store.documents import read_versioned_json
from vaekit.store.weights import load_state_strict

__all__ = [
    "TRAINING_STATE_FORMAT_VERSION",
    "capture_rng",
    "checkpoint_paths",
    "load_training_state",
    "restore_rng",
    "save_training_state",
]

TRAINING_STATE_FORMAT_VERSION = 1
_FORMAT = "vaekit-training-state"
_TAGS = ("__tensor__", "__tuple__", "__dict__", "__ndarray__", "__float__")


def checkpoint_paths(path_stem: str | os.PathLike) -> tuple[Path, Path]:
    """The (safetensors, json) pair of files for ``path_stem``."""
    stem = Path(path_stem)
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _pending_path(st_path: Path) -> Path:
    """Where the tensors of a save in progress wait until the JSON commits them."""
    return st_path.with_name(st_path.name + ".next")


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _finish_commit(st_path: Path, json_path: Path) -> None:
    """Complete a save that stopped after committing the JSON but before renaming the tensors."""
    pending = _pending_path(st_path)
    if not pending.is_file():
        return
    try:
        committed = json.loads(json_path.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError, RecursionError):
        return
    if committed is not None and _sha256_file(st_path) != committed and _sha256_file(pending) == committed:
        os.replace(pending, st_path)


def capture_rng() -> dict[str, Any]:
    """The global RNG states: torch CPU (uint8 tensor), CUDA (list, if initialised), numpy, python."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(),
                           "numpy": np.random.get_state(legacy=False),
                           "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the global RNG states recorded by :func:`capture_rng` (missing entries are left alone)."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "numpy" in rng:
        np.random.set_state(rng["numpy"])
    if "python" in rng:
        random.setstate(rng["python"])


# --- exact JSON encoding with tensors set aside -------------------------------------------------

def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-ready copy of ``obj``; tensors go to ``tensors[key]`` (key = dotted path)."""
    if isinstance(obj, torch.Tensor):
        if key in tensors:
            raise CheckpointError(f"checkpoint: two values map to the same tensor key {key!r}")
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), key, tensors)
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k in _TAGS for k in obj):
            return {k: _encode(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in obj):
            raise CheckpointError(f"checkpoint: {key} has keys that are neither strings nor integers")
        return {"__dict__": [[k, _encode(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    raise CheckpointError(f"checkpoint: {key} holds a {type(obj).__name__}, which cannot be stored "
                          "(only tensors, numbers, strings, lists, tuples, dicts and numpy arrays)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor], source: Path) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(obj, list):
        return [_decode(v, tensors, source) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        try:
            return tensors.pop(obj["__tensor__"])
        except KeyError:
            raise CheckpointError(f"{source}: tensor {obj['__tensor__']!r} is missing from the weights file") from None
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, source) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {k: _decode(v, tensors, source) for k, v in obj["__dict__"]}
    if "__ndarray__" in obj:
        return np.array(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
    if "__float__" in obj:
        return float(obj["__float__"])
    return {k: _decode(v, tensors, source) for k, v in obj.items()}


# --- save / load --------------------------------------------------------------------------------

def save_training_state(path_stem: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any | None, epoch: int, step: int, rng: dict[str, Any],
                        extra: dict[str, Any]) -> tuple[Path, Path]:
    """Write the full training state to ``path_stem``.safetensors + ``path_stem``.json (atomically,
    the JSON last with the sha256 of the safetensors file). Returns the two paths."""
    st_path, json_path = checkpoint_paths(path_stem)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        tensors[f"model.{name}"] = value.detach().to("cpu", copy=True).contiguous()
    doc = {
        "format": _FORMAT,
        "format_version": TRAINING_STATE_FORMAT_VERSION,
        "weights_file": st_path.name,
        "epoch": int(epoch),
        "step": int(step),
        "optimizer": _encode(optimizer.state_dict(), "optim", tensors),
        "scheduler": None if scheduler is None else _encode(scheduler.state_dict(), "sched", tensors),
        "rng": _encode(rng, "rng", tensors),
        "extra": _encode(extra, "extra", tensors),
    }
    data = save_safetensors(tensors)
    doc["sha256"] = hashlib.sha256(data).hexdigest()
    _finish_commit(st_path, json_path)          # a previous save may have stopped before its rename
    for target in (_pending_path(st_path), json_path):
        remove_stale_temporaries(target)        # left by a write that was killed
    pending = atomic_write_bytes(_pending_path(st_path), data)
    atomic_write_json(json_path, doc)           # the commit: from here on the new pair is the checkpoint
    os.replace(pending, st_path)
    return st_path, json_path


def _read_json(path: Path) -> dict[str, Any]:
    doc = read_versioned_json(path, fmt=_FORMAT, max_version=TRAINING_STATE_FORMAT_VERSION,
                              what="training checkpoint", missing="checkpoint not found")
    for key in ("sha256", "epoch", "step", "optimizer", "scheduler", "rng", "extra"):
        if key not in doc:
            raise CheckpointError(f"{path}: missing key {key!r}")
    return doc


# --- checking a loaded state against the live objects --------------------------------------------
# Anyone can edit last.json and recompute the hash, so nothing read is trusted: every optimizer state
# tensor is checked against its parameter (a wrong-sized Adam moment makes the fused kernel write out
# of bounds), every hyperparameter against the live optimizer's, before torch sees them.

def _retuple(saved: Any, current: Any) -> Any:
    """Give a loaded param_group value the container type the live optimizer uses."""
    if isinstance(current, tuple) and isinstance(saved, list):
        return tuple(saved)
    return saved


def load_training_state(path_stem: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any | None = None) -> dict[str, Any]:
    """Restore ``model``, ``optimizer`` and ``scheduler`` exactly from ``path_stem``; return
    ``{"epoch", "step", "rng", "extra"}``. The RNG states are returned, not applied (see
    :func:`restore_rng`). A missing, torn, corrupt or mismatched checkpoint is a CheckpointError."""
    st_path, json_path = checkpoint_paths(path_stem)
    doc = _read_json(json_path)
    data = None
    for candidate in (st_path, _pending_path(st_path)):    # .next: a save committed but not yet renamed
        if candidate.is_file():
            candidate_data = candidate.read_bytes()
            if hashlib.sha256(candidate_data).hexdigest() == doc["sha256"]:
                data = candidate_data
                break
    if data is None:
        if not st_path.is_file():
            raise CheckpointError(f"{st_path}: checkpoint weights not found (beside {json_path.name})")
        raise CheckpointError(f"{st_path}: contents do not match the hash in {json_path.name} "
                              "(torn or corrupted checkpoint)")
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{st_path}: not a readable safetensors file ({exc})") from None

    epoch, step = doc["epoch"], doc["step"]
    for name, value in (("epoch", epoch), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{json_path}: {name} is {value!r}, expected an integer >= 0")
    model_state = {k[len("model."):]: tensors.pop(k) for k in [k for k in tensors if k.startswith("model.")]}
    try:
        optim_state = _decode(doc["optimizer"], tensors, st_path)
        sched_state = None if doc["scheduler"] is None else _decode(doc["scheduler"], tensors, st_path)
        rng = _decode(doc["rng"], tensors, st_path)
        extra = _records(_decode(doc["extra"], tensors, st_path), json_path, "extra")
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{json_path}: malformed checkpoint ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())})") from None
    if tensors:
        raise CheckpointError(f"{st_path}: unexpected tensors {sorted(tensors)[:3]} not referenced by {json_path.name}")
    if not isinstance(extra, dict):
        raise CheckpointError(f"{json_path}: extra is {_describe(extra)}, expected an object")

    load_state_strict(model, model_state, st_path, "the model")
    _check_optimizer_state(optim_state, optimizer, json_path, st_path)
    if scheduler is not None and sched_state is not None:
        _check_like(sched_state, scheduler.state_dict(), "scheduler", json_path)
    _check_rng(rng, json_path)
    try:
        for saved, current in zip(optim_state["param_groups"], optimizer.param_groups, strict=False):
            for key, value in list(saved.items()):
                saved[key] = _retuple(value, current.get(key))
        optimizer.load_state_dict(optim_state)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{json_path}: optimizer state does not match the optimizer ({exc})") from None
    if (scheduler is None) != (sched_state is None):
        raise CheckpointError(f"{json_path}: the checkpoint {'has no' if sched_state is None else 'has a'} "
                              "learning-rate scheduler state but the training run "
                              f"{'uses' if sched_state is None else 'does not use'} one")
    if scheduler is not None:
        try:
            scheduler.load_state_dict(sched_state)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{json_path}: scheduler state does not match ({exc})") from None
    return {"epoch": epoch, "step": step, "rng": rng, "extra": extra}
