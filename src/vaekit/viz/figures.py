"""The figures and the HTML report of a run, drawn with :mod:`vaekit.viz.plots` and :mod:`vaekit.viz.report`.

:func:`write_figures` writes into ``run_dir/figures/``:

* ``training-curves.png``   ELBO, KL, reconstruction per epoch and the schedule (when there is a history);
* ``reconstructions.png``   up to 16 examples above E[x|z] at z = E_q[z] (their reconstructions);
* ``prior-samples.png``     E[x|z] for 64 draws z ~ N(0, I) (seeded);
* ``latent-scatter.png``    posterior means E_q[z] (PCA to two dims when K > 2), coloured by label;
* ``latent-traversals.png`` E[x|z] while one coordinate z_u sweeps 9 values in [-3, 3], the
  others fixed at the posterior mean of the first example, for the (up to 8) dims u with the
  largest mean KL(q_x(z_u) || N(0, 1)) (all of them when K <= 8), in index order.

Models with data shape (C, H, W) or (H, W) are drawn as images in [0, 1] (Gaussian means are
clipped to it); other shapes are flattened to tabular vectors and drawn as heatmaps.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import ShapeError
from vaekit.inference.estimators import kl_per_dimension
from vaekit.inference.objectives import check_batch
from vaekit.store.layout import RunLayout
from vaekit.viz import plots
from vaekit.viz.report import write_report

__all__ = ["is_image_shape", "to_display", "write_figures", "write_run_report"]

N_RECONSTRUCTIONS = 16
N_PRIOR_SAMPLES = 64
N_SCATTER = 2000
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


def _device_dtype(model) -> tuple[torch.device, torch.dtype]:
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _encode_means(model, x: Tensor, batch_size: int = 512) -> Tensor:
    return torch.cat([model.summary(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def _traversal_dims(model, x: Tensor) -> list[int]:
    """The (up to 8) latent dims with the largest mean KL(q_x(z_u) || N(0, 1)) over x, in index
    order (so that with K <= 8 every dim is shown and row i is z_i, as plots labels it)."""
    kl = kl_per_dimension(model, x).double().mean(0).cpu().numpy()
    order = sorted(range(len(kl)), key=lambda u: (-kl[u], u))
    return sorted(order[:N_TRAVERSAL_DIMS])


@torch.no_grad()
def write_figures(run_dir: str | os.PathLike, *, model, x: Tensor, labels: np.ndarray | None,
                  history: list[dict], seed: int = 0) -> dict[str, Path]:
    """Write the figures of ``model`` on examples ``x`` (N, *data_shape), as the model sees them,
    into ``run_dir/figures/``; return caption -> path (in the order written).

    ``labels`` (N,) colour the latent scatter (None: one colour); ``history`` is one dict per
    epoch (as in metrics.jsonl; empty: no training curves); ``seed`` seeds the prior samples.
    The model is put in eval mode and restored afterwards.
    """
    check_batch(model, x)
    if labels is not None and len(labels) != x.shape[0]:
        raise ShapeError(f"labels: {len(labels)} labels for {x.shape[0]} examples")
    layout = RunLayout.of(run_dir)
    device, dtype = _device_dtype(model)
    x = x.to(device=device, dtype=dtype)
    shape = tuple(model.data_shape)
    figures: dict[str, Path] = {}
    was_training = model.training
    model.eval()
    try:
        if history:
            figures["Training curves: ELBO, KL and reconstruction term per epoch (nats per example), "
                    "β and learning rate"] = plots.plot_training_curves(history, layout.figure("training-curves"))

        originals = x[:N_RECONSTRUCTIONS]
        figures[f"Reconstructions: {originals.shape[0]} examples (top) and E[x|z] at z = E_q[z] (bottom)"] = \
            plots.plot_reconstructions(to_display(originals, shape), to_display(model.reconstruct(originals), shape),
                                       layout.figure("reconstructions"))

        generator = torch.Generator(device=device).manual_seed(seed)
        samples = model.sample(N_PRIOR_SAMPLES, generator=generator, mean=True)
        figures[f"Prior samples: E[x|z] for {N_PRIOR_SAMPLES} draws z ~ N(0, I) (seed {seed})"] = \
            plots.image_grid(to_display(samples, shape), layout.figure("prior-samples"))

        subset = x[:N_SCATTER]
        means = _encode_means(model, subset).to("cpu", torch.float64).numpy()
        lab = None if labels is None else np.asarray(labels)[:N_SCATTER]
        k = means.shape[1]
        how = "the means" if k <= 2 else f"their first two principal components (K = {k})"
        figures[f"Latent space: posterior means E_q[z] of {subset.shape[0]} examples, {how}"
                + (", coloured by label" if lab is not None else "")] = \
            plots.plot_latent_scatter(means, layout.figure("latent-scatter"), labels=lab)

        dims = _traversal_dims(model, subset)
        base = model.summary(x[:1])[0]                                       # E_q[z], (K,)
        values = torch.as_tensor(TRAVERSAL_VALUES, device=device, dtype=dtype)
        z = base.repeat(len(dims), len(values), 1)                            # (dims, steps, K)
        for row, u in enumerate(dims):
            z[row, :, u] = values
        decoded = model.decoder_mean(z.reshape(-1, model.latent_dim))        # (dims * steps, *shape)
        chosen = "every latent dim" if len(dims) == model.latent_dim else \
            f"the {len(dims)} latent dims with the largest KL: {', '.join(map(str, dims))}"
        caption = (f"Latent traversals: the rows, top to bottom, move {chosen}, over "
                   f"{TRAVERSAL_VALUES[0]:g}..{TRAVERSAL_VALUES[-1]:g}; the other dims stay at the posterior mean "
                   f"of the first example")
        path = layout.figure("latent-traversals")
        if is_image_shape(shape):
            images = to_display(decoded, shape).reshape(len(dims), len(values), *shape)
            figures[caption] = plots.plot_latent_traversals(images, path, values=TRAVERSAL_VALUES, dims=dims)
        else:
            figures[caption + " (heatmap rows: dim by dim, value by value)"] = plots.image_grid(
                to_display(decoded, shape), path,
                title=f"latent traversals: dims {dims}, {len(values)} values each")
    finally:
        model.train(was_training)
    return figures


def write_run_report(run_dir: str | os.PathLike, *, metrics: dict, figures: dict[str, Path], config: dict) -> Path:
    """Write ``run_dir/report.html`` (metrics table, embedded figures, configuration); return its path.

    Metrics whose value is None (e.g. bits per dim of tabular data) are left out.
    """
    shown: Mapping[str, float | int | str] = {k: v for k, v in metrics.items() if v is not None}
    title = f"vaekit run {Path(run_dir).resolve().name}"
    return write_report(run_dir, title=title, metrics=shown, figures=figures, config=config)
