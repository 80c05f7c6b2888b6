"""The posterior gap taken apart: amortisation gap and approximation gap (Cremer, Li & Duvenaud 2018,
"Inference Suboptimality in Variational Autoencoders").

For an example x, with q_x the encoder's posterior and Q the family it belongs to (diagonal or full
Gaussian; for an IAF posterior T_h # N(μ, diag σ²) the members with any (μ, σ, h) and the flow's trained
networks fixed, :meth:`vaekit.prob.flows.FlowPosterior.free_parameters`), let q*_x = argmax_{q ∈ Q} ELBO(x; q),
the best member of the family for x. Then

    log p(x) − ELBO(x; q_x) = [ELBO(x; q*_x) − ELBO(x; q_x)] + [log p(x) − ELBO(x; q*_x)]
         posterior gap      =        amortisation gap         +      approximation gap

The amortisation gap is what a better encoder g, h could recover; the approximation gap is what only a
richer family could. q*_x is found by :func:`refine_posterior`: stochastic gradient ascent on

    ELBO(x; q) = E_q[log p(x|z)] − KL(q || p(z))

over q's free parameters (:mod:`vaekit.prob.families`), starting from q_x, with the model fixed
(Adam, ``samples`` reparameterised draws per step, the learning rate decayed to 0 by a cosine over
``steps``). The optimiser finds a member at least as good as q_x up to Monte Carlo noise, never a
better one than q*_x, so the measured amortisation gap is, in expectation, a lower bound and the
approximation gap an upper bound (with log p(x) itself estimated by importance sampling, whose
downward bias shrinks the latter again).

Everything here is a function of the model protocol; the model is left unchanged (eval mode within,
no gradients kept on its parameters).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.distributions.kl import kl_divergence as closed_form_kl

from vaekit.errors import ConfigError
from vaekit.inference.estimators import default_chunk_size, evaluation_mode
from vaekit.inference.objectives import check_batch
from vaekit.models.protocol import LatentModel, with_labels
from vaekit.prob.distributions import kl_divergence, noise_shape, rsample_with_log_prob
from vaekit.prob.families import free_parameters

__all__ = ["Refinement", "refine_posterior", "elbo_of", "GapTerms", "gap_terms"]


@dataclass(frozen=True)
class Refinement:
    """Settings of the per-example optimisation: Adam ``steps`` at learning rate ``lr`` (cosine-decayed
    to 0), ``samples`` reparameterised draws of z per example and step."""

    steps: int = 500
    lr: float = 0.05
    samples: int = 16

    def __post_init__(self) -> None:
        for name, value in (("steps", self.steps), ("samples", self.samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"refinement {name}: must be an integer >= 1, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (
                math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"refinement lr: must be a finite number > 0, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _elbo_draws(model: LatentModel, x: Tensor, q: Distribution, eps: Tensor | None, n: int) -> Tensor:
    """E_q[log p(x|z)] over n draws (ε given or drawn) − KL(q || p(z)) (closed form where registered), (B,)."""
    z, log_q = rsample_with_log_prob(q, n, eps)                   # (n, B, K), (n, B)
    return model.log_px(x, z).mean(0) - kl_divergence(q, model.prior(), z, log_q)


def refine_posterior(model: LatentModel, x: Tensor, refinement: Refinement | None = None, *,
                     posterior: Distribution | None = None, y: Any = None) -> Distribution:
    """q*_x: the member of the posterior's family that maximises each example's ELBO, found by Adam
    from ``posterior`` (default: the encoder's q_x) with the model fixed. Returns a distribution of
    the same family with batch shape (B,), detached. See the module docstring. ``y``: labels, for a
    conditional model (q*(z|x, y) then maximises the ELBO of x given y)."""
    check_batch(model, x)
    model = with_labels(model, y)
    settings = refinement if refinement is not None else Refinement()
    with evaluation_mode(model):
        with torch.no_grad():
            start = model.encode(x) if posterior is None else posterior
        try:
            family = free_parameters(start)
        except NotImplementedError as exc:
            raise ConfigError(f"refine: the model's posterior has no per-example family to optimise ({exc})") from None
        optimizer = torch.optim.Adam(family.params, lr=settings.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(1.0, t / settings.steps))))
        with torch.enable_grad():
            for _ in range(settings.steps):
                loss = -_elbo_draws(model, x, family.distribution(), None, settings.samples).sum()
                # gradients for q's parameters only: the model's parameters get none
                grads = torch.autograd.grad(loss, family.params)
                for p, g in zip(family.params, grads, strict=True):
                    p.grad = g
                optimizer.step()
                schedule.step()
        with torch.no_grad():
            return family.build([p.detach() for p in family.params])


@torch.no_grad()
def elbo_of(model: LatentModel, x: Tensor, q: Distribution, *, n_samples: int = 1000,
            eps: Tensor | None = None, chunk_size: int | None = None, y: Any = None) -> Tensor:
    """ELBO(x; q) of a given posterior q (batch (B,)) under the model: E_q[log p(x|z)] by ``n_samples``
    reparameterised draws (``eps`` (n, B, *noise) gives them), taken ``chunk_size`` at a time, minus
    KL(q || p(z)): in closed form where one is registered, else mean [log q(z) − log p(z)] over the same
    draws (a flow posterior: log q(z) from its one pass), shape (B,). ``y``: labels, for a conditional model."""
    check_batch(model, x)
    model = with_labels(model, y)
    if chunk_size is None:
        values = math.prod(x.shape[1:]) * int(getattr(model, "values_per_dim", 1))   # the decoder's output per draw
        chunk_size = default_chunk_size(x.shape[0], values, device=x.device)
    with evaluation_mode(model):
        prior = model.prior()
        try:
            kl: Tensor | None = closed_form_kl(q, prior).double()
        except NotImplementedError:                     # a flow posterior, a learned prior: KL by the draws
            kl = None
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        done = 0
        while done < n_samples:
            k = min(chunk_size, n_samples - done)
            z, log_q = rsample_with_log_prob(q, k, None if eps is None else eps[done:done + k])
            log_w = model.log_px(x, z) if kl is not None else model.log_px(x, z) + prior.log_prob(z) - log_q
            total += log_w.double().sum(0)
            done += k
    return (total / n_samples - (0 if kl is None else kl)).to(x.dtype)


@dataclass(frozen=True)
class GapTerms:
    """Per example, shape (B,): the ELBO of the encoder's q_x and of the refined q*_x, from the same
    ``elbo_samples`` draws (common random numbers make their difference precise), and q*_x itself."""

    elbo: Tensor
    refined_elbo: Tensor
    refined: Distribution


@torch.no_grad()
def gap_terms(model: LatentModel, x: Tensor, refinement: Refinement | None = None, *, elbo_samples: int = 1000,
              chunk_size: int | None = None, y: Any = None) -> GapTerms:
    """ELBO(x; q_x) and ELBO(x; q*_x) for x (B, *data_shape); with log p̂(x) from
    :func:`vaekit.inference.estimators.estimate_log_likelihood` the amortisation gap is
    ``refined_elbo - elbo`` and the approximation gap ``log p̂(x) - refined_elbo``. ``y``: labels, for a
    conditional model."""
    check_batch(model, x)
    model = with_labels(model, y)
    with evaluation_mode(model):
        q = model.encode(x)
        refined = refine_posterior(model, x, refinement, posterior=q)
        shape = noise_shape(q)
        eps = None
        if shape is not None:
            eps = torch.randn((elbo_samples, x.shape[0], *shape), dtype=x.dtype, device=x.device)
        elbo = elbo_of(model, x, q, n_samples=elbo_samples, eps=eps, chunk_size=chunk_size)
        refined_elbo = elbo_of(model, x, refined, n_samples=elbo_samples, eps=eps, chunk_size=chunk_size)
    return GapTerms(elbo, refined_elbo, refined)
