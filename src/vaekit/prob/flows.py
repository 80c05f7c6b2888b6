"""Flow posteriors: a diagonal Gaussian q0(z0|x) pushed through an invertible map T,

    z0 = μ(x) + σ(x) ⊙ ε,   ε ~ N(0, I_K),      z = T(z0),
    log q(z) = log q0(z0) − log |det ∂T/∂z0|
             = −½ ||ε||² − Σ_i log σ_i − (K/2) log 2π − log |det ∂T/∂z0|,

the form of the inverse autoregressive flow (Kingma et al. 2016, eq. 3–5). :class:`FlowPosterior` draws z
and computes log q(z) in ONE pass from ε (``rsample_with_log_prob``): T is applied forwards, never inverted.
T is a ``torch.distributions.Transform`` with zuko's ``call_and_ladj(z0) -> (T(z0), log|det ∂T/∂z0|)``
(a ``zuko.transforms.ComposedTransform`` of autoregressive steps, :mod:`vaekit.models.iaf`); it may depend on a
per-example context h(x), which :class:`FlowPosterior` keeps so that the family can be refined per example.

Only ``log_prob`` on a z the posterior did not draw needs z0 = T⁻¹(z), which for an autoregressive step
takes K sequential passes of its network (slow, but exact); the library's estimators never need it.
The moments (``mean``, ``variance``) have no closed form: they are Monte Carlo estimates over
:data:`MOMENT_DRAWS` draws whose ε come from a generator seeded with :data:`MOMENT_SEED` and are the same
for every example (common random numbers: the summary of x does not depend on the batch around it,
and differences between examples carry little Monte Carlo noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, constraints

from vaekit.errors import ShapeError
from vaekit.prob.distributions import DiagonalNormal
from vaekit.prob.families import FreeParameters

__all__ = ["FlowPosterior", "FlowTransform", "MOMENT_DRAWS", "MOMENT_SEED"]

#: Draws of the Monte Carlo ``mean`` and ``variance`` (the standard error of a mean is σ/16).
MOMENT_DRAWS = 256
#: Seed of the moments' draws (fixed: the same x always has the same summary).
MOMENT_SEED = 0


class FlowTransform(Protocol):
    """An invertible map z0 ↦ z with its log-determinant (zuko's transforms are such maps)."""

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(T(x), log|det ∂T/∂x|), shapes (*lead, K) and ``lead``."""

    @property
    def inv(self) -> Callable[[Tensor], Tensor]:
        """T⁻¹."""


class FlowPosterior(Distribution):
    """q(z) = T_h # N(loc, diag(scale²)): batch shape (*batch,) = loc.shape[:-1], event shape (K,).

    ``transform(h)`` returns the map T for the context ``h`` (shape (*batch, C), or None for a flow
    without context); it must offer ``call_and_ladj`` (zuko transforms do) and, for ``log_prob``, ``inv``.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, transform: Callable[[Tensor | None], FlowTransform],
                 context: Tensor | None = None):
        if loc.ndim < 1 or loc.shape != scale.shape:
            raise ShapeError(f"FlowPosterior: loc {tuple(loc.shape)} and scale {tuple(scale.shape)} must have the "
                             "same shape (*batch, K)")
        if context is not None and context.shape[:-1] != loc.shape[:-1]:
            raise ShapeError(f"FlowPosterior: context {tuple(context.shape)} must have the batch shape "
                             f"{tuple(loc.shape[:-1])} of loc")
        self.base = DiagonalNormal(loc, scale)
        self.context = context
        self.make_transform = transform
        self.transform = transform(context)
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """One example's ε: (K,), as for the diagonal Gaussian q0."""
        return (int(self.event_shape[0]),)

    def rsample_with_log_prob(self, n: int, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` draws z = T(μ + σ ε) and log q(z) (module docstring), one forward pass of T:
        shapes (n, *batch, K) and (n, *batch). ``eps`` (n, *batch, K), or broadcastable to it, gives ε."""
        loc, scale = self.base.loc, self.base.scale
        shape = (n, *loc.shape)
        if eps is None:
            eps = torch.randn(shape, dtype=loc.dtype, device=loc.device)
        elif eps.ndim != len(shape) or eps.shape[0] != n or torch.broadcast_shapes(eps.shape, shape) != shape:
            raise ShapeError(f"eps: has shape {tuple(eps.shape)}, expected {shape} (samples, *batch, latent)")
        z0 = loc + scale * eps                                                      # (n, *batch, K)
        z, log_det = self.transform.call_and_ladj(z0)                               # (n, *batch, K), (n, *batch)
        k = loc.shape[-1]
        log_q0 = -0.5 * (eps**2).sum(-1) - scale.log().sum(-1) - 0.5 * k * math.log(2 * math.pi)
        return z, log_q0.expand(log_det.shape) - log_det

    def rsample(self, sample_shape: Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        n = math.prod(sample_shape)
        z, _ = self.rsample_with_log_prob(n)
        return z.reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(z) of any z (*lead, *batch, K): z0 = T⁻¹(z) (K sequential passes per autoregressive step),
        then log q0(z0) − log|det ∂T/∂z0|. The draws of :meth:`rsample_with_log_prob` need none of this."""
        z0 = self.transform.inv(value)
        _, log_det = self.transform.call_and_ladj(z0)
        return self.base.log_prob(z0) - log_det

    def _moments(self) -> tuple[Tensor, Tensor]:
        loc = self.base.loc
        generator = torch.Generator(device=loc.device).manual_seed(MOMENT_SEED)
        eps = torch.randn((MOMENT_DRAWS, *[1] * (loc.ndim - 1), loc.shape[-1]), generator=generator,
                          dtype=loc.dtype, device=loc.device)                     # the same ε for every example
        z, _ = self.rsample_with_log_prob(MOMENT_DRAWS, eps)
        return z.mean(0), z.var(0, correction=1)

    @property
    def mean(self) -> Tensor:
        """E_q[z] by :data:`MOMENT_DRAWS` draws (module docstring), (*batch, K)."""
        return self._moments()[0]

    @property
    def variance(self) -> Tensor:
        """Var_q(z_i) by :data:`MOMENT_DRAWS` draws (module docstring), (*batch, K)."""
        return self._moments()[1]

    def expand(self, batch_shape, _instance=None):  # noqa: D102 - torch API
        batch_shape = Size(batch_shape)
        loc = self.base.loc.expand(*batch_shape, -1)
        context = None if self.context is None else self.context.expand(*batch_shape, -1)
        return FlowPosterior(loc, self.base.scale.expand(*batch_shape, -1), self.make_transform, context)

    def free_parameters(self) -> FreeParameters:
        """The per-example family this posterior belongs to: (μ, log σ, h) free, the flow's networks fixed
        (:mod:`vaekit.prob.families`). A refined member is a q the encoder's heads could output for some
        trunk features; richer flows (per-example network weights) are outside it."""
        def leaf(t: Tensor) -> Tensor:
            return t.detach().clone().requires_grad_(True)

        params = [leaf(self.base.loc), leaf(self.base.scale.log())]
        if self.context is not None:
            params.append(leaf(self.context))

        def build(values: list[Tensor]) -> Distribution:
            return FlowPosterior(values[0], values[1].exp(), self.make_transform,
                                 values[2] if len(values) > 2 else None)
        return FreeParameters(params, build)
