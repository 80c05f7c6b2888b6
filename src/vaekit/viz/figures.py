"""The figures of a run, drawn with :mod:`vaekit.viz.plots`; its report.html is :mod:`vaekit.viz.run_report`.

:func:`write_figures` writes into ``run_dir/figures/``:

* ``training-curves.png``   ELBO, KL, reconstruction per epoch and the schedule when it changes (when there
  is a history);
* ``reconstructions.png``   up to 16 examples above E[x|z] at z = E_q[z] (their reconstructions);
* ``prior-samples.png``     E[x|z] for 64 draws z ~ N(0, I) (seeded);
* ``latent-scatter.png``    posterior means E_q[z] (PCA to two dims when K > 2), coloured by label, of up
  to 5000 training examples (a seeded subsample) when the caller gives them;
* ``latent-traversals.png`` E[x|z] while one coordinate z_u sweeps 9 values in [-3, 3], the
  others fixed at the posterior mean of the first example, for the (up to 8) dims u with the
  largest mean KL(q_x(z_u) || N(0, 1)) (all of them when K <= 8), in index order; for a posterior
  without a per-dimension KL (a flow), the largest variance of the posterior means over the examples,
  Cov_x(E_q[z_u]) (the active-units statistic).

Models with data shape (C, H, W) or (H, W) are drawn as images in [0, 1] (Gaussian means are
clipped to it); other shapes are flattened to tabular vectors and drawn as heatmaps. A conditional
model's figures are given the examples' labels, and its prior samples are a grid of classes
(:mod:`vaekit.viz.conditional`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import ConfigError, ShapeError
from vaekit.inference.estimators import kl_per_dimension
from vaekit.inference.evaluate import device_dtype
from vaekit.inference.objectives import check_batch
from vaekit.store.layout import RunLayout
from vaekit.viz import curves, plots
from vaekit.viz.conditional import class_columns, figure_labels, given, prior_samples
from vaekit.viz.run_report import write_run_report

__all__ = ["is_image_shape", "scatter_indices", "to_display", "write_figures", "write_run_report"]

N_RECONSTRUCTIONS = 16
N_PRIOR_SAMPLES = 64
N_SCATTER = 5000
N_TRAVERSAL_DIMS = 8
TRAVERSAL_VALUES = np.linspace(-3.0, 3.0, 9)


def is_image_shape(shape: Sequence[int]) -> bool:
    """True for (C, H, W) with C in {1, 3} and for (H, W): shapes drawn as images."""
    shape = tuple(shape)
    return len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))


def to_display(values: Tensor, data_shape: Sequence[int]) -> np.ndarray:
    """Model-space values (N, *data_shape) as a float32 array for :mod:`vaekit.viz.plots`: images
    clipped to [0, 1] with their shape kept, anything else flattened to (N, D)."""
    arr = values.detach().to("cpu", torch.float32).numpy()
    if is_image_shape(data_shape):
        return np.clip(arr, 0.0, 1.0)
    return arr.reshape(arr.shape[0], -1)


def scatter_indices(count: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of min(count, ``N_SCATTER``) of ``count`` examples, drawn without replacement
    (numpy ``default_rng(seed)``): the training subsample of the latent scatter."""
    n = min(int(count), N_SCATTER)
    return np.sort(np.random.default_rng(seed).choice(int(count), size=n, replace=False))


def _encode_means(model, x: Tensor, labels: Tensor | None = None, batch_size: int = 512) -> Tensor:
    return torch.cat([given(model, labels, slice(i, i + batch_size)).summary(x[i:i + batch_size])
                      for i in range(0, x.shape[0], batch_size)])


def _traversal_dims(model, x: Tensor, means: Tensor) -> tuple[list[int], str]:
    """The (up to 8) latent dims with the largest mean KL(q_x(z_u) || N(0, 1)) over x, in index
    order (so that with K <= 8 every dim is shown and row i is z_i, as plots labels it), and the
    criterion's name. A posterior without a per-dimension KL (a flow) ranks the dims by the
    variance of the posterior means ``means`` (N, K) over the examples instead."""
    try:
        score, criterion = kl_per_dimension(model, x).double().mean(0).cpu().numpy(), "KL"
    except ConfigError:
        score, criterion = means.double().var(0, correction=0).cpu().numpy(), "variance of the posterior means"
    order = sorted(range(len(score)), key=lambda u: (-score[u], u))
    return sorted(order[:N_TRAVERSAL_DIMS]), criterion


@torch.no_grad()
def write_figures(run_dir: str | os.PathLike, *, model, x: Tensor, labels: np.ndarray | None,
                  history: list[dict], seed: int = 0,
                  scatter: tuple[Tensor, np.ndarray | None] | None = None,
                  sample_label: Any = None, columns: Sequence[str] | None = None) -> dict[str, Path]:
    """Write the figures of ``model`` on examples ``x`` (N, *data_shape), as the model sees them,
    into ``run_dir/figures/``; return caption -> path (in the order written).

    ``labels`` (N,) colour the latent scatter (None: one colour); ``history`` is one dict per
    epoch (as in metrics.jsonl; empty: no training curves); ``seed`` seeds the prior samples.
    ``scatter``: (examples, labels) for the latent scatter and the choice of the traversed dims,
    a subsample of the training split (:func:`scatter_indices`: up to ``N_SCATTER``), so that the
    scatter shows thousands of points where a test split has a few hundred; default ``x``, ``labels``.
    The model is put in eval mode and restored afterwards. A conditional model needs the labels of ``x``
    and of ``scatter``; ``sample_label`` (a class index or name) draws its prior samples of that class.
    ``columns``: the names of a table's columns (its CSV header), under the heatmaps of tabular data.
    """
    check_batch(model, x)
    if labels is not None and len(labels) != x.shape[0]:
        raise ShapeError(f"labels: {len(labels)} labels for {x.shape[0]} examples")
    if scatter is not None:
        check_batch(model, scatter[0])
        if scatter[1] is not None and len(scatter[1]) != scatter[0].shape[0]:
            raise ShapeError(f"scatter: {len(scatter[1])} labels for {scatter[0].shape[0]} examples")
    layout = RunLayout.of(run_dir)
    device, dtype = device_dtype(model)
    x = x.to(device=device, dtype=dtype)
    shape = tuple(model.data_shape)
    y = figure_labels(model, labels, x.shape[0], "labels")          # a conditional model's; else None
    figures: dict[str, Path] = {}
    was_training = model.training
    model.eval()
    try:
        if curves.drawn_panels(history):                   # panels with nothing to show are left out
            figures[curves.training_curves_caption(history)] = plots.plot_training_curves(
                history, layout.figure("training-curves"))

        originals = x[:N_RECONSTRUCTIONS]
        figures[f"Reconstructions: {originals.shape[0]} examples (top) and E[x|z] at z = E_q[z] (bottom)"] = \
            plots.plot_reconstructions(to_display(originals, shape),
                                       to_display(given(model, y, slice(0, N_RECONSTRUCTIONS)).reconstruct(originals),
                                                  shape), layout.figure("reconstructions"), columns=columns)

        generator = torch.Generator(device=device).manual_seed(seed)
        samples, per_row, drawn = prior_samples(model, N_PRIOR_SAMPLES, generator, sample_label)
        figures[f"Prior samples: {drawn} (seed {seed})"] = \
            plots.image_grid(to_display(samples, shape), layout.figure("prior-samples"), nrow=per_row,
                             col_labels=class_columns(model, per_row) if is_image_shape(shape) else columns)

        scatter_x, scatter_labels = (x, labels) if scatter is None else scatter
        which = "" if scatter is None else "training "
        subset = scatter_x[:N_SCATTER].to(device=device, dtype=dtype)
        y_subset = figure_labels(model, scatter_labels, subset.shape[0], "scatter labels")
        mean_z = _encode_means(model, subset, y_subset)                      # E_q[z], (N, K)
        means = mean_z.to("cpu", torch.float64).numpy()
        lab = None if scatter_labels is None else np.asarray(scatter_labels)[:N_SCATTER]
        k = means.shape[1]
        how = "the means" if k <= 2 else f"their first two principal components (K = {k})"
        figures[f"Latent space: posterior means E_q[z] of {subset.shape[0]} {which}examples, {how}"
                + (", coloured by label" if lab is not None else "")] = \
            plots.plot_latent_scatter(means, layout.figure("latent-scatter"), labels=lab)

        dims, criterion = _traversal_dims(given(model, y_subset, slice(None)), subset, mean_z)
        base = given(model, y, slice(0, 1)).summary(x[:1])[0]               # E_q[z], (K,)
        values = torch.as_tensor(TRAVERSAL_VALUES, device=device, dtype=dtype)
        z = base.repeat(len(dims), len(values), 1)                            # (dims, steps, K)
        for row, u in enumerate(dims):
            z[row, :, u] = values
        decoded = given(model, y, 0).decoder_mean(z.reshape(-1, model.latent_dim))   # (dims * steps, *shape)
        chosen = "every latent dim" if len(dims) == model.latent_dim else \
            f"the {len(dims)} latent dims with the largest {criterion}: {', '.join(map(str, dims))}"
        caption = (f"Latent traversals: the rows, top to bottom, move {chosen}, over "
                   f"{TRAVERSAL_VALUES[0]:g}..{TRAVERSAL_VALUES[-1]:g}; the other dims stay at the posterior mean "
                   f"of the first example" + ("" if y is None else ", decoded in its class"))
        path = layout.figure("latent-traversals")
        if is_image_shape(shape):
            images = to_display(decoded, shape).reshape(len(dims), len(values), *shape)
            figures[caption] = plots.plot_latent_traversals(images, path, values=TRAVERSAL_VALUES, dims=dims)
        else:
            figures[caption + " (heatmap rows: dim by dim, value by value)"] = plots.image_grid(
                to_display(decoded, shape), path, col_labels=columns,
                title=f"latent traversals: dims {dims}, {len(values)} values each")
    finally:
        model.train(was_training)
    return figures
