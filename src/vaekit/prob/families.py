"""Posterior families as free parameters: a distribution q of a family, taken apart into unconstrained
per-example tensors that an optimiser can move, and put back together.

* diagonal Gaussian N(m, diag s²):         (m, log s);
* full-covariance Gaussian N(m, L Lᵀ):     (m, log diag L, strictly-lower part of L).
* a flow posterior T_h # N(m, diag s²):    (m, log s, context h), the flow's networks fixed.

:func:`free_parameters` dispatches on the distribution's type; a family without a registered
parameterisation raises NotImplementedError. The parameters are copies (leaf tensors with
``requires_grad``), so moving them never changes q or what made it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal

from vaekit.prob.distributions import DiagonalNormal

__all__ = ["FreeParameters", "free_parameters"]


@dataclass
class FreeParameters:
    """Unconstrained tensors ``params`` (each (*batch, ...), requiring grad) and ``build``, which turns
    them back into a distribution of the family. ``build(params)`` at the start equals the q given."""

    params: list[Tensor]
    build: Callable[[list[Tensor]], Distribution]

    def distribution(self) -> Distribution:
        """The family's member at the current parameters."""
        return self.build(self.params)


def _leaf(t: Tensor) -> Tensor:
    return t.detach().clone().requires_grad_(True)


def _diagonal(q: DiagonalNormal) -> FreeParameters:
    def build(params: list[Tensor]) -> Distribution:
        loc, log_scale = params
        return DiagonalNormal(loc, log_scale.exp())
    return FreeParameters([_leaf(q.loc), _leaf(q.scale.log())], build)


def _full(q: MultivariateNormal) -> FreeParameters:
    k = q.event_shape[0]
    rows, cols = torch.tril_indices(k, k, offset=-1, device=q.loc.device)
    tril = q.scale_tril

    def build(params: list[Tensor]) -> Distribution:
        loc, log_diag, lower = params
        strictly_lower = torch.zeros((*loc.shape, k), dtype=loc.dtype, device=loc.device)
        strictly_lower[..., rows, cols] = lower
        scale_tril = torch.diag_embed(log_diag.exp()) + strictly_lower
        return MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)
    diag = torch.diagonal(tril, dim1=-2, dim2=-1)
    return FreeParameters([_leaf(q.loc), _leaf(diag.log()), _leaf(tril[..., rows, cols])], build)


def free_parameters(q: Distribution) -> FreeParameters:
    """The free parameters of q's family at q (see the module docstring); a distribution with a method
    ``free_parameters()`` of its own (a flow posterior, :class:`vaekit.prob.flows.FlowPosterior`) gives them."""
    own = getattr(q, "free_parameters", None)
    if callable(own):
        return own()
    if isinstance(q, DiagonalNormal) and len(q.event_shape) == 1:
        return _diagonal(q)
    if isinstance(q, MultivariateNormal):
        return _full(q)
    raise NotImplementedError(f"free_parameters: no per-example parameterisation of {type(q).__name__} "
                              "(Gaussian posteriors, diagonal or full covariance, have one)")
