"""Objectives: pure functions of a model and a batch, returning one value per example, shape (B,).

The seed minimises KL(q_x(z) || p(z|x)) = log p(x) - ELBO(x), i.e. maximises

    ELBO(x) = E_{q_x(z)}[log p(x|z)] - KL(q_x(z) || p(z))                          (nats)

estimated with S reparameterised draws z_s = g(x) + h(x)^{1/2} ε_s, ε_s ~ N(0, I). The
importance-weighted bound of Burda et al. (2016) tightens it with K draws:

    L_K(x) = E[ log (1/K) Σ_k w_k ],  w_k = p(x|z_k) p(z_k) / q_x(z_k),   ELBO = L_1 <= L_K <= log p(x).

The functions use only the model protocol (:class:`~vaekit.models.protocol.LatentModel`):
``encode``, ``prior``, ``log_px``, ``log_pz``. :class:`ELBO` and :class:`IWAE` are the same
objectives as objects with their options, which is what the trainer is handed
(:data:`OBJECTIVES` maps the configuration's names to them). Only the training loop reduces over
the batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.errors import ConfigError, ShapeError
from vaekit.models.protocol import LatentModel, with_labels
from vaekit.prob.chain import MarkovChain, layer_kl_terms
from vaekit.prob.distributions import Reduction, kl_divergence, kl_summed_over_dimensions, rsample_with_log_prob

__all__ = ["ELBOTerms", "elbo_terms", "elbo", "iwae_bound", "log_importance_weights", "importance_terms",
           "check_batch", "evaluation_mode", "Objective", "ELBO", "IWAE", "OBJECTIVES", "make_objective"]


def check_batch(model: LatentModel, x: Tensor) -> None:
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
    """The objective, the ELBO and its two terms, each of shape (B,), in nats per example.

    ``objective`` is what training maximises: ``reconstruction - beta * kl_penalty`` for the ELBO
    (``= elbo`` when beta = 1 and no free bits), L_K for the IWAE bound. ``kl`` is
    KL(q_x(z) || p(z)) (after free bits, ``kl_penalty`` is what entered the objective). ``is_bound``: whether
    ``objective`` is a lower bound on log p(x) (not with free bits or β < 1: then it may exceed the ELBO).
    """

    objective: Tensor
    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor
    kl_penalty: Tensor
    is_bound: bool = True


@contextlib.contextmanager
def evaluation_mode(model: LatentModel) -> Iterator[None]:
    """``model.eval()`` within the block, then the mode it had (the estimators' guard: a model in
    training mode would refit a profiled decoder variance to the data it is measured on)."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def elbo_terms(model: LatentModel, x: Tensor, *, beta: float = 1.0, n_samples: int = 1, analytic_kl: bool = True,
               free_bits: float = 0.0, eps: Tensor | None = None, reduce: Reduction | None = None,
               y: Any = None) -> ELBOTerms:
    """E_q[log p(x|z)] (mean over ``n_samples`` draws) and KL(q_x(z) || p(z)) (closed form when
    ``analytic_kl`` and one exists, else the Monte Carlo estimate on the same draws). With several stochastic
    layers and both chains drawn in the same direction (top-down inference) the KL is Σ_l of the per-layer
    KLs, each analytic between Gaussian conditionals (:func:`~vaekit.prob.chain.layer_kl_terms`).

    ``free_bits`` λ > 0 (Kingma et al. 2016) replaces each group's KL, averaged over the batch, by max(λ, ·)
    in ``kl_penalty``: a group whose batch mean is at most λ contributes the constant λ, with no gradient;
    the others their KL. The groups are the stochastic layers of a model with several (any posterior; the
    layer terms of :func:`~vaekit.prob.chain.layer_kl_terms`), else the latent dimensions, only where the KL
    is their sum (a diagonal Gaussian q against a diagonal Gaussian p); anything else (a full covariance, a
    flow, a mixture prior: their marginal KLs do not sum to the KL) is a ConfigError. ``elbo`` is never
    changed; the objective is then not a bound (``is_bound`` False). The batch mean is ``reduce``'s (the
    global batch under data parallelism), so the choice of groups does not depend on the number of ranks.
    ``eps`` (n_samples, B, latent) gives the reparameterisation's standard-normal draws
    (see :func:`vaekit.prob.distributions.rsample_with_log_prob`);
    by default torch's generator draws them. ``reduce``: the batch mean a profiled decoder variance uses.
    ``y`` (B,): the examples' labels, for a conditional model (then every term is given y: q(z|x, y),
    p(x|z, y)); :func:`vaekit.models.conditional.with_labels` refuses a missing or superfluous one.

    The objective's building block: on a model in training mode a profiled decoder variance is fitted
    to x (c* = ``reduce`` of the squared residuals) and folded into its running value.
    """
    check_batch(model, x)
    model = with_labels(model, y)
    _check_samples(n_samples, "n_samples")
    if not math.isfinite(beta) or beta < 0:
        raise ConfigError(f"beta: must be a finite number >= 0, got {beta!r}")
    q = model.encode(x)                                          # batch (B,), event (K,)
    z, log_q = rsample_with_log_prob(q, n_samples, eps)          # (S, B, K), (S, B)
    reconstruction = model.log_px(x, z, reduce=reduce).mean(0)   # (B,)
    prior = model.prior()
    per_layer = None
    if isinstance(q, MarkovChain) and isinstance(prior, MarkovChain) and (q.order == prior.order or free_bits > 0):
        per_layer = layer_kl_terms(q, prior, z, analytic=analytic_kl).mean(0)      # (B, L)
        kl = per_layer.sum(-1)                                                 # (B,)
    elif analytic_kl:
        kl = kl_divergence(q, prior, z, log_q)                   # (B,)
    else:
        kl = (log_q - model.log_pz(z)).mean(0)                   # (B,)
    kl_penalty = kl
    if free_bits > 0:
        groups = per_layer if per_layer is not None else _kl_by_dimension(q, prior)   # (B, G)
        stat = groups.detach()
        batch_mean = (stat.mean(0) if reduce is None
                      else torch.stack([reduce(stat[:, i]) for i in range(stat.shape[-1])]))
        active = batch_mean > free_bits                          # (G,): batch-mean KL above λ
        kl_penalty = torch.where(active, groups, torch.full_like(groups, free_bits)).sum(-1)
    elbo_value = reconstruction - kl
    return ELBOTerms(reconstruction - beta * kl_penalty, elbo_value, reconstruction, kl, kl_penalty,
                     is_bound=free_bits == 0 and beta >= 1)


def _kl_by_dimension(q: Distribution, p: Distribution) -> Tensor:
    """KL(q_i || p_i) per latent dimension, (B, K), where they sum to KL(q || p): both diagonal Gaussians over
    vectors; otherwise the ConfigError that free bits per dimension would not mean what they say."""
    try:
        return kl_summed_over_dimensions(q, p)
    except NotImplementedError as exc:
        raise ConfigError(f"free_bits: need a KL that is a sum over latent dimensions (a diagonal Gaussian posterior "
                          f"and a diagonal Gaussian prior) or several stochastic layers; {exc}") from None


def elbo(model: LatentModel, x: Tensor, *, beta: float = 1.0, n_samples: int = 1, analytic_kl: bool = True,
         y: Any = None) -> Tensor:
    """ELBO(x) = E_q[log p(x|z)] - beta KL(q_x(z) || p(z)), shape (B,). See :func:`elbo_terms`.

    An estimator: the model is evaluated in eval mode (a profiled decoder variance uses its running
    c, never one refitted to x) and left as it was, so the value is the same in either mode.
    Gradients flow as usual; to train, use the objective objects (:class:`ELBO`, :class:`IWAE`).
    ``y``: labels, for a conditional model (:func:`elbo_terms`)."""
    with evaluation_mode(model):
        return elbo_terms(model, x, beta=beta, n_samples=n_samples, analytic_kl=analytic_kl, y=y).objective


def importance_terms(model: LatentModel, x: Tensor, n_samples: int, *, posterior: Distribution | None = None,
                     eps: Tensor | None = None, reduce: Reduction | None = None,
                     y: Any = None) -> tuple[Tensor, Tensor, Tensor]:
    """log p(x|z_k), log p(z_k) and log q_x(z_k) for K reparameterised draws z_k ~ q_x(z), each (K, B).

    ``posterior``: q_x(z) = ``model.encode(x)`` when already computed (the estimators draw K in
    chunks and encode x once); by default x is encoded here. ``eps`` (K, B, latent): the
    standard-normal draws to use, as in :func:`elbo_terms`. ``y``: labels, for a conditional model.
    """
    check_batch(model, x)
    model = with_labels(model, y)
    _check_samples(n_samples, "n_samples")
    q = model.encode(x) if posterior is None else posterior
    z, log_q = rsample_with_log_prob(q, n_samples, eps)   # (K, B, latent), (K, B)
    return model.log_px(x, z, reduce=reduce), model.log_pz(z), log_q


def log_importance_weights(model: LatentModel, x: Tensor, n_samples: int, *,
                           posterior: Distribution | None = None, y: Any = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q_x(z_k), z_k ~ q_x(z) reparameterised: (K, B).
    ``posterior``: q_x(z) if already computed (see :func:`importance_terms`); ``y``: labels, for a
    conditional model."""
    log_px, log_pz, log_q = importance_terms(model, x, n_samples, posterior=posterior, y=y)
    return log_px + log_pz - log_q


def iwae_bound(model: LatentModel, x: Tensor, *, n_samples: int, y: Any = None) -> Tensor:
    """L_K(x) = log (1/K) Σ_k w_k for one set of K draws (an unbiased estimate of the bound), (B,).
    An estimator, in eval mode like :func:`elbo`; to train, use :class:`IWAE`. ``y``: labels, for a
    conditional model."""
    with evaluation_mode(model):
        log_w = log_importance_weights(model, x, n_samples, y=y)
    return torch.logsumexp(log_w, 0) - math.log(n_samples)


class Objective:
    """A training objective: :meth:`terms` gives, per example, the value to maximise and the ELBO,
    KL and reconstruction to report. ``samples`` draws per example; ``uses_beta``: whether the KL
    weight β (and its warm-up) applies."""

    name: ClassVar[str]
    uses_beta: ClassVar[bool] = False
    samples: int

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        raise NotImplementedError

    def __call__(self, model: LatentModel, x: Tensor, *, beta: float = 1.0) -> Tensor:
        """The value to maximise per example, shape (B,): ``terms(model, x, beta=beta).objective``."""
        return self.terms(model, x, beta=beta).objective


@dataclass(frozen=True)
class ELBO(Objective):
    """E_q[log p(x|z)] - β KL(q_x(z) || p(z)) with ``samples`` draws and ``free_bits`` λ (:func:`elbo_terms`)."""

    name: ClassVar[str] = "elbo"
    uses_beta: ClassVar[bool] = True
    samples: int = 1
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        _check_samples(self.samples, "samples")
        if not math.isfinite(self.free_bits) or self.free_bits < 0:
            raise ConfigError(f"free_bits: must be a finite number >= 0, got {self.free_bits!r}")

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0) -> ELBO:
        return cls(samples=samples, free_bits=free_bits)

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        return elbo_terms(model, x, beta=beta, n_samples=self.samples, free_bits=self.free_bits, eps=eps,
                          reduce=reduce)


@dataclass(frozen=True)
class IWAE(Objective):
    """L_K(x) = log (1/K) Σ_k w_k with K = ``samples``; from the same draws, the ELBO estimate
    mean_k log w_k, the KL estimate mean_k [log q(z_k) - log p(z_k)] and the reconstruction
    mean_k log p(x|z_k)."""

    name: ClassVar[str] = "iwae"
    samples: int = 5

    def __post_init__(self) -> None:
        _check_samples(self.samples, "samples")

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0) -> IWAE:
        if free_bits > 0:
            raise ConfigError("free_bits: applies to objective elbo only, not 'iwae'")
        return cls(samples=samples)

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        """The bound and its parts. A decoder variance profiled out in training (c* = the mean squared
        error, the maximiser of the ELBO) is refused: the maximiser of L_K is a different, importance-
        weighted mean, so training L_K with c* would not train L_K."""
        log_px, log_pz, log_qz = importance_terms(model, x, self.samples, eps=eps, reduce=_no_profiled_variance)
        bound = torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(self.samples)
        reconstruction, kl = log_px.mean(0), (log_qz - log_pz).mean(0)
        return ELBOTerms(bound, reconstruction - kl, reconstruction, kl, kl)


def _no_profiled_variance(values: Tensor) -> Tensor:
    raise ConfigError("objective iwae: the optimal decoder variance (c* = mean squared error) maximises the ELBO, "
                      "not the IWAE bound; use a fixed or learned c (decoder_variance), or objective elbo")


#: Objective names (the configuration's ``objective``) and their classes.
OBJECTIVES: dict[str, type[ELBO] | type[IWAE]] = {"elbo": ELBO, "iwae": IWAE}


def make_objective(name: str, *, samples: int = 1, free_bits: float = 0.0) -> Objective:
    """The objective ``name`` with its options (free bits apply to the ELBO only)."""
    if name not in OBJECTIVES:
        raise ConfigError(f"objective: unknown {name!r}; choose one of {list(OBJECTIVES)}")
    return OBJECTIVES[name].from_options(samples=samples, free_bits=free_bits)
