"""Objectives: pure functions of a model and a batch, returning one value per example, shape (B,).

The seed minimises KL(q_x(z) || p(z|x)) = log p(x) - ELBO(x), i.e. maximises

    ELBO(x) = E_{q_x(z)}[log p(x|z)] - KL(q_x(z) || p(z))                          (nats)

estimated with S reparameterised draws z_s = g(x) + h(x)^{1/2} ε_s, ε_s ~ N(0, I). The
importance-weighted bound of Burda et al. (2016) tightens it with K draws:

    L_K(x) = E[ log (1/K) Σ_k w_k ],  w_k = p(x|z_k) p(z_k) / q_x(z_k),   ELBO = L_1 <= L_K <= log p(x).

The functions use only the model protocol (:class:`~vaekit.models.protocol.LatentModel`):
``encode``, ``prior``, ``log_px``, ``log_pz``. :class:`ELBO` and :class:`IWAE` are the same
objectives as objects with their options, which is what the trainer is handed
(:data:`vaekit.inference.training_objectives.OBJECTIVES` maps the configuration's names to them, with
the bounds beyond these two). Only the training loop reduces over the batch. ``gradient`` chooses the
encoder's gradient estimator: "reparam"; "stl" for the ELBO (Roeder et al. 2017); "dreg" for IWAE,
MIWAE and PIWAE (Tucker et al. 2019). Each objective's terms say whether it bounds log p(x)
(:attr:`ELBOTerms.lower_bound`) and carry the ELBO estimate beside it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.errors import ConfigError, ShapeError
from vaekit.inference.bounds import iwae_value, reweight_path_gradient
from vaekit.models.protocol import LatentModel, with_labels
from vaekit.prob.chain import MarkovChain, layer_kl_terms
from vaekit.prob.distributions import (
    Reduction,
    kl_divergence,
    kl_summed_over_dimensions,
    rsample_with_log_prob,
    stop_gradient,
)

__all__ = ["ELBOTerms", "elbo_terms", "elbo", "log_importance_weights", "importance_terms",
           "check_batch", "evaluation_mode", "Objective", "ELBO", "IWAE", "GRADIENTS", "weighted_draws"]


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
    KL(q_x(z) || p(z)) (after free bits, ``kl_penalty`` is what entered the objective). ``lower_bound``: whether
    ``objective`` is a lower bound on log p(x) (not with free bits or β < 1: then it may exceed the ELBO).
    """

    objective: Tensor
    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor
    kl_penalty: Tensor
    #: Whether ``objective`` is (an estimate of) a lower bound on log p(x): False for β < 1, free bits,
    #: β-TC weights other than 1, a Rényi bound with α < 0.
    lower_bound: bool = True
    #: The value whose gradient trains the inference network (the model's ``encoder``) where it differs
    #: from ``objective``, which then trains the other parameters (PIWAE); None: ``objective`` trains all.
    inference_objective: Tensor | None = None


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
    changed; the objective is then not a bound (``lower_bound`` False). The batch mean is ``reduce``'s (the
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
                     lower_bound=free_bits == 0 and beta >= 1)


def _kl_by_dimension(q: Distribution, p: Distribution) -> Tensor:
    """KL(q_i || p_i) per latent dimension, (B, K), where they sum to KL(q || p): both diagonal Gaussians over
    vectors; otherwise the ConfigError that free bits per dimension would not mean what they say."""
    try:
        return kl_summed_over_dimensions(q, p)
    except NotImplementedError as exc:
        raise ConfigError(f"free_bits: need a KL that is a sum over latent dimensions (a diagonal Gaussian posterior "
                          f"and a diagonal Gaussian prior) or several stochastic layers; {exc}") from None


def elbo(model: LatentModel, x: Tensor, *, beta: float = 1.0, n_samples: int = 1, analytic_kl: bool = True,
         y: Any = None, requires_grad: bool = False) -> Tensor:
    """ELBO(x) = E_q[log p(x|z)] - beta KL(q_x(z) || p(z)), shape (B,). See :func:`elbo_terms`.

    An estimator: the model is evaluated in eval mode (a profiled decoder variance uses its running
    c, never one refitted to x) and left as it was, so the value is the same in either mode. It runs
    under ``torch.no_grad`` (no graph kept) unless ``requires_grad``, when gradients flow to the model's
    parameters; to train, use the objective objects (:class:`ELBO`, :class:`IWAE`).
    ``y``: labels, for a conditional model (:func:`elbo_terms`)."""
    with torch.set_grad_enabled(requires_grad), evaluation_mode(model):
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


#: Gradient estimators of an objective's encoder gradient: the plain reparameterised gradient, "sticking
#: the landing" (Roeder et al. 2017) and doubly reparameterised (Tucker et al. 2019).
GRADIENTS = ("reparam", "stl", "dreg")
#: Why a gradient estimator does not apply, by the kind of objective that refuses it.
_NOT_FOR_ELBO = {"dreg": "DReG reweights importance-weighted bounds; for the ELBO use stl"}
_NOT_FOR_IW = {"stl": "STL is biased for importance-weighted bounds (Tucker et al. 2019); use dreg"}


def _check_gradient(name: str, gradient: str, allowed: tuple[str, ...], why: Mapping[str, str] | None = None) -> None:
    if gradient not in GRADIENTS:
        raise ConfigError(f"gradient: unknown {gradient!r}; choose one of {list(GRADIENTS)}")
    if gradient not in allowed:
        reason = (why or {}).get(gradient, "only the reparameterised gradient is implemented for it")
        raise ConfigError(f"gradient: {gradient} does not apply to objective {name} ({reason}); it takes "
                          f"{' or '.join(allowed)}")


def _number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            expected = f"a finite number in [{minimum:g}, {maximum:g}]"
        else:
            expected = "a finite number" + (f" >= {minimum:g}" if minimum is not None else "")
        raise ConfigError(f"{name}: must be {expected}, got {value!r}")
    return float(value)


def _options(name: str, options: Mapping[str, Any] | None, known: tuple[str, ...]) -> dict[str, Any]:
    """The objective's own options (``objective_args``), unknown keys refused."""
    given = dict(options or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        takes = f"it takes {list(known)}" if known else "it takes none"
        raise ConfigError(f"objective_args: unknown {unknown} for objective {name}; {takes}")
    return given


class Objective:
    """A training objective: :meth:`terms` gives, per example, the value to maximise and the ELBO,
    KL and reconstruction to report. ``samples`` draws per example; ``uses_beta``: whether the KL
    weight β (and its warm-up) applies; ``gradients``: the gradient estimators it takes."""

    name: ClassVar[str]
    uses_beta: ClassVar[bool] = False
    gradients: ClassVar[tuple[str, ...]] = ("reparam",)
    #: Whether its terms carry an ``inference_objective`` that trains the encoder (the trainer then
    #: routes two gradients, :class:`PIWAE`).
    routes_gradients: ClassVar[bool] = False
    samples: int

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0, gradient: str = "reparam",
                     options: Mapping[str, Any] | None = None) -> Objective:
        """The objective from the configuration's ``samples``, ``free_bits``, ``gradient`` and its own
        ``options`` (``objective_args``)."""
        raise NotImplementedError

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        raise NotImplementedError

    def __call__(self, model: LatentModel, x: Tensor, *, beta: float = 1.0) -> Tensor:
        """The value to maximise per example, shape (B,): ``terms(model, x, beta=beta).objective``."""
        return self.terms(model, x, beta=beta).objective

    def bounds_log_likelihood(self, beta: float = 1.0) -> bool:
        """Whether the value maximised (at KL weight ``beta``) is a lower bound on log p(x) in expectation;
        :attr:`ELBOTerms.lower_bound` of its terms."""
        return True


def weighted_draws(model: LatentModel, x: Tensor, n_samples: int, *, gradient: str = "reparam", groups: int = 1,
                   eps: Tensor | None = None, reduce: Reduction | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """log p(x|z_k), log p(z_k) and log q_x(z_k), each (K, B), like :func:`importance_terms`, with the
    encoder's gradient of ``gradient``: "reparam" as they are; "stl" and "dreg" with q's parameters
    stopped in log q (:func:`~vaekit.prob.distributions.stop_gradient`, same values); "dreg" also
    reweights the gradient reaching the draws for L_{M,K} with ``groups`` M
    (:func:`vaekit.inference.bounds.reweight_path_gradient`)."""
    check_batch(model, x)
    _check_samples(n_samples, "n_samples")
    q = model.encode(x)
    z, log_q = rsample_with_log_prob(q, n_samples, eps)                 # (K, B, latent), (K, B)
    if gradient != "reparam":
        try:
            log_q = stop_gradient(q).log_prob(z)
        except NotImplementedError as exc:
            raise ConfigError(f"gradient: {gradient} {exc}") from None
    log_px, log_pz = model.log_px(x, z, reduce=reduce), model.log_pz(z)
    if gradient == "dreg":
        reweight_path_gradient(z, log_px + log_pz - log_q, groups)
    return log_px, log_pz, log_q


@dataclass(frozen=True)
class ELBO(Objective):
    """E_q[log p(x|z)] - β KL(q_x(z) || p(z)) with ``samples`` draws and ``free_bits`` λ (:func:`elbo_terms`).

    ``gradient="stl"`` (Roeder et al. 2017): the Monte Carlo form mean_s [log p(x|z_s) - β (log q(z_s) -
    log p(z_s))] with q's parameters stopped in log q, which removes the score term E[∂ log q/∂φ] = 0
    from the encoder's gradient (unbiased; zero variance where q is the exact posterior)."""

    name: ClassVar[str] = "elbo"
    uses_beta: ClassVar[bool] = True
    gradients: ClassVar[tuple[str, ...]] = ("reparam", "stl")
    samples: int = 1
    free_bits: float = 0.0
    gradient: str = "reparam"

    def __post_init__(self) -> None:
        _check_samples(self.samples, "samples")
        if not math.isfinite(self.free_bits) or self.free_bits < 0:
            raise ConfigError(f"free_bits: must be a finite number >= 0, got {self.free_bits!r}")
        _check_gradient(self.name, self.gradient, self.gradients, _NOT_FOR_ELBO)
        if self.gradient == "stl" and self.free_bits > 0:
            raise ConfigError("gradient: stl uses the Monte Carlo KL, and free bits need the KL per dimension; "
                              "use one of them")

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0, gradient: str = "reparam",
                     options: Mapping[str, Any] | None = None) -> ELBO:
        _options(cls.name, options, ())
        return cls(samples=samples, free_bits=free_bits, gradient=gradient)

    def bounds_log_likelihood(self, beta: float = 1.0) -> bool:
        """β >= 1 without free bits: E_q[log p(x|z)] - β KL <= ELBO <= log p(x)."""
        return beta >= 1 and self.free_bits <= 0

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        if self.gradient == "reparam":
            return elbo_terms(model, x, beta=beta, n_samples=self.samples, free_bits=self.free_bits, eps=eps,
                              reduce=reduce)
        _number("beta", beta, minimum=0.0)
        log_px, log_pz, log_q = weighted_draws(model, x, self.samples, gradient="stl", eps=eps, reduce=reduce)
        reconstruction, kl = log_px.mean(0), (log_q - log_pz).mean(0)
        return ELBOTerms(reconstruction - beta * kl, reconstruction - kl, reconstruction, kl, kl,
                         lower_bound=self.bounds_log_likelihood(beta))


def _iw_terms(log_px: Tensor, log_pz: Tensor, log_q: Tensor, objective: Tensor, **kw: Any) -> ELBOTerms:
    """ELBOTerms of an importance-weighted objective: the ELBO estimate mean_k log w_k, the KL estimate
    mean_k [log q(z_k) - log p(z_k)] and the reconstruction mean_k log p(x|z_k), from the same draws."""
    reconstruction, kl = log_px.mean(0), (log_q - log_pz).mean(0)
    return ELBOTerms(objective, reconstruction - kl, reconstruction, kl, kl, **kw)


@dataclass(frozen=True)
class IWAE(Objective):
    """L_K(x) = log (1/K) Σ_k w_k with K = ``samples``; from the same draws, the ELBO estimate
    mean_k log w_k, the KL estimate mean_k [log q(z_k) - log p(z_k)] and the reconstruction
    mean_k log p(x|z_k). ``gradient="dreg"``: the doubly reparameterised encoder gradient
    Σ_k w̃_k² ∂ log w_k/∂z_k ∂z_k/∂φ (Tucker et al. 2019), unbiased for ∇_φ L_K."""

    name: ClassVar[str] = "iwae"
    gradients: ClassVar[tuple[str, ...]] = ("reparam", "dreg")
    samples: int = 5
    gradient: str = "reparam"

    def __post_init__(self) -> None:
        _check_samples(self.samples, "samples")
        _check_gradient(self.name, self.gradient, self.gradients, _NOT_FOR_IW)

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0, gradient: str = "reparam",
                     options: Mapping[str, Any] | None = None) -> IWAE:
        if free_bits > 0:
            raise ConfigError(f"free_bits: applies to objective elbo only, not {cls.name!r}")
        _options(cls.name, options, ())
        return cls(samples=samples, gradient=gradient)

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        """The bound and its parts. A decoder variance profiled out in training (c* = the mean squared
        error, the maximiser of the ELBO) is refused: the maximiser of L_K is a different, importance-
        weighted mean, so training L_K with c* would not train L_K."""
        log_px, log_pz, log_q = weighted_draws(model, x, self.samples, gradient=self.gradient, eps=eps,
                                               reduce=_no_profiled_variance(self.name))
        return _iw_terms(log_px, log_pz, log_q, iwae_value(log_px + log_pz - log_q))


def _no_profiled_variance(name: str) -> Reduction:
    def refuse(values: Tensor) -> Tensor:
        raise ConfigError(f"objective {name}: the model's decoder variance is optimal (c* = mean squared error), "
                          "which maximises the ELBO, not an importance-weighted bound; build the model with "
                          f"decoder_variance='learned' (what `vaekit train --objective {name}` uses) or a number, or "
                          "train it with vaekit.ELBO()")
    return refuse


def _check_iw_free_bits(name: str, free_bits: float) -> None:
    if free_bits > 0:
        raise ConfigError(f"free_bits: applies to objective elbo only, not {name!r}")
