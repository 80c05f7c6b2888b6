"""What the figures of a conditional model (:mod:`vaekit.models.conditional`) need besides an unconditional
one's: the examples' labels, the model given them, and samples by class.

* reconstructions, the latent scatter and the traversals use q(z|x, y) and p(x|z, y) with each example's
  label (the traversals decode in the class of the example they start from);
* the prior samples are a grid of classes (:func:`prior_samples`): each row one z ~ p(z) decoded in every
  class, one column per class, so that a row shows one "style" in the C classes; or, given a label, every
  sample of that class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import ConfigError
from vaekit.models.conditioning import label_index
from vaekit.models.protocol import LatentModel, with_labels

__all__ = ["figure_labels", "given", "prior_samples", "class_columns"]


def figure_labels(model: LatentModel, labels: np.ndarray | None, n: int, what: str) -> Tensor | None:
    """The labels (n,) of ``what`` (the examples, the scatter's examples) as the model takes them: None for an
    unconditional model; a conditional model needs them (a ConfigError naming ``what``)."""
    classes = int(getattr(model, "num_classes", 0) or 0)
    if not classes:
        return None
    if labels is None:
        raise ConfigError(f"{what}: a conditional model's figures need the examples' labels")
    return model.labels(np.asarray(labels)[:n], n, name=what)


def given(model: LatentModel, labels: Tensor | None, index: slice | int) -> Any:
    """``model`` given ``labels[index]`` (a conditional model), or ``model`` itself (no labels)."""
    return model if labels is None else with_labels(model, labels[index])


def class_columns(model: LatentModel, per_row: int | None) -> list[str] | None:
    """The column labels of a grid of classes (one column per class: ``per_row`` is the number of classes),
    the model's class names or their indices; None for any other grid."""
    classes = int(getattr(model, "num_classes", 0) or 0)
    if not classes or per_row != classes:
        return None
    return list(getattr(model, "class_names", ()) or ()) or [str(c) for c in range(classes)]


def prior_samples(model: LatentModel, n: int, generator: torch.Generator,
                  label: Any = None) -> tuple[Tensor, int | None, str]:
    """(samples, images per row or None, caption's description) of the prior-samples figure: n draws of an
    unconditional model; for a conditional one of C classes, max(1, n // C) rows of one z in every class
    (C per row), or with ``label`` n samples of that class."""
    classes = int(getattr(model, "num_classes", 0) or 0)
    if not classes:
        if label is not None:
            label_index(label, 0, name="sample_label")            # the one-line refusal: not conditional
        return model.sample(n, generator=generator, mean=True), None, f"E[x|z] for {n} draws z ~ p(z)"
    names = tuple(getattr(model, "class_names", ())) or tuple(str(c) for c in range(classes))
    if label is not None:
        y = label_index(label, classes, getattr(model, "class_names", ()), name="sample_label")
        return (model.sample(n, y, generator=generator, mean=True), None,
                f"E[x|z, y] for {n} draws z ~ p(z) of class {names[y]}")
    rows = max(1, n // classes)
    grid = model.sample_classes(rows, generator=generator, mean=True)          # (rows, C, *data_shape)
    return (grid.reshape(-1, *grid.shape[2:]), classes,
            f"E[x|z, y] for {rows} draws z ~ p(z) (rows), each in the {classes} classes y (columns: "
            f"{', '.join(names)})")
