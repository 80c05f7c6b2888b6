"""Likelihoods p(x|z) given the decoder network's output f(z): the one place a likelihood name is decoded.

* :class:`GaussianLikelihood`  — p(x|z) = N(f(z), cI), c from a :class:`~vaekit.models.variance.DecoderVariance`
  (the seed's decoder); data are continuous (images are uniformly dequantised), bits/dim apply.
* :class:`BernoulliLikelihood` — p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d)), f(z) the logits;
  data are binary (images are dynamically binarised).
* :class:`DiscretizedLogisticLikelihood`, :class:`DiscretizedLogisticMixtureLikelihood` — exact
  probabilities of the L integer levels of images (:mod:`vaekit.prob.discretized`); data are the levels
  k / (L - 1), neither dequantised nor binarised (``data_kind`` "discrete").

A likelihood owns what it needs of the data (``data_kind``: "continuous", "binary" or "discrete", which
the preprocessing reads), its log-density (``distribution``), whether bits/dim apply to a density on
dequantised data (``is_density``) or are exact (``probability_of_levels``), and how many values of the
decoder network it takes per data dimension (``params_per_dim`` P: the architecture builds f with P·D
outputs, and ``distribution`` receives them as (*lead, P, *data_shape); P = 1 keeps (*lead, *data_shape)).
A likelihood whose ``data_kind`` is "discrete" takes ``likelihood_args`` ``bins``, the number of levels L
(:func:`likelihood_args_for_levels` sets it to the data's). :data:`LIKELIHOODS` maps the configuration's
names to builders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.nn.functional import softplus

from vaekit.errors import ConfigError, ShapeError
from vaekit.models.variance import DecoderVariance, OptimalVariance, build_variance
from vaekit.prob.discretized import DiscretizedLogistic, DiscretizedLogisticMixture, check_bins
from vaekit.prob.distributions import DiagonalNormal, ProfiledNormal, Reduction, bernoulli

__all__ = ["Likelihood", "GaussianLikelihood", "BernoulliLikelihood", "DiscretizedLogisticLikelihood",
           "DiscretizedLogisticMixtureLikelihood", "LIKELIHOODS", "LIKELIHOOD_ARGS", "check_likelihood_args",
           "build_likelihood", "likelihood_args_for_levels", "log_scale_floor"]


class Likelihood(nn.Module):
    """f(z) (*lead, *data_shape) ↦ p(x|z) with event shape ``data_shape``."""

    #: What the data must be for this likelihood: "continuous" or "binary".
    data_kind: str = "continuous"
    #: Whether log p(x|z) is a density on continuous values (bits/dim on dequantised images).
    is_density: bool = False
    #: Whether log p(x|z) is the exact probability of the data's integer levels (bits/dim = -log p / (D ln 2)).
    probability_of_levels: bool = False
    #: Values of f(z) per data dimension: f has P·D outputs, seen by ``distribution`` as (*lead, P, *data_shape).
    params_per_dim: int = 1

    def distribution(self, out: Tensor, event_ndims: int, *, reduce: Reduction | None = None) -> Distribution:
        raise NotImplementedError


class GaussianLikelihood(Likelihood):
    """p(x|z) = N(f(z), cI); c fixed, learned or optimal (profiled out in training mode)."""

    data_kind = "continuous"
    is_density = True

    def __init__(self, variance: DecoderVariance, data_shape: tuple[int, ...]):
        super().__init__()
        self.variance = variance
        c_shape = tuple(variance().shape)
        if c_shape not in ((), tuple(data_shape)):
            raise ShapeError(f"decoder variance of shape {c_shape} is neither a scalar nor the data shape {data_shape}")

    def distribution(self, out: Tensor, event_ndims: int, *, reduce: Reduction | None = None) -> Distribution:
        """N(out, c): in training mode with the optimal c, c* = reduce((x - f(z))²) in ``log_prob``,
        folded into the running estimate; otherwise the current c."""
        scale = self.variance().sqrt().to(out.dtype)
        if isinstance(self.variance, OptimalVariance) and self.training:
            return ProfiledNormal(out, scale, event_ndims, on_estimate=self.variance.update, reduce=reduce)
        return DiagonalNormal(out, scale, event_ndims)


class BernoulliLikelihood(Likelihood):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d)); f(z) are the logits."""

    data_kind = "binary"
    is_density = False

    def distribution(self, out: Tensor, event_ndims: int, *, reduce: Reduction | None = None) -> Distribution:
        return bernoulli(out, event_ndims)


def log_scale_floor(bins: int) -> float:
    """The smallest log-scale of a discretized logistic on ``bins`` levels of [0, 1]: PixelCNN++'s e^-7 on
    [-1, 1] with levels 2/255 apart, i.e. s >= e^-7 · 255/2 · Δ with Δ = 1/(L - 1) (0.23 of a half-bin)."""
    return math.log(255.0 / (2.0 * (bins - 1))) - 7.0


def _floored(raw: Tensor, floor: float) -> Tensor:
    """floor + softplus(raw - floor): a smooth lower bound (the identity well above it), gradients never 0."""
    return floor + softplus(raw - floor)


class DiscretizedLogisticLikelihood(Likelihood):
    """p(x|z) = prod_d DiscretizedLogistic(k_d; μ_d, s_d) on ``bins`` levels (:class:`DiscretizedLogistic`).

    μ = f(z) in [0, 1] units. ``scale="network"`` (the default, as in PixelCNN++ and VDVAE): f has two
    outputs per dimension, (μ, raw log s); ``scale="learned"`` (as in IAF): f gives μ only and log s is a
    learned parameter per data dimension, the same for every z. Either way log s = floor + softplus(raw -
    floor), floor = :func:`log_scale_floor`."""

    data_kind = "discrete"
    probability_of_levels = True

    def __init__(self, bins: int, data_shape: tuple[int, ...], scale: str = "network"):
        super().__init__()
        self.bins = check_bins(bins)
        self.scale = scale
        self.floor = log_scale_floor(self.bins)
        self.params_per_dim = 2 if scale == "network" else 1
        self.raw_log_scale = nn.Parameter(torch.zeros(data_shape)) if scale == "learned" else None

    def distribution(self, out: Tensor, event_ndims: int, *, reduce: Reduction | None = None) -> Distribution:
        if self.raw_log_scale is None:
            loc, raw = out.unbind(-event_ndims - 1)                     # 2 x (*lead, *data_shape)
        else:
            loc, raw = out, self.raw_log_scale.to(out.dtype)
        return DiscretizedLogistic(loc, _floored(raw, self.floor), self.bins, event_ndims)


class DiscretizedLogisticMixtureLikelihood(Likelihood):
    """p(x|z) = prod_d Σ_j π_dj DiscretizedLogistic(k_d; μ_dj, s_dj), K = ``components``
    (:class:`DiscretizedLogisticMixture`; the dimensions, RGB channels included, independent given z).

    f has 3K outputs per dimension, in the order (logits of π, μ, raw log s), each K long; log s is
    floored as in :class:`DiscretizedLogisticLikelihood`."""

    data_kind = "discrete"
    probability_of_levels = True

    def __init__(self, bins: int, components: int):
        super().__init__()
        self.bins = check_bins(bins)
        self.components = int(components)
        self.floor = log_scale_floor(self.bins)
        self.params_per_dim = 3 * self.components

    def distribution(self, out: Tensor, event_ndims: int, *, reduce: Reduction | None = None) -> Distribution:
        params = out.movedim(-event_ndims - 1, -1)                      # (*lead, *data_shape, 3K)
        logits, loc, raw = params.split(self.components, -1)
        return DiscretizedLogisticMixture(logits, loc, _floored(raw, self.floor), self.bins, event_ndims)


def _gaussian(data_shape: tuple[int, ...], decoder_variance: float | str, initial_variance: float,
              args: Mapping[str, Any]) -> Likelihood:
    return GaussianLikelihood(build_variance(decoder_variance, data_shape, initial_variance), data_shape)


def _bernoulli(data_shape: tuple[int, ...], decoder_variance: float | str, initial_variance: float,
               args: Mapping[str, Any]) -> Likelihood:
    return BernoulliLikelihood()


def _discretized_logistic(data_shape: tuple[int, ...], decoder_variance: float | str, initial_variance: float,
                          args: Mapping[str, Any]) -> Likelihood:
    return DiscretizedLogisticLikelihood(args["bins"], data_shape, args["scale"])


def _discretized_mixture(data_shape: tuple[int, ...], decoder_variance: float | str, initial_variance: float,
                         args: Mapping[str, Any]) -> Likelihood:
    return DiscretizedLogisticMixtureLikelihood(args["bins"], args["components"])


Builder = Callable[[tuple[int, ...], float | str, float, Mapping[str, Any]], Likelihood]

#: Likelihood names (the configuration's ``likelihood``) and their builders
#: ``(data_shape, decoder_variance, initial_variance, likelihood_args) -> Likelihood`` (c is ignored
#: by the likelihoods that have none).
LIKELIHOODS: dict[str, Builder] = {
    "gaussian": _gaussian,
    "bernoulli": _bernoulli,
    "discretized-logistic": _discretized_logistic,
    "discretized-logistic-mixture": _discretized_mixture,
}

#: The most mixture components ``discretized-logistic-mixture`` takes.
MAX_COMPONENTS = 100
#: Where the discretized logistic's log-scale comes from: the decoder network, or a learned parameter.
_SCALES = ("network", "learned")


def _known(name: str, args: Mapping[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ConfigError(f"likelihood_args: unknown {unknown} for likelihood {name!r}; it takes {list(known)}")


def _logistic_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``bins`` (levels L, 2..256, default 256) and ``scale`` ("network": log s from f(z), the default;
    "learned": one learned log s per data dimension)."""
    _known("discretized-logistic", args, ("bins", "scale"))
    scale = args.get("scale", "network")
    if scale not in _SCALES:
        raise ConfigError(f"likelihood_args: scale must be one of {list(_SCALES)}, got {scale!r}")
    return {"bins": check_bins(args.get("bins", 256), "likelihood_args: bins"), "scale": scale}


def _mixture_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``bins`` (levels L, 2..256, default 256) and ``components`` K (1..100, default 10 as in PixelCNN++)."""
    _known("discretized-logistic-mixture", args, ("bins", "components"))
    k = args.get("components", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_COMPONENTS:
        raise ConfigError(f"likelihood_args: components must be an integer from 1 to {MAX_COMPONENTS}, got {k!r}")
    return {"bins": check_bins(args.get("bins", 256), "likelihood_args: bins"), "components": k}


#: For the likelihoods that take ``likelihood_args``: a function checking and completing them.
LIKELIHOOD_ARGS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "discretized-logistic": _logistic_args,
    "discretized-logistic-mixture": _mixture_args,
}


def check_likelihood_args(name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``likelihood_args`` of likelihood ``name``, checked and completed (a ConfigError names a bad one)."""
    if not isinstance(name, str) or name not in LIKELIHOODS:
        raise ConfigError(f"likelihood: unknown {name!r}; choose one of {list(LIKELIHOODS)}")
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"likelihood_args: expected a JSON object of arguments, got {args!r}")
    args = dict(args or {})
    if name in LIKELIHOOD_ARGS:
        return LIKELIHOOD_ARGS[name](args)
    if args:
        raise ConfigError(f"likelihood_args: the {name} likelihood takes none, got {sorted(args)}")
    return {}


def build_likelihood(name: str, data_shape: tuple[int, ...], decoder_variance: float | str = 1.0,
                     initial_variance: float = 1.0, args: Mapping[str, Any] | None = None) -> Likelihood:
    """The likelihood named ``name``; an unknown name is a ConfigError listing the known ones."""
    checked = check_likelihood_args(name, args)
    return LIKELIHOODS[name](tuple(data_shape), decoder_variance, initial_variance, checked)


def likelihood_args_for_levels(name: str, given: Mapping[str, Any] | None, levels: int | None) -> dict[str, Any]:
    """The ``likelihood_args`` of likelihood ``name`` for images with ``levels`` intensity levels: for a
    likelihood of ``data_kind`` "discrete", ``bins`` = ``levels`` unless ``given`` names bins (then they must
    be equal: a ConfigError otherwise); the others' arguments checked and unchanged."""
    checked = check_likelihood_args(name, given)
    if build_likelihood(name, (1,), args=checked).data_kind != "discrete":
        return checked
    if levels is None:
        raise ConfigError(f"likelihood: {name} models the integer levels of images; these data have none")
    if given is not None and "bins" in given:
        if checked["bins"] != levels:
            raise ConfigError(f"likelihood_args: bins {checked['bins']} but the images have {levels} levels; "
                              f"give bins {levels} or leave it out (it then follows the data)")
        return checked
    return check_likelihood_args(name, {**checked, "bins": levels})
