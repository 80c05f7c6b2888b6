"""The parts of a model with several stochastic layers z_1 … z_L (``layers`` > 1, :mod:`vaekit.models.stacked`):
a Gaussian conditional layer, the generative chain p(z) = p(z_L) Π_{l<L} p(z_l|z_{l+1}) with any prior on z_L,
and the two inference directions.

* ``bottom-up`` (Burda et al. 2016, §5): q(z|x) = q(z_1|x) Π_{l>=2} q(z_l|z_{l-1}), each ``up[l-2]``.
* ``top-down`` (Ladder VAE, Sønderby et al. 2016, eq. 17-19): a deterministic bottom-up pass of means
  m_1 = E q̂(z_1|x), q̂_{l+1} = up[l-1](m_l), m_{l+1} = E q̂_{l+1}, then, from the top,

      q(z_L|x) = q̂_L,    q(z_l|z_{l+1}, x) = N(μ_l, σ_l²),  σ_l⁻² = σ̂_l⁻² + σ_p⁻²,  μ_l = σ_l² (μ̂_l σ̂_l⁻² + μ_p σ_p⁻²),

  with N(μ_p, σ_p²) = p(z_l|z_{l+1}) the generative layer itself: inference shares the top-down path of the
  model and merges the bottom-up estimate N(μ̂_l, σ̂_l²) into it by precision.

Either way z = (z_1, …, z_L) and both q and p are :class:`~vaekit.prob.chain.MarkovChain` distributions.
The prior on z_L is any :class:`~vaekit.models.priors.Prior`; one defined through the encoder (the
VampPrior) sees the map u ↦ q̂_L(u) of the bottom-up pass (:func:`top_of_pass`): its pseudo-inputs pass
through the whole inference path to z_L.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError, ShapeError
from vaekit.models.hierarchical import INFERENCE
from vaekit.models.networks import MLP, Flatten
from vaekit.models.priors import Encode, Prior, StandardNormalPrior
from vaekit.ops.linear import Linear
from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp
from vaekit.prob.chain import MarkovChain
from vaekit.prob.distributions import DiagonalNormal

__all__ = ["GaussianLayer", "ChainPrior", "INFERENCE", "precision_merge", "top_of_pass", "posterior_chain"]



class GaussianLayer(nn.Module):
    """u (*lead, in_dim) ↦ N(μ(t(u)), diag σ²), σ = exp(½ soft_clamp(s)) (:mod:`vaekit.prob.bounds`), with
    t an MLP trunk of widths ``hidden`` (the identity when empty), μ an affine head, and s an affine head
    s(t(u)) or, with ``constant_scale``, a learned vector that does not depend on u. Batch shape ``lead``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (), activation: str = "tanh", *,
                 constant_scale: bool = False):
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        trunk = MLP(self.in_dim, hidden, None, activation) if hidden else Flatten((self.in_dim,))
        self.trunk = trunk
        width = int(trunk.out_features)
        self.mean = Linear(width, self.out_dim)
        self.log_var: nn.Module | None = None if constant_scale else Linear(width, self.out_dim)
        self.constant_log_var = nn.Parameter(torch.zeros(self.out_dim)) if constant_scale else None

    @property
    def is_affine(self) -> bool:
        """Whether μ is affine in u and σ constant (a linear-Gaussian conditional)."""
        return isinstance(self.trunk, Flatten) and self.constant_log_var is not None

    def variance(self) -> Tensor:
        """σ² of a constant-scale layer, (out_dim,)."""
        if self.constant_log_var is None:
            raise AttributeError("GaussianLayer.variance: this layer's variance depends on its input")
        return soft_clamp(self.constant_log_var, ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX).exp()

    def forward(self, u: Tensor) -> DiagonalNormal:
        if u.ndim < 1 or u.shape[-1] != self.in_dim:
            raise ShapeError(f"GaussianLayer: input of shape {tuple(u.shape)} does not end with {self.in_dim}")
        h = self.trunk(u)                                                    # (*lead, H)
        mean = self.mean(h)                                                  # (*lead, out_dim)
        if self.log_var is not None:
            raw = self.log_var(h)                                            # s(t(u))
        elif self.constant_log_var is not None:
            raw = self.constant_log_var                                      # s, the same for every u
        log_var = soft_clamp(raw, ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX)
        return DiagonalNormal(mean, torch.exp(0.5 * log_var).expand_as(mean))


class ChainPrior(Prior):
    """p(z) = p(z_L) Π_{l<L} p(z_l|z_{l+1}) over z = (z_1, …, z_L); ``layers[l-1]`` is p(z_l|z_{l+1}) and
    ``top`` the prior on z_L (N(0, I) by default; a mixture or the VampPrior as well). ``forward(encode)``
    returns the :class:`~vaekit.prob.chain.MarkovChain` (drawn downwards); ``encode`` is u ↦ q(z_L|u), which
    a prior defined through the encoder calls."""

    name: ClassVar[str] = "chain"

    def __init__(self, dims: Sequence[int], layers: Sequence[GaussianLayer], top: Prior | None = None):
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        self.latent_dim = sum(self.dims)
        self.layers = nn.ModuleList(layers)
        self.top = StandardNormalPrior(self.dims[-1]) if top is None else top
        if self.top.latent_dim != self.dims[-1]:
            raise ShapeError(f"ChainPrior: the prior on z_{len(self.dims)} has size {self.top.latent_dim}, "
                             f"expected {self.dims[-1]}")

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def forward(self, encode: Encode | None = None) -> MarkovChain:
        top = self.top(encode) if encode is not None else self.top()
        return MarkovChain(top, list(self.layers)[::-1], self.dims, order="down")


def precision_merge(q: DiagonalNormal, p: DiagonalNormal) -> DiagonalNormal:
    """The Ladder VAE's merge of two diagonal Gaussians (Sønderby et al. 2016, eq. 18-19), broadcast over
    their batch shapes: σ⁻² = σ_q⁻² + σ_p⁻², μ = σ² (μ_q σ_q⁻² + μ_p σ_p⁻²) (the normalised product N(μ_q, σ_q²)
    N(μ_p, σ_p²))."""
    prec_q, prec_p = q.scale.pow(-2), p.scale.pow(-2)
    var = 1.0 / (prec_q + prec_p)
    return DiagonalNormal(var * (q.loc * prec_q + p.loc * prec_p), var.sqrt())


def _mean(q: Distribution, what: str) -> Tensor:
    try:
        return q.mean
    except NotImplementedError:
        raise ConfigError(f"{what}: needs the mean of q(z_1|x), which the {type(q).__name__} posterior does not "
                          "give; use posterior diagonal or full") from None


def bottom_up_pass(first: Distribution, up: Sequence[GaussianLayer]) -> list[Distribution]:
    """[q̂_1, …, q̂_L]: q̂_1 = ``first`` = q(z_1|x), q̂_{l+1} = up[l-1](E q̂_l) (the deterministic pass of means)."""
    out, q = [first], first
    for layer in up:
        q = layer(_mean(q, "the bottom-up pass"))
        out.append(q)
    return out


def top_of_pass(first: Distribution, up: Sequence[GaussianLayer]) -> Distribution:
    """q̂_L of :func:`bottom_up_pass`: what a VampPrior on z_L mixes at its pseudo-inputs, (C,) × (d_L,)."""
    return bottom_up_pass(first, up)[-1]


def posterior_chain(first: Distribution, up: Sequence[GaussianLayer], prior: ChainPrior,
                    inference: str) -> MarkovChain:
    """q(z|x) over z = (z_1, …, z_L) in the direction ``inference`` (module docstring); ``first`` = q(z_1|x)
    (bottom-up) or the bottom-up estimate q̂_1 (top-down, a diagonal Gaussian)."""
    dims = prior.dims
    if inference == "bottom-up":
        return MarkovChain(first, list(up), dims, order="up")
    if inference != "top-down":
        raise ConfigError(f"inference: unknown {inference!r}; choose one of {list(INFERENCE)}")
    estimates = bottom_up_pass(first, up)                                   # q̂_1 … q̂_L, batch (B,)
    if not all(isinstance(q, DiagonalNormal) for q in estimates):
        raise ConfigError("inference top-down: merges diagonal Gaussians; q(z_1|x) is a "
                          f"{type(first).__name__}; use posterior diagonal or inference bottom-up")
    layers: list[GaussianLayer] = list(prior.layers)  # type: ignore[arg-type]  # layers[l-1] = p(z_l|z_{l+1})

    def merged(q_hat: Distribution, down: GaussianLayer) -> Any:
        def conditional(z_above: Tensor) -> DiagonalNormal:                 # q(z_l|z_{l+1}, x)
            return precision_merge(q_hat, down(z_above))                    # type: ignore[arg-type]
        return conditional

    conditionals = [merged(estimates[i], layers[i]) for i in range(len(dims) - 2, -1, -1)]   # z_{L-1} … z_1
    return MarkovChain(estimates[-1], conditionals, dims, order="down")
