"""Checks of a training checkpoint's contents before anything is loaded from it: every optimiser state
tensor against its parameter (shape, dtype, finiteness), the parameter groups' hyperparameters, the
scheduler state against the live one, and the RNG states; a missing key in the JSON is reported as one
line naming the file. A crafted checkpoint (the sha256 in last.json detects corruption, not
tampering) is refused with a :class:`~vaekit.errors.CheckpointError` instead of crashing a kernel."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.errors import CheckpointError

__all__ = ["_records", "_describe", "_check_like", "_check_optimizer_state", "_check_rng"]


class _MissingKey(CheckpointError, KeyError):
    """A key the reader needs is not in the checkpoint (a KeyError too, for ``except KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0])


class _Record(dict):
    """A JSON object of a checkpoint's ``extra``: reading a key it lacks is a CheckpointError naming
    the file and the key (``get`` and ``in`` behave as for any dict)."""

    def __init__(self, items: dict[str, Any], source: Path, where: str) -> None:
        super().__init__(items)
        self.source, self.where = source, where

    def __missing__(self, key: Any) -> Any:
        raise _MissingKey(f"{self.source}: malformed checkpoint (no {self.where}.{key})")


def _records(obj: Any, source: Path, where: str) -> Any:
    """``obj`` with every JSON object (dict with string keys) turned into a :class:`_Record`."""
    if isinstance(obj, list):
        return [_records(v, source, f"{where}.{i}") for i, v in enumerate(obj)]
    if type(obj) is dict and all(isinstance(k, str) for k in obj):
        return _Record({k: _records(v, source, f"{where}.{k}") for k, v in obj.items()}, source, where)
    return obj


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_tensor(value: torch.Tensor, where: str, source: Path, *, shape: tuple[int, ...],
                  dtype: torch.dtype | None, non_negative: bool = False) -> None:
    if tuple(value.shape) != shape or (dtype is not None and value.dtype != dtype):
        want = f"a {str(dtype).removeprefix('torch.')} tensor" if dtype is not None else "a tensor"
        raise CheckpointError(f"{source}: {where} is {_describe(value)}, expected {want} of shape {list(shape)}")
    if value.is_floating_point() and value.numel() and not bool(value.isfinite().all()):
        raise CheckpointError(f"{source}: {where} holds non-finite values (NaN or Inf)")
    if non_negative and value.numel() and bool((value < 0).any()):
        raise CheckpointError(f"{source}: {where} holds negative values")


def _check_like(saved: Any, current: Any, where: str, source: Path) -> None:
    """``saved`` (read from the checkpoint) must have the form of ``current`` (the live object's
    state_dict value): the same kind of scalar, a finite number for a finite number, a tensor of the same
    shape and dtype, a container of the same length and keys (a key the live object lacks holds a
    scalar only: it may come from another torch version)."""
    ok = True
    if isinstance(current, bool):          # torch's flags (foreach, fused, ...) take None for "the default"
        ok = isinstance(saved, bool) or saved is None
    elif _is_number(current):              # an int and a float stand for each other (0 and 0.0)
        ok = _is_number(saved) and (math.isfinite(saved) or not math.isfinite(current))
    elif isinstance(current, str):
        ok = isinstance(saved, str)
    elif current is None:
        ok = saved is None or isinstance(saved, (bool, int, float, str))
    elif isinstance(current, torch.Tensor):
        if not isinstance(saved, torch.Tensor):
            ok = False
        else:
            _check_tensor(saved, where, source, shape=tuple(current.shape), dtype=current.dtype)
    elif isinstance(current, np.ndarray):
        ok = isinstance(saved, np.ndarray) and saved.shape == current.shape and saved.dtype == current.dtype
    elif isinstance(current, (list, tuple)):
        ok = isinstance(saved, (list, tuple)) and len(saved) == len(current)
        if ok:
            for i, (s, c) in enumerate(zip(saved, current, strict=True)):
                _check_like(s, c, f"{where}[{i}]", source)
    elif isinstance(current, dict):
        ok = isinstance(saved, dict)
        if ok:
            for key, value in saved.items():
                if key in current:
                    _check_like(value, current[key], f"{where}.{key}", source)
                elif not (value is None or isinstance(value, (bool, int, float, str))):
                    raise CheckpointError(f"{source}: {where}.{key} is {_describe(value)}, "
                                          "which this torch does not use")
    if not ok:
        raise CheckpointError(f"{source}: {where} is {_describe(saved)}, expected {_kind(current)}")


def _kind(value: Any) -> str:
    """What a value like ``value`` is, in words (for "expected ...")."""
    if isinstance(value, bool):
        return "true, false or null"
    if _is_number(value):
        return "a finite number" if math.isfinite(value) else "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null or a scalar"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {list(value.shape)}"
    return type(value).__name__


#: Hyperparameters that are never negative (torch's optimizers refuse negative values when made).
_NON_NEGATIVE = ("lr", "initial_lr", "eps", "weight_decay", "momentum", "dampening", "alpha", "lr_decay")


def _check_optimizer_state(saved: Any, optimizer: torch.optim.Optimizer, source: Path, tensors_in: Path) -> None:
    """Refuse an optimizer state that does not fit ``optimizer`` before torch reads it: the param
    groups (sizes, parameter indices, each hyperparameter's type and range) and every per-parameter
    state value (a tensor of its parameter's shape and dtype, finite; ``step`` a finite scalar >= 0;
    second moments >= 0). Problems are named in ``source`` (the JSON), a tensor's in ``tensors_in``."""
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("state"), dict):
        raise CheckpointError(f"{source}: optimizer state has no param_groups and state")
    groups = saved["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(f"{source}: optimizer state has {len(groups)} parameter groups, "
                              f"the optimizer {len(optimizer.param_groups)}")
    params: dict[int, torch.Tensor] = {}
    for g, (group, current) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        where = f"optimizer.param_groups[{g}]"
        if not isinstance(group, dict):
            raise CheckpointError(f"{source}: {where} is {_describe(group)}, expected an object")
        ids = group.get("params")
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) \
                or len(ids) != len(current["params"]):
            raise CheckpointError(f"{source}: {where}.params does not list the optimizer's "
                                  f"{len(current['params'])} parameters")
        for index, param in zip(ids, current["params"], strict=True):
            if index in params:
                raise CheckpointError(f"{source}: {where}.params names parameter {index} twice")
            params[index] = param
        _check_like({k: v for k, v in group.items() if k != "params"},
                    {k: v for k, v in current.items() if k != "params"}, where, source)
        for key in _NON_NEGATIVE:
            value = group.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise CheckpointError(f"{source}: {where}.{key} is {value}, expected a number >= 0")
        betas = group.get("betas")
        if isinstance(betas, (list, tuple)) and not all(_is_number(b) and 0 <= b < 1 for b in betas):
            raise CheckpointError(f"{source}: {where}.betas is {list(betas)}, expected numbers in [0, 1)")
    for index, values in saved["state"].items():
        where = f"optimizer.state[{index!r}]"
        if index not in params:
            raise CheckpointError(f"{source}: {where} belongs to no parameter of the optimizer")
        if not isinstance(values, dict):
            raise CheckpointError(f"{source}: {where} is {_describe(values)}, expected an object")
        param = params[index]
        for name, value in values.items():
            tensor = f"tensor optim.state.{index}.{name}"
            if name == "step":             # a scalar count: a 0-d tensor (float32 for fused Adam) or a number
                if isinstance(value, torch.Tensor):
                    if value.dtype == torch.bool or value.is_complex():
                        raise CheckpointError(f"{tensors_in}: {tensor} is {_describe(value)}, expected a number")
                    _check_tensor(value, tensor, tensors_in, shape=(), dtype=None, non_negative=True)
                elif not (_is_number(value) and math.isfinite(value) and value >= 0):
                    raise CheckpointError(f"{source}: {where}.step is {_describe(value)}, expected a number >= 0")
            elif isinstance(value, torch.Tensor):
                _check_tensor(value, tensor, tensors_in, shape=tuple(param.shape), dtype=param.dtype,
                              non_negative=name.endswith("_sq"))
            elif value is not None and not (_is_number(value) and math.isfinite(value)):
                raise CheckpointError(f"{source}: {where}.{name} is {_describe(value)}, "
                                      "expected a tensor or a number")


def _check_rng(rng: Any, source: Path) -> None:
    """Try the RNG states a checkpoint holds on throwaway generators (the global ones are untouched)."""
    if not isinstance(rng, dict):
        raise CheckpointError(f"{source}: rng is {_describe(rng)}, expected an object")
    trials = {"torch": lambda state: torch.Generator().set_state(state),
              "numpy": lambda state: np.random.RandomState().set_state(state),
              "python": lambda state: random.Random().setstate(state)}
    for name, trial in trials.items():
        if name in rng:
            try:
                trial(rng[name])
            except (TypeError, ValueError, KeyError, RuntimeError, IndexError) as exc:
                raise CheckpointError(f"{source}: rng.{name} is not a valid generator state "
                                      f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
