"""Likelihoods p(x|z) given the decoder network's output f(z): the one place a likelihood name is decoded.

* :class:`GaussianLikelihood`  — p(x|z) = N(f(z), cI), c from a :class:`~vaekit.models.variance.DecoderVariance`
  (the seed's decoder); data are continuous (images are uniformly dequantised), bits/dim apply.
* :class:`BernoulliLikelihood` — p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d)), f(z) the logits;
  data are binary (images are dynamically binarised).

A likelihood owns what it needs of the data (``data_kind``: "continuous" or "binary", which the
preprocessing reads), its log-density (``distribution``) and whether bits/dim apply (``is_density``).
:data:`LIKELIHOODS` maps the configuration's names to builders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError, ShapeError
from vaekit.models.variance import DecoderVariance, OptimalVariance, build_variance
from vaekit.prob.distributions import DiagonalNormal, ProfiledNormal, Reduction, bernoulli

__all__ = ["Likelihood", "GaussianLikelihood", "BernoulliLikelihood", "LIKELIHOODS", "LIKELIHOOD_ARGS",
           "check_likelihood_args", "build_likelihood"]


class Likelihood(nn.Module):
    """f(z) (*lead, *data_shape) ↦ p(x|z) with event shape ``data_shape``."""

    #: What the data must be for this likelihood: "continuous" or "binary".
    data_kind: str = "continuous"
    #: Whether log p(x|z) is a density on continuous values (bits/dim on dequantised images).
    is_density: bool = False

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


def _gaussian(data_shape: tuple[int, ...], decoder_variance: float | str, initial_variance: float,
              args: Mapping[str, Any]) -> Likelihood:
    return GaussianLikelihood(build_variance(decoder_variance, data_shape, initial_variance), data_shape)


def _bernoulli(data_shape: tuple[int, ...], decoder_variance: float | str, initial_variance: float,
               args: Mapping[str, Any]) -> Likelihood:
    return BernoulliLikelihood()


Builder = Callable[[tuple[int, ...], float | str, float, Mapping[str, Any]], Likelihood]

#: Likelihood names (the configuration's ``likelihood``) and their builders
#: ``(data_shape, decoder_variance, initial_variance, likelihood_args) -> Likelihood`` (c is ignored
#: by the likelihoods that have none).
LIKELIHOODS: dict[str, Builder] = {
    "gaussian": _gaussian,
    "bernoulli": _bernoulli,
}

#: For the likelihoods that take ``likelihood_args``: a function checking and completing them.
LIKELIHOOD_ARGS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {}


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
