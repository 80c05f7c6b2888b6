"""Class labels for conditional models: the configuration's ``num_classes`` and ``class_names``, checked once
when a :class:`~vaekit.models.config.VAEConfig` is made, and the labels y themselves.

A label is an integer y ∈ {0, …, C−1} (C = ``num_classes``); ``class_names`` (optional, C distinct strings,
e.g. the sub-folder names of a folder of images) name them, so that a label may also be given by name. The
network sees the one-hot vector e_y ∈ {0, 1}^C (:func:`one_hot`). This module imports no model code, so that
the configuration can use it; the model is :mod:`vaekit.models.conditional`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import ConfigError, ShapeError

__all__ = ["MAX_CLASSES", "check_conditioning", "one_hot", "check_labels", "label_index"]

#: The most classes a conditional model may have.
MAX_CLASSES = 100_000


def check_conditioning(num_classes: Any, class_names: Any, *, layers: int, prior: str) -> tuple[int, tuple[str, ...]]:
    """(``num_classes``, ``class_names``) checked: C an integer from 0 (unconditional) to :data:`MAX_CLASSES`,
    the names empty or C distinct non-empty strings; a conditional model has a prior that does not go
    through the encoder (the VampPrior's pseudo-inputs have no labels). A ConfigError names the field
    (``prior`` for that one); ``layers`` is any."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or not 0 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"num_classes: must be an integer from 0 (unconditional) to {MAX_CLASSES}, "
                          f"got {num_classes!r}")
    num_classes = int(num_classes)
    if class_names is None:
        class_names = ()
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise ConfigError(f"class_names: expected a list of strings, got {class_names!r}")
    names = tuple(class_names)
    if names:
        if any(not isinstance(n, str) or not n for n in names):
            raise ConfigError(f"class_names: every name must be a non-empty string, got {list(names)!r}")
        if len(names) != num_classes:
            raise ConfigError(f"class_names: {len(names)} names for num_classes {num_classes}")
        if len(set(names)) != len(names):
            raise ConfigError(f"class_names: the names must differ, got {list(names)!r}")
    if num_classes:
        if prior == "vamp":
            raise ConfigError("prior: the vamp prior encodes pseudo-inputs that have no labels, so it does not "
                              "combine with a conditional model (--conditional); use the standard or mixture prior")
    return num_classes, names


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """e_y: (*y.shape, C) with 1 at index y and 0 elsewhere, in ``dtype``. Computed by comparison, so it
    needs no host synchronisation (an out-of-range label, which :func:`check_labels` refuses, gives zeros)."""
    classes = torch.arange(num_classes, device=y.device)
    return (y.unsqueeze(-1) == classes).to(dtype)


def label_index(label: Any, num_classes: int, class_names: Sequence[str] = (), *, name: str = "label") -> int:
    """The integer label of ``label``: a class name (of ``class_names``, looked up first) or an integer in
    0..C−1 (also as text, e.g. ``"3"`` from a command line); anything else is a ConfigError naming ``name``."""
    if num_classes <= 0:
        raise ConfigError(f"{name}: the model is not conditional (it was trained without labels), so it takes "
                          "no label")
    if isinstance(label, str):
        if label in class_names:
            return list(class_names).index(label)
        text = label.strip()
        if text.lstrip("-").isdigit():
            label = int(text)
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer, str)):
        raise ConfigError(f"{name}: expected a class index or name, got {label!r}")
    if isinstance(label, str) or not 0 <= label < num_classes:
        known = f"{', '.join(class_names)} (or 0..{num_classes - 1})" if class_names else f"0..{num_classes - 1}"
        raise ConfigError(f"{name}: no class {label!r}; the model's {num_classes} classes are {known}")
    return int(label)


def check_labels(y: Any, num_classes: int, *, n: int | None = None, name: str = "y",
                 device: torch.device | str | None = None, class_names: Sequence[str] = ()) -> Tensor:
    """Labels as an int64 tensor on ``device``: a tensor, array or sequence of integers (or of class names),
    shape (n,) (any length when ``n`` is None), every value in 0..C−1; or one label (an int, a name, a 0-d
    tensor) for every example, shape (). A ConfigError or ShapeError names ``name``."""
    if num_classes <= 0:
        raise ConfigError(f"{name}: the model is not conditional (num_classes 0); labels apply to a model "
                          "trained on labels (--conditional, VAEConfig(num_classes=...))")
    if isinstance(y, (str, int, np.integer)) and not isinstance(y, bool):
        return torch.tensor(label_index(y, num_classes, class_names, name=name), device=device)
    if isinstance(y, Sequence) and any(isinstance(v, str) for v in y):
        y = [label_index(v, num_classes, class_names, name=name) for v in y]
    try:
        t = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{name}: expected integer class labels, got {type(y).__name__}") from None
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ConfigError(f"{name}: expected integer class labels, got dtype {t.dtype}")
    if t.ndim > 1 or (n is not None and t.ndim == 1 and t.shape[0] != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise ShapeError(f"{name}: labels of shape {tuple(t.shape)}, expected {want}, one per example")
    if t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ConfigError(f"{name}: label {bad} is outside the model's {num_classes} classes "
                              f"(0..{num_classes - 1})")
    return t.to(device=device, dtype=torch.int64)
