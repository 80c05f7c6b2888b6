"""The validation figures of one epoch: the ELBO and its terms (and optionally the importance-sampled
log-likelihood) on the fixed validation set, the same whatever the number of ranks."""

from __future__ import annotations

import torch
from torch import Tensor

from vaekit.inference.estimators import estimate_log_likelihood, evaluation_mode
from vaekit.inference.objectives import elbo_terms
from vaekit.models.protocol import LatentModel
from vaekit.training import distributed
from vaekit.training.config import TrainConfig
from vaekit.training.state import STREAM_VALIDATION, derive_seed, seed_global

__all__ = ["validate"]


@torch.no_grad()
def validate(model: LatentModel, x: Tensor, config: TrainConfig, device: torch.device, rank_part: tuple[int, int],
              noise: tuple[int, tuple[int, ...], torch.dtype] | None,
              y: Tensor | None = None) -> tuple[float, float, float, float | None]:
    """Mean ELBO, KL and reconstruction (and log-likelihood if asked) over the fixed validation
    set ``x``, of which this rank evaluates rows ``rank_part`` (sums are added over the ranks). The
    ε of the ELBO are drawn for the whole set from a fixed seed, so the figure does not depend on
    the number of ranks; the importance sampling uses torch's generator, seeded per rank. ``y``: the
    labels of ``x``, for a conditional model."""
    seed_global(device, derive_seed(config.seed, 0, STREAM_VALIDATION, distributed.rank()))
    eps = None
    if noise is not None:
        generator = torch.Generator(device=device).manual_seed(derive_seed(config.seed, 0, STREAM_VALIDATION))
        eps = torch.randn((1, x.shape[0], *noise[1]), generator=generator, device=device, dtype=noise[2])
    lo, hi = rank_part
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    with evaluation_mode(model):
        for start in range(lo, hi, config.batch_size):
            end = min(hi, start + config.batch_size)
            chunk, labels = x[start:end], None if y is None else y[start:end]
            t = elbo_terms(model, chunk, n_samples=1, eps=None if eps is None else eps[:, start:end], y=labels)
            sums[:3] += torch.stack([t.elbo.sum(), t.kl.sum(), t.reconstruction.sum()]).double()
            if config.val_importance_samples:
                est = estimate_log_likelihood(model, chunk, n_samples=config.val_importance_samples, y=labels)
                sums[3] += est.log_likelihood.double().sum()
    elbo, kl, rec, ll = (distributed.all_reduce_sum(sums) / x.shape[0]).tolist()
    return elbo, kl, rec, (ll if config.val_importance_samples else None)
