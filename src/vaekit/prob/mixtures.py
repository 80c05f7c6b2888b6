"""Mixtures over vectors, for the learned priors: p(z) = Σ_c π_c p_c(z), c = 1..C.

:class:`Mixture` is a ``torch.distributions.MixtureSameFamily`` whose C components form one
distribution with batch shape (C,) and event shape (K,) (a :class:`~vaekit.prob.distributions.DiagonalNormal`
or ``MultivariateNormal`` for the built-in encoders, or another family with ``log_prob``):

* ``log_prob(z) = logsumexp_c [log π_c + log p_c(z)]`` for z (*lead, K) → (*lead,), computed in
  chunks of z so that the temporaries stay below :data:`CHUNK_BUDGET` numbers. For diagonal
  Gaussian components in float32 on the CPU, the squared distances are matrix products in float64
  (:func:`_squared_distances`) in place of a (rows, C, K) elementwise pass (except when gradients
  are recorded for fewer than :data:`PRODUCTS_MIN_COMPONENTS` components);
* ``sample_with(n, generator)``: n draws (n, K) taken from ``generator`` only (component c ~ π by
  ``torch.multinomial``, then z = μ_c + L_c ε for Gaussian components);
* ``marginal_kl(q)``: KL(q_i || p_i) of each latent dimension's marginal, Gaussian q and Gaussian
  components only (Gauss–Hermite quadrature, see :meth:`Mixture.marginal_kl`).

No KL(q || p) is registered for a mixture: :func:`~vaekit.prob.distributions.kl_divergence` takes
the Monte Carlo estimate mean_s [log q(z_s) - log p(z_s)] on the objective's own draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, MixtureSameFamily, MultivariateNormal

from vaekit.errors import ShapeError
from vaekit.prob.distributions import DiagonalNormal, marginal_moments

__all__ = ["Mixture", "gaussian_mixture", "CHUNK_BUDGET", "HERMITE_NODES", "PRODUCTS_MIN_COMPONENTS"]

#: Numbers one chunk's (rows, C, K) temporaries hold at most in ``log_prob`` and ``marginal_kl``.
CHUNK_BUDGET = 1 << 22
#: Components from which ``log_prob`` takes the matrix products also when gradients are recorded; below, the
#: products' fixed cost (the float64 casts) exceeds the elementwise pass at a training batch's size
#: (``benchmarks/mixture_prior.py``: 128 rows, 10 components, forward and backward).
PRODUCTS_MIN_COMPONENTS = 32
#: Gauss–Hermite nodes of the per-dimension KL's quadrature (exact for polynomials of degree < 2·nodes).
HERMITE_NODES = 48


def _hermite(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Nodes t_j and normalised weights w_j / √π of Gauss–Hermite quadrature:
    E_{N(m, v)}[f(z)] ≈ Σ_j (w_j / √π) f(m + √(2v) t_j)."""
    nodes, weights = np.polynomial.hermite.hermgauss(HERMITE_NODES)
    return (torch.as_tensor(nodes, dtype=dtype, device=device),
            torch.as_tensor(weights / math.sqrt(math.pi), dtype=dtype, device=device))


def _squared_distances(loc: Tensor, scale: Tensor) -> Callable[[Tensor], Tensor]:
    """z (R, K) ↦ d (R, C), d_rc = Σ_i (z_ri - μ_ci)² / σ_ci², as matrix products in float64:

        d = [z², z] @ [1/σ², -2 μ/σ²]ᵀ + Σ_i μ_ci² / σ_ci²

    (one (R, 2K) × (2K, C) product; autograd's gradients are products of the same shapes). Expanding
    the square cancels terms as large as (|z| + |μ|)² / σ², which float64 holds to ~1e-16 of their size,
    so d is as accurate as the float32 elementwise pass (and more) while reading O((R + C) K) numbers
    instead of streaming R·C·K through memory several times."""
    loc64 = loc.double()
    precision = scale.double().square().reciprocal()                                      # (C, K)
    weights = torch.cat([precision, -2.0 * loc64 * precision], dim=-1).T                  # (2K, C)
    offset = (loc64.square() * precision).sum(-1)                                         # (C,)

    def distances(z: Tensor) -> Tensor:
        z64 = z.double()
        return torch.addmm(offset, torch.cat([z64.square(), z64], dim=-1), weights)       # (R, C)
    return distances


class Mixture(MixtureSameFamily):
    """p(z) = Σ_c π_c p_c(z) with π = softmax(``logits``) (C,) and ``components`` of batch shape (C,),
    event shape (K,); the mixture has batch shape () and event shape (K,)."""

    def __init__(self, logits: Tensor, components: Distribution):
        if logits.ndim != 1 or tuple(components.batch_shape) != (logits.shape[0],) \
                or len(components.event_shape) != 1:
            raise ShapeError(f"Mixture: needs {logits.shape[0] if logits.ndim == 1 else '?'} components with batch "
                             f"shape (C,) and an event shape (K,), got logits {tuple(logits.shape)}, components "
                             f"of batch shape {tuple(components.batch_shape)}, event shape "
                             f"{tuple(components.event_shape)}")
        super().__init__(Categorical(logits=logits, validate_args=False), components, validate_args=False)

    @property
    def n_components(self) -> int:
        return int(self.mixture_distribution.logits.shape[-1])

    @property
    def latent_dim(self) -> int:
        return int(self.event_shape[0])

    def _rows_per_chunk(self, extra: int = 1) -> int:
        return max(1, CHUNK_BUDGET // (self.n_components * self.latent_dim * extra))

    def _products_apply(self) -> bool:
        """Whether the matrix-product form applies: diagonal Gaussian float32 components on the CPU."""
        comp = self.component_distribution
        return (isinstance(comp, DiagonalNormal) and len(comp.event_shape) == 1
                and comp.loc.dtype == torch.float32 and comp.loc.device.type == "cpu")

    def _uses_products(self, value: Tensor) -> bool:
        """Whether ``log_prob(value)`` takes the matrix-product form: where it applies, unless gradients are
        recorded for fewer than :data:`PRODUCTS_MIN_COMPONENTS` components."""
        if not self._products_apply():
            return False
        comp = cast(DiagonalNormal, self.component_distribution)          # what _products_apply checked
        recorded = torch.is_grad_enabled() and any(t.requires_grad for t in (value, comp.loc, comp.scale))
        return self.n_components >= PRODUCTS_MIN_COMPONENTS or not recorded

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(z) = logsumexp_c [log π_c + log p_c(z)] for z (*lead, K), shape ``lead``."""
        k = self.latent_dim
        if value.ndim < 1 or value.shape[-1] != k:
            raise ShapeError(f"Mixture.log_prob: z of shape {tuple(value.shape)} does not end in the latent size {k}")
        log_weights = self.mixture_distribution.logits                       # (C,), normalised
        rows = value.reshape(-1, k)                                          # (N, K)
        products = self._uses_products(value)
        component_log_prob = self._component_log_prob(products)
        rows_per_chunk = max(1, CHUNK_BUDGET // (self.n_components + 2 * k)) if products else self._rows_per_chunk()
        parts = [torch.logsumexp(component_log_prob(chunk) + log_weights, -1)  # (R, C) -> (R,)
                 for chunk in rows.split(rows_per_chunk)]
        return torch.cat(parts).reshape(value.shape[:-1])

    def _component_log_prob(self, products: bool = False) -> Callable[[Tensor], Tensor]:
        """z (R, K) ↦ log p_c(z) (R, C). Diagonal Gaussian components:
        log p_c(z) = -½ Σ_i ((z_i - μ_ci) / σ_ci)² - Σ_i log σ_ci - (K/2) log 2π, the squared distances
        by :func:`_squared_distances` with ``products`` (see ``_uses_products``), otherwise in one fused
        (R, C, K) expression (the temporaries of ``Normal.log_prob`` halved); any other family through its
        own ``log_prob`` on z expanded to (R, C, K)."""
        comp, c, k = self.component_distribution, self.n_components, self.latent_dim
        if isinstance(comp, DiagonalNormal) and len(comp.event_shape) == 1:
            loc, scale = comp.loc, comp.scale                                            # (C, K)
            const = scale.log().sum(-1) + 0.5 * k * math.log(2 * math.pi)                # (C,)
            if products:
                distances = _squared_distances(loc, scale)
                return lambda z: -0.5 * distances(z).to(z.dtype) - const
            inv_scale = scale.reciprocal()
            return lambda z: -0.5 * ((z.unsqueeze(-2) - loc) * inv_scale).square().sum(-1) - const
        return lambda z: comp.log_prob(z.unsqueeze(-2).expand(-1, c, k))

    def gaussian_parts(self) -> tuple[Tensor, Tensor] | None:
        """(μ (C, K), L (C, K, K) or σ (C, K)) of Gaussian components, else None. The second is a
        lower-triangular scale for ``MultivariateNormal`` components, the standard deviations for
        diagonal ones."""
        comp = self.component_distribution
        if isinstance(comp, DiagonalNormal) and len(comp.event_shape) == 1:
            return comp.loc, comp.scale
        if isinstance(comp, MultivariateNormal):
            return comp.loc, comp.scale_tril
        return None

    @torch.no_grad()
    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        """n draws (n, K) from ``generator`` alone: c_s ~ Categorical(π), z_s = μ_{c_s} + L_{c_s} ε_s with
        ε_s ~ N(0, I) for Gaussian components; for other components, torch's generators seeded from
        ``generator`` within a forked random state (the global state is left as it was)."""
        probs = self.mixture_distribution.probs
        parts = self.gaussian_parts()
        if parts is None:
            seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
            devices = [probs.device] if probs.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                return self.sample((n,))
        loc, scale = parts
        index = torch.multinomial(probs, n, replacement=True, generator=generator)   # (n,)
        eps = torch.randn((n, self.latent_dim), generator=generator, device=loc.device, dtype=loc.dtype)
        if scale.ndim == 3:                                                           # L (C, K, K)
            return loc[index] + (scale[index] @ eps.unsqueeze(-1)).squeeze(-1)
        return loc[index] + scale[index] * eps

    def marginal_kl(self, q: Distribution) -> Tensor:
        """KL(q_i || p_i) for each latent dimension i, shape (*batch, K), for a Gaussian q = N(m, S)
        (diagonal or full) and Gaussian components. p_i is the 1-D mixture Σ_c π_c N(μ_ci, s_ci²)
        (s_ci² the component's i-th variance), q_i = N(m_i, v_i) with v_i = S_ii, and

            KL(q_i || p_i) = -½ log(2π e v_i) - E_{q_i}[log p_i(z)],
            E_{q_i}[log p_i(z)] ≈ Σ_j (w_j / √π) log p_i(m_i + √(2 v_i) t_j)

        (Gauss–Hermite, :data:`HERMITE_NODES` nodes t_j, weights w_j: exact where log p_i is a
        polynomial of degree < 2·nodes, e.g. a one-component mixture; a smooth approximation otherwise).
        Deterministic and differentiable in q and p. For a mixture the sum over i is not KL(q || p):
        p is not the product of its marginals. Other families raise NotImplementedError."""
        parts = self.gaussian_parts()
        if parts is None:
            raise NotImplementedError(f"no per-dimension KL against mixture components of type "
                                      f"{type(self.component_distribution).__name__}")
        mean, var = marginal_moments(q)                                        # (*batch, K) each
        loc, scale = parts
        var_p = (scale**2).sum(-1) if scale.ndim == 3 else scale**2            # (C, K)
        log_weights = self.mixture_distribution.logits[:, None]                # (C, 1)
        nodes, weights = _hermite(mean.dtype, mean.device)                     # (J,)
        k = self.latent_dim
        m, v = mean.reshape(-1, k), var.reshape(-1, k)
        out = []
        for m_r, v_r in zip(m.split(self._rows_per_chunk(HERMITE_NODES)),
                            v.split(self._rows_per_chunk(HERMITE_NODES)), strict=True):
            z = m_r[:, None, :] + (2 * v_r).sqrt()[:, None, :] * nodes[:, None]          # (R, J, K)
            log_n = -0.5 * ((z[:, :, None, :] - loc) ** 2 / var_p + torch.log(2 * math.pi * var_p))  # (R, J, C, K)
            log_p = torch.logsumexp(log_n + log_weights, -2)                             # (R, J, K)
            cross = (weights[:, None] * log_p).sum(1)                                    # (R, K)
            out.append(-0.5 * (torch.log(2 * math.pi * v_r) + 1) - cross)
        return torch.cat(out).reshape(mean.shape)


def gaussian_mixture(weights: Tensor, means: Tensor, covariances: Tensor) -> Mixture:
    """Σ_c π_c N(m_c, S_c) as a :class:`Mixture`: ``weights`` π (C,) (positive, summing to 1), ``means`` (C, K),
    full ``covariances`` (C, K, K) (positive definite)."""
    return Mixture(weights.log(), MultivariateNormal(means, covariance_matrix=covariances, validate_args=False))
