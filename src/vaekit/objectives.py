"""Objectives: pure functions of a model and a batch, returning one value per example, shape (B,).

The seed minimises KL(q_x(z) || p(z|x)) = log p(x) - ELBO(x), i.e. maximises

    ELBO(x) = E_{q_x(z)}[log p(x|z)] - KL(q_x(z) || p(z))                          (nats)

estimated with S reparameterised draws z_s = g(x) + h(x)^{1/2} ε_s, ε_s ~ N(0, I). The
importance-weighted bound of Burda et al. (2016) tightens it with K draws:

    L_K(x) = E[ log (1/K) Σ_k w_k ],  w_k = p(x|z_k) p(z_k) / q_x(z_k),   ELBO = L_1 <= L_K <= log p(x).

Only the training loop reduces over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from .distributions import DiagonalNormal, kl_divergence, rsample_with_log_prob
from .errors import ConfigError, ShapeError

__all__ = ["ELBOTerms", "elbo_terms", "elbo", "iwae_bound", "log_importance_weights", "importance_terms",
           "check_batch"]


def check_batch(model, x: Tensor) -> None:
    """Raise a ShapeError unless x has shape (B, *model.data_shape) with B >= 1."""
    shape = tuple(model.data_shape)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] == 0:
        raise ShapeError(f"batch of shape {tuple(x.shape)} does not match (batch, *{shape}) expected by the model")


def _check_samples(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{name}: must be an integer >= 1, got {n!r}")
    return n


@dataclass(frozen=True)
class ELBOTerms:
    """The ELBO and its two terms, each of shape (B,), in nats per example.

    ``objective = reconstruction - beta * kl`` is what training maximises (``= elbo`` when beta = 1);
    ``kl`` is KL(q_x(z) || p(z)) (after free bits, ``kl_penalty`` is what entered the objective).
    """

    objective: Tensor
    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor
    kl_penalty: Tensor


def elbo_terms(model, x: Tensor, *, beta: float = 1.0, n_samples: int = 1, analytic_kl: bool = True,
               free_bits: float = 0.0, eps: Tensor | None = None) -> ELBOTerms:
    """E_q[log p(x|z)] (mean over ``n_samples`` draws) and KL(q_x(z) || p(z)) (closed form when
    ``analytic_kl`` and one exists, else the Monte Carlo estimate on the same draws).

    ``free_bits`` λ > 0 (Kingma et al. 2016) replaces each latent dimension's KL, averaged over the
    batch, by max(λ, ·) in ``kl_penalty`` (diagonal posteriors only); ``elbo`` is never changed.
    ``eps`` (n_samples, B, latent) gives the reparameterisation's standard-normal draws (see
    :func:`vaekit.distributions.rsample_with_log_prob`); by default torch's generator draws them.
    """
    check_batch(model, x)
    _check_samples(n_samples, "n_samples")
    if not math.isfinite(beta) or beta < 0:
        raise ConfigError(f"beta: must be a finite number >= 0, got {beta!r}")
    q = model.encode(x)                                   # batch (B,), event (K,)
    z, log_q = rsample_with_log_prob(q, n_samples, eps)   # (S, B, K), (S, B)
    reconstruction = model.decode(z).log_prob(x).mean(0)  # (B,)
    prior = model.prior()
    if analytic_kl:
        kl = kl_divergence(q, prior, z)                   # (B,)
    else:
        kl = (log_q - prior.log_prob(z)).mean(0)          # (B,)
    kl_penalty = kl
    if free_bits > 0:
        if not isinstance(q, DiagonalNormal):
            raise ConfigError("free_bits: needs a diagonal posterior (KL per latent dimension)")
        per_dim = 0.5 * (q.loc**2 + q.scale**2 - 1 - 2 * q.scale.log())   # (B, K)
        floor = torch.clamp_min(per_dim.mean(0), free_bits)                # (K,)
        kl_penalty = (per_dim + (floor - per_dim.mean(0)).detach()).sum(-1)
    elbo_value = reconstruction - kl
    return ELBOTerms(reconstruction - beta * kl_penalty, elbo_value, reconstruction, kl, kl_penalty)


def elbo(model, x: Tensor, *, beta: float = 1.0, n_samples: int = 1, analytic_kl: bool = True) -> Tensor:
    """ELBO(x) = E_q[log p(x|z)] - beta KL(q_x(z) || p(z)), shape (B,). See :func:`elbo_terms`."""
    return elbo_terms(model, x, beta=beta, n_samples=n_samples, analytic_kl=analytic_kl).objective


def importance_terms(model, x: Tensor, n_samples: int, *, posterior: Distribution | None = None,
                     eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """log p(x|z_k), log p(z_k) and log q_x(z_k) for K reparameterised draws z_k ~ q_x(z), each (K, B).

    ``posterior``: q_x(z) = ``model.encode(x)`` when already computed (the estimators draw K in
    chunks and encode x once); by default x is encoded here. ``eps`` (K, B, latent): the
    standard-normal draws to use, as in :func:`elbo_terms`.
    """
    check_batch(model, x)
    _check_samples(n_samples, "n_samples")
    q = model.encode(x) if posterior is None else posterior
    z, log_q = rsample_with_log_prob(q, n_samples, eps)   # (K, B, latent), (K, B)
    return model.decode(z).log_prob(x), model.prior().log_prob(z), log_q


def log_importance_weights(model, x: Tensor, n_samples: int, *, posterior: Distribution | None = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q_x(z_k), z_k ~ q_x(z) reparameterised: (K, B).
    ``posterior``: q_x(z) if already computed (see :func:`importance_terms`)."""
    log_px, log_pz, log_q = importance_terms(model, x, n_samples, posterior=posterior)
    return log_px + log_pz - log_q


def iwae_bound(model, x: Tensor, *, n_samples: int) -> Tensor:
    """L_K(x) = log (1/K) Σ_k w_k for one set of K draws (an unbiased estimate of the bound), (B,)."""
    log_w = log_importance_weights(model, x, n_samples)
    return torch.logsumexp(log_w, 0) - math.log(n_samples)
