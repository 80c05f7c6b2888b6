"""Priors p(z): modules that give the model's prior distribution, event shape (latent_dim,).

* ``standard``  :class:`StandardNormalPrior`: the seed's p(z) = N(0, I), nothing learned.

A prior is an ``nn.Module`` whose ``forward(encode)`` returns p(z) on the module's device and dtype;
``encode`` is the model's q_x(z) (x ↦ distribution), which a prior defined through the encoder (the
VampPrior) calls. :data:`PRIORS` maps the configuration's ``prior`` names to classes with
``from_args(args, latent_dim, data_shape)`` and ``to_args()``; :func:`resolve_prior` checks a name
and its arguments once, when a configuration is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError
from vaekit.prob.distributions import DiagonalNormal, standard_normal

__all__ = ["Prior", "StandardNormalPrior", "PRIORS", "check_prior_args", "build_prior"]

Encode = Callable[[Tensor], Distribution]


class Prior(nn.Module):
    """p(z) as a module: ``forward(encode)`` → a distribution with event shape (latent_dim,)."""

    name: ClassVar[str]
    latent_dim: int

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` checked and completed with the defaults (JSON-ready); a ConfigError names a bad one."""
        raise NotImplementedError

    def forward(self, encode: Encode) -> Distribution:  # noqa: D102 - see the class
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(0, I): the seed's prior."""

    name: ClassVar[str] = "standard"
    _anchor: Tensor

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...] = ()):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)   # tracks device and dtype

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        if args:
            raise ConfigError(f"prior_args: the standard prior takes none, got {sorted(args)}")
        return {}

    def forward(self, encode: Encode | None = None) -> DiagonalNormal:
        return standard_normal(self.latent_dim, device=self._anchor.device, dtype=self._anchor.dtype)


#: Prior names (the configuration's ``prior``) and their classes, built as ``cls(latent_dim, data_shape, **args)``.
PRIORS: dict[str, type[Prior]] = {"standard": StandardNormalPrior}


def check_prior_args(name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments of prior ``name``, checked and completed; an unknown name is a ConfigError."""
    if not isinstance(name, str) or name not in PRIORS:
        raise ConfigError(f"prior: unknown {name!r}; choose one of {list(PRIORS)}")
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"prior_args: expected a JSON object of arguments, got {args!r}")
    return PRIORS[name].check_args(dict(args or {}))


def build_prior(name: str, args: Mapping[str, Any], latent_dim: int, data_shape: tuple[int, ...]) -> Prior:
    """The prior module ``name`` with (checked) ``args``."""
    return PRIORS[name](latent_dim, data_shape, **check_prior_args(name, args))
