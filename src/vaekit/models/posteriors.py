"""Posterior families q_x(z): the encoder a configuration's ``posterior`` names, on a trunk.

* ``diagonal``  q_x(z) = N(g(x), diag h(x))            (:class:`~vaekit.models.encoders.GaussianEncoder`)
* ``full``      q_x(z) = N(g(x), L(x) L(x)ᵀ)           (the same, full covariance)
* ``iaf``       z = T(z0), z0 ~ N(g(x), diag h(x)), T an inverse autoregressive flow
                                                        (:class:`~vaekit.models.iaf.IAFEncoder`)

:data:`POSTERIORS` maps names to :class:`PosteriorFamily` objects that check their ``posterior_args``
(:func:`check_posterior_args`, once, when a configuration is read) and build the encoder
(:func:`build_encoder`): trunk (B, *data_shape) → (B, trunk_dim), then the family's heads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from vaekit.errors import ConfigError
from vaekit.models.encoders import GaussianEncoder
from vaekit.models.iaf import IAFEncoder, check_iaf_args

__all__ = ["PosteriorFamily", "POSTERIORS", "check_posterior_args", "build_encoder"]


@dataclass(frozen=True)
class PosteriorFamily:
    """A posterior family: ``check(args)`` → the checked, completed arguments (JSON-ready);
    ``build(trunk, trunk_dim, latent_dim, data_shape, args)`` → the encoder module x ↦ q_x(z);
    ``per_dimension_kl``: whether KL(q_x(z_i) || p(z_i)) per latent dimension exists (free bits need it)."""

    check: Callable[[Mapping[str, Any]], dict[str, Any]]
    build: Callable[[nn.Module, int, int, tuple[int, ...], Mapping[str, Any]], nn.Module]
    per_dimension_kl: bool = True


def _no_args(name: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def check(args: Mapping[str, Any]) -> dict[str, Any]:
        if args:
            raise ConfigError(f"posterior_args: the {name} posterior takes none, got {sorted(args)}")
        return {}
    return check


def _gaussian(covariance: str) -> Callable[..., nn.Module]:
    def build(trunk: nn.Module, trunk_dim: int, latent_dim: int, data_shape: tuple[int, ...],
              args: Mapping[str, Any]) -> nn.Module:
        return GaussianEncoder(trunk, trunk_dim, latent_dim, data_shape, covariance)
    return build


def _iaf(trunk: nn.Module, trunk_dim: int, latent_dim: int, data_shape: tuple[int, ...],
         args: Mapping[str, Any]) -> nn.Module:
    return IAFEncoder(trunk, trunk_dim, latent_dim, data_shape, steps=args["steps"], hidden=args["hidden"],
                      context=args["context"])


#: Posterior names (the configuration's ``posterior``) and their families.
POSTERIORS: dict[str, PosteriorFamily] = {
    "diagonal": PosteriorFamily(_no_args("diagonal"), _gaussian("diagonal")),
    "full": PosteriorFamily(_no_args("full"), _gaussian("full")),
    "iaf": PosteriorFamily(check_iaf_args, _iaf, per_dimension_kl=False),
}


def check_posterior_args(name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments of posterior ``name``, checked and completed; an unknown name is a ConfigError."""
    if not isinstance(name, str) or name not in POSTERIORS:
        raise ConfigError(f"posterior: unknown {name!r}; choose one of {list(POSTERIORS)}")
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"posterior_args: expected a JSON object of arguments, got {args!r}")
    return POSTERIORS[name].check(dict(args or {}))


def build_encoder(name: str, args: Mapping[str, Any], trunk: nn.Module, trunk_dim: int, latent_dim: int,
                  data_shape: tuple[int, ...]) -> nn.Module:
    """The encoder of posterior family ``name`` on ``trunk``."""
    return POSTERIORS[name].build(trunk, trunk_dim, latent_dim, data_shape, check_posterior_args(name, args))
