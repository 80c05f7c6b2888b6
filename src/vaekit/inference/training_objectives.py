"""The objectives a run can name: the bounds beyond the ELBO and IWAE of :mod:`vaekit.inference.objectives`,
and the one table of names (:data:`OBJECTIVES`, :func:`make_objective`).

Each is a pure objective of the model protocol, one value per example, its value computed from log
importance weights by :mod:`vaekit.inference.bounds` or from the KL's decomposition by
:mod:`vaekit.inference.total_correlation`: :class:`MIWAE` (M, K), :class:`PIWAE` (IWAE for the generative
network, MIWAE for the inference network), :class:`CIWAE` (β), :class:`VR` (Rényi α) and :class:`BTCVAE`
(β-TC-VAE).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from vaekit.errors import ConfigError
from vaekit.inference.bounds import ciwae_value, iwae_value, miwae_value, renyi_value
from vaekit.inference.objectives import (
    _NOT_FOR_IW,
    ELBO,
    IWAE,
    ELBOTerms,
    Objective,
    _check_gradient,
    _check_iw_free_bits,
    _check_samples,
    _iw_terms,
    _no_profiled_variance,
    _number,
    _options,
    check_batch,
    weighted_draws,
)
from vaekit.inference.total_correlation import ESTIMATORS, tc_decomposition
from vaekit.models.protocol import LatentModel
from vaekit.prob.distributions import Reduction, rsample_with_log_prob

__all__ = ["MIWAE", "PIWAE", "CIWAE", "VR", "BTCVAE", "OBJECTIVES", "make_objective"]


@dataclass(frozen=True)
class MIWAE(Objective):
    """L_{M,K}(x) = (1/M) Σ_m log (1/K) Σ_k w_{m,k} (Rainforth et al. 2018): the mean of M independent
    K-sample IWAE bounds, M = ``groups``, K = ``group_size``, M·K draws per example (``samples``).
    MIWAE(1, K) is IWAE(K); MIWAE(M, 1) the M-draw ELBO estimate. A lower bound on log p(x), looser
    than L_{MK}, whose encoder gradient has a better signal-to-noise ratio. ``gradient="dreg"``: DReG
    within each group."""

    name: ClassVar[str] = "miwae"
    gradients: ClassVar[tuple[str, ...]] = ("reparam", "dreg")
    groups: int = 8
    group_size: int = 8
    gradient: str = "reparam"
    samples: int = field(init=False)

    def __post_init__(self) -> None:
        _check_samples(self.groups, "groups")
        _check_samples(self.group_size, "group_size")
        _check_gradient(self.name, self.gradient, self.gradients, _NOT_FOR_IW)
        object.__setattr__(self, "samples", self.groups * self.group_size)

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0, gradient: str = "reparam",
                     options: Mapping[str, Any] | None = None) -> Objective:
        """``samples`` is K (per group); ``options``: ``groups`` M (default 8)."""
        _check_iw_free_bits(cls.name, free_bits)
        given = _options(cls.name, options, ("groups",))
        return cls(groups=given.get("groups", 8), group_size=samples, gradient=gradient)

    def _log_weights(self, model: LatentModel, x: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        return weighted_draws(model, x, self.samples, gradient=self.gradient, groups=self.groups, eps=eps,
                              reduce=_no_profiled_variance(self.name))

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        log_px, log_pz, log_q = self._log_weights(model, x, eps)
        return _iw_terms(log_px, log_pz, log_q, miwae_value(log_px + log_pz - log_q, self.groups))


@dataclass(frozen=True)
class PIWAE(MIWAE):
    """Partially importance-weighted (Rainforth et al. 2018): from the same M·K draws, the generative
    network (decoder, prior) is trained by L_{MK} = log (1/(MK)) Σ_{m,k} w_{m,k} (``objective``) and the
    inference network (the model's ``encoder``) by L_{M,K} (``inference_objective``, MIWAE; with
    ``gradient="dreg"`` its DReG estimator). The trainer routes each gradient to its parameters
    (:func:`vaekit.training.step.batch_loss`); summed and differentiated as one value, ``objective``
    would train every parameter by L_{MK}. ``objective`` is a lower bound on log p(x)."""

    name: ClassVar[str] = "piwae"
    routes_gradients: ClassVar[bool] = True

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        log_px, log_pz, log_q = self._log_weights(model, x, eps)
        log_w = log_px + log_pz - log_q                                   # (M·K, B)
        return _iw_terms(log_px, log_pz, log_q, iwae_value(log_w),
                         inference_objective=miwae_value(log_w, self.groups))


@dataclass(frozen=True)
class CIWAE(Objective):
    """L(x) = β · (1/K) Σ_k log w_k + (1 - β) · log (1/K) Σ_k w_k (Rainforth et al. 2018): a convex
    combination of the ELBO and IWAE estimates from the same K = ``samples`` draws, β in [0, 1]
    (CIWAE(1) is the ELBO, CIWAE(0) IWAE). A lower bound on log p(x). (This β mixes the bounds; it is
    not the KL weight β of the ELBO.)"""

    name: ClassVar[str] = "ciwae"
    beta: float = 0.5
    samples: int = 5

    def __post_init__(self) -> None:
        _number("beta", self.beta, minimum=0.0, maximum=1.0)
        _check_samples(self.samples, "samples")

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0, gradient: str = "reparam",
                     options: Mapping[str, Any] | None = None) -> Objective:
        """``options``: ``beta`` (default 0.5)."""
        _check_iw_free_bits(cls.name, free_bits)
        _check_gradient(cls.name, gradient, cls.gradients)
        given = _options(cls.name, options, ("beta",))
        return cls(beta=given.get("beta", 0.5), samples=samples)

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        log_px, log_pz, log_q = weighted_draws(model, x, self.samples, eps=eps,
                                               reduce=_no_profiled_variance(self.name))
        return _iw_terms(log_px, log_pz, log_q, ciwae_value(log_px + log_pz - log_q, self.beta))


@dataclass(frozen=True)
class VR(Objective):
    """The Rényi (VR-α) bound (Li & Turner 2016) with K = ``samples`` draws:
    L_{α,K}(x) = 1/(1-α) · log (1/K) Σ_k w_k^{1-α}, and (1/K) Σ_k log w_k at α = 1 (its limit). α = 0
    is IWAE(K), α → 1 the ELBO; a lower bound on log p(x) for α >= 0 (for α < 0 it can exceed it)."""

    name: ClassVar[str] = "vr"
    alpha: float = 0.5
    samples: int = 5

    def __post_init__(self) -> None:
        _number("alpha", self.alpha)
        _check_samples(self.samples, "samples")

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0, gradient: str = "reparam",
                     options: Mapping[str, Any] | None = None) -> Objective:
        """``options``: ``alpha`` (default 0.5)."""
        _check_iw_free_bits(cls.name, free_bits)
        _check_gradient(cls.name, gradient, cls.gradients)
        given = _options(cls.name, options, ("alpha",))
        return cls(alpha=given.get("alpha", 0.5), samples=samples)

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        log_px, log_pz, log_q = weighted_draws(model, x, self.samples, eps=eps,
                                               reduce=_no_profiled_variance(self.name))
        return _iw_terms(log_px, log_pz, log_q, renyi_value(log_px + log_pz - log_q, self.alpha),
                         lower_bound=self.bounds_log_likelihood(beta))

    def bounds_log_likelihood(self, beta: float = 1.0) -> bool:
        """α >= 0."""
        return self.alpha >= 0


@dataclass(frozen=True)
class BTCVAE(Objective):
    """β-TC-VAE (Chen et al. 2018): log p(x|z) - α MI - β TC - γ DKL per example, one draw z ~ q_x(z),
    with the KL's three terms (index-code mutual information, total correlation, dimension-wise KL)
    estimated on the minibatch by ``estimator`` "mws" or "mss" (:mod:`vaekit.inference.total_correlation`;
    "mss" needs ``dataset_size``, the number of training examples). With α = β = γ = 1 the value is the
    one-draw ELBO estimate exactly (the terms sum to log q(z|x) - log p(z)); other weights give no
    lower bound on log p(x). Each example's value depends on the rest of its batch. Needs a Gaussian
    posterior (diagonal or full) and a factorised Gaussian prior."""

    name: ClassVar[str] = "btcvae"
    alpha: float = 1.0
    beta: float = 6.0
    gamma: float = 1.0
    estimator: str = "mws"
    dataset_size: int | None = None
    samples: int = 1

    def __post_init__(self) -> None:
        for key in ("alpha", "beta", "gamma"):
            _number(key, getattr(self, key), minimum=0.0)
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"estimator: unknown {self.estimator!r}; choose one of {list(ESTIMATORS)}")
        if self.estimator == "mss" and (self.dataset_size is None or isinstance(self.dataset_size, bool)
                                        or not isinstance(self.dataset_size, int) or self.dataset_size < 2):
            raise ConfigError(f"dataset_size: estimator mss needs the number of training examples (an integer "
                              f">= 2, in objective_args), got {self.dataset_size!r}")
        if self.samples != 1:
            raise ConfigError(f"samples: objective btcvae uses one draw per example, got {self.samples!r}")

    @classmethod
    def from_options(cls, *, samples: int, free_bits: float = 0.0, gradient: str = "reparam",
                     options: Mapping[str, Any] | None = None) -> Objective:
        """``options``: ``alpha``, ``beta``, ``gamma`` (defaults 1, 6, 1), ``estimator``, ``dataset_size``."""
        _check_iw_free_bits(cls.name, free_bits)
        _check_gradient(cls.name, gradient, cls.gradients)
        given = _options(cls.name, options, ("alpha", "beta", "gamma", "estimator", "dataset_size"))
        return cls(samples=samples, **given)

    def terms(self, model: LatentModel, x: Tensor, *, beta: float = 1.0, eps: Tensor | None = None,
              reduce: Reduction | None = None) -> ELBOTerms:
        check_batch(model, x)
        q = model.encode(x)
        z, _ = rsample_with_log_prob(q, 1, eps)                              # (1, B, latent)
        reconstruction = model.log_px(x, z, reduce=reduce)[0]                 # (B,)
        parts = tc_decomposition(q, z[0], model.prior(), estimator=self.estimator, dataset_size=self.dataset_size)
        kl = parts.log_q_given_x - parts.log_p                                # = MI + TC + DKL, (B,)
        penalty = (self.alpha * parts.mutual_information + self.beta * parts.total_correlation
                   + self.gamma * parts.dimension_kl)
        return ELBOTerms(reconstruction - penalty, reconstruction - kl, reconstruction, kl, penalty,
                         lower_bound=self.bounds_log_likelihood(beta))

    def bounds_log_likelihood(self, beta: float = 1.0) -> bool:
        """Only with unit weights (then it is the ELBO)."""
        return self.alpha == self.beta == self.gamma == 1.0


#: Objective names (the configuration's ``objective``) and their classes.
OBJECTIVES: dict[str, type[Objective]] = {"elbo": ELBO, "iwae": IWAE, "miwae": MIWAE, "piwae": PIWAE,
                                          "ciwae": CIWAE, "vr": VR, "btcvae": BTCVAE}


def make_objective(name: str, *, samples: int = 1, free_bits: float = 0.0, gradient: str = "reparam",
                   options: Mapping[str, Any] | None = None) -> Objective:
    """The objective ``name`` with its options (free bits apply to the ELBO only; ``options``: the
    objective's own, e.g. ``{"groups": 8}`` for MIWAE)."""
    if name not in OBJECTIVES:
        raise ConfigError(f"objective: unknown {name!r}; choose one of {list(OBJECTIVES)}")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"objective_args: expected a JSON object, got {type(options).__name__}")
    try:
        return OBJECTIVES[name].from_options(samples=samples, free_bits=free_bits, gradient=gradient, options=options)
    except ConfigError as exc:              # an error in one of ``options``: named as objective_args.KEY
        key, sep, rest = str(exc).partition(": ")
        if sep and options and key in options:
            raise ConfigError(f"objective_args.{key}: {rest}") from None
        raise
