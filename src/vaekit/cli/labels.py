"""The labels of the command line's data, for conditional models (``vaekit train --conditional``,
:mod:`vaekit.models.conditional`) and the commands that read their runs.

Where labels come from (:func:`vaekit.data.load_dataset`): digits, mnist and fashion-mnist have them; an
IDX images file has those of the labels file beside it (``train-images-idx3-ubyte`` → ``train-labels-idx1-ubyte``);
an ``.npz`` file those under ``y`` (or ``labels``); a folder of class sub-folders is labelled by sub-folder
(class names: the sub-folders' names); a ``.csv`` file those of ``--label-column``. ``--conditional`` takes
the number of classes C from the data: the class sub-folders' count, else the largest label + 1 over every
split. Every error is one line naming the option or the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from vaekit.models.protocol import LatentModel

__all__ = ["check_label_options", "data_classes", "checked_labels", "training_labels", "draw_samples"]

_SOURCES = ("digits, mnist, fashion-mnist, an IDX images file with its labels file beside it, an .npz file with y, "
            "a folder of class sub-folders, or a .csv file with --label-column")


def check_label_options(values: dict[str, Any]) -> None:
    """Before the data are read: ``--label-column`` needs a .csv ``--data``; ``--conditional`` needs data in
    memory (a ``--stream`` has no labels)."""
    if values.get("label_column") is not None and Path(str(values["data"])).suffix.lower() != ".csv":
        raise ConfigError(f"--label-column: applies to a .csv --data file, not {values['data']}")
    if values.get("conditional") and values.get("stream"):
        raise ConfigError("--conditional: a --stream reads a .npy file, which holds no labels; leave out --stream")


def data_classes(dataset: Any, spec: str) -> tuple[int, tuple[str, ...]]:
    """(C, class names) of ``dataset`` for ``--conditional``: a ConfigError naming --conditional when a split
    has no labels, a negative label is one too."""
    import numpy as np

    parts = [(name, getattr(dataset, name), getattr(dataset, f"{name}_labels")) for name in ("train", "val", "test")]
    parts = [(name, x, y) for name, x, y in parts if x is not None and len(x)]
    if any(y is None for _, _, y in parts):
        raise ConfigError(f"--conditional: --data {spec} has no labels; a conditional model needs the data's "
                          f"labels: {_SOURCES}")
    labels = np.concatenate([y for _, _, y in parts])
    if labels.size and int(labels.min()) < 0:
        raise ConfigError(f"--conditional: --data {spec} has the negative label {int(labels.min())}; class labels "
                          "are 0, 1, ..., C-1")
    if dataset.classes:
        return len(dataset.classes), tuple(dataset.classes)
    return (int(labels.max()) + 1 if labels.size else 1), ()


def checked_labels(labels: np.ndarray | None, num_classes: int, what: str) -> np.ndarray | None:
    """``labels`` of data ``what`` (e.g. "--data x.npz") for a model of ``num_classes`` classes: None for an
    unconditional model (C = 0); for a conditional one, labels in 0..C-1 (else a ConfigError naming ``what``)."""
    if num_classes == 0:
        return None
    if labels is None:
        raise ConfigError(f"{what}: has no labels, and the run's model is conditional (trained with "
                          f"--conditional on {num_classes} classes); give labelled data: {_SOURCES}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ConfigError(f"{what}: label {bad} is not one of the model's {num_classes} classes "
                          f"(0..{num_classes - 1})")
    return labels


def training_labels(dataset: Any, num_classes: int, spec: str) -> tuple[Any, Any]:
    """(train labels, validation labels) for ``vaekit.fit``: None and None unless the model is conditional."""
    return (checked_labels(dataset.train_labels, num_classes, f"--data {spec}"),
            checked_labels(dataset.val_labels, num_classes, f"--data {spec}"))


def draw_samples(model: LatentModel, n: int, label: str | None, generator: Any,
                 mean: bool) -> tuple[Any, int | None, str]:
    """``vaekit sample``'s draws: (samples (n, *data_shape), images per row of a PNG grid or None, what was
    drawn). ``label`` (``--label``, a class index or name) gives n samples of that class; without it a
    conditional model's samples go through the classes 0..C-1 in turn, one z per row of C (the same z in
    every class); an unconditional model takes no ``--label``."""
    from vaekit.models.conditioning import label_index

    classes = int(getattr(model, "num_classes", 0) or 0)
    if label is not None:
        y = label_index(label, classes, getattr(model, "class_names", ()), name="--label")
        return model.sample(n, y, generator=generator, mean=mean), None, f"class {label}, z ~ p(z)"
    if not classes:
        return model.sample(n, generator=generator, mean=mean), None, "z ~ p(z)"
    rows = -(-n // classes)
    grid = model.sample_classes(rows, generator=generator, mean=mean)          # (rows, C, *data_shape)
    return grid.reshape(-1, *grid.shape[2:])[:n], classes, \
        f"classes 0..{classes - 1} in turn, one z ~ p(z) per row of {classes}"
