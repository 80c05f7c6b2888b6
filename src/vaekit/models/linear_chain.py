"""A linear-Gaussian model with several layers of latents, in closed form: the exact case of a model
with ``layers`` > 1 and the linear architecture (:mod:`vaekit.models.stacked`).

Model (blocks z_1 … z_L of sizes d_1 … d_L, data x of size D):

    z_L ~ N(0, I),   z_l | z_{l+1} ~ N(A_l z_{l+1} + a_l, diag(s_l))  (l = L-1 … 1),   x | z_1 ~ N(W z_1 + b, diag(ψ)).

Every variable is an affine function of independent Gaussian noise, so (z, x) with z = (z_1, …, z_L) is
jointly Gaussian. Writing v = (z_1, …, z_L, x) as v = B v + c + e with e ~ N(0, diag(n)) (B holds A_l in
block (l, l+1) and W in block (x, 1); c holds a_l and b; n holds s_l, 1 for z_L and ψ), and T = (I − B)⁻¹:

    E[v] = T c,   Cov[v] = T diag(n) Tᵀ.

For two layers that gives x ~ N(W a_1 + b, W (A_1 A_1ᵀ + diag s_1) Wᵀ + diag ψ). From the joint:

* prior      p(z)   = N(E[z], Cov[z]);
* marginal   p(x)   = N(E[x], Cov[x]);
* posterior  p(z|x) = N(E[z] + Σ_zx Σ_xx⁻¹ (x − E[x]), Σ_zz − Σ_zx Σ_xx⁻¹ Σ_xz);
* ELBO(q)    = log N(x; W m_1 + b, Ψ) − ½ tr(Ψ⁻¹ W S_11 Wᵀ) − KL(q || p(z))  for a Gaussian q = N(m, S)
               over z (m_1, S_11: its z_1 block);
* log p(x) − ELBO(q) = KL(q || p(z|x)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal, kl_divergence

from vaekit.errors import ConfigError, ShapeError
from vaekit.prob.distributions import as_multivariate_normal

__all__ = ["LinearGaussianChain"]


@dataclass(frozen=True)
class LinearGaussianChain:
    """x | z_1 ~ N(W z_1 + b, diag ψ); z_l | z_{l+1} ~ N(A_l z_{l+1} + a_l, diag s_l); z_L ~ N(0, I).

    ``W`` (D, d_1), ``b`` and ``psi`` (D,); ``weights`` (A_1, …, A_{L-1}), A_l of shape (d_l, d_{l+1});
    ``biases`` (a_l) and ``variances`` (s_l), each (d_l,)."""

    W: Tensor
    b: Tensor
    psi: Tensor
    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    variances: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        d, k = self.W.shape
        if self.b.shape != (d,) or self.psi.shape != (d,):
            raise ShapeError(f"LinearGaussianChain: W {tuple(self.W.shape)} needs b and psi of shape ({d},), "
                             f"got {tuple(self.b.shape)} and {tuple(self.psi.shape)}")
        if not len(self.weights) == len(self.biases) == len(self.variances):
            raise ShapeError("LinearGaussianChain: give one bias and one variance per weight A_l")
        below = k
        for i, (A, a, s) in enumerate(zip(self.weights, self.biases, self.variances, strict=True)):
            if A.ndim != 2 or A.shape[0] != below or a.shape != (below,) or s.shape != (below,):
                raise ShapeError(f"LinearGaussianChain: A_{i + 1} {tuple(A.shape)}, a_{i + 1} {tuple(a.shape)} and "
                                 f"s_{i + 1} {tuple(s.shape)} do not fit z_{i + 1} of size {below}")
            below = A.shape[1]
        if not all(bool((v > 0).all()) for v in (self.psi, *self.variances)):
            raise ConfigError("LinearGaussianChain: every noise variance must be > 0")

    @property
    def dims(self) -> tuple[int, ...]:
        """(d_1, …, d_L)."""
        return (self.W.shape[1], *(A.shape[1] for A in self.weights))

    @property
    def latent_dim(self) -> int:
        """Σ_l d_l, the size of z = (z_1, …, z_L)."""
        return sum(self.dims)

    def joint(self) -> tuple[Tensor, Tensor]:
        """E[v] and Cov[v] of v = (z_1, …, z_L, x): (K + D,) and (K + D, K + D), K = Σ_l d_l."""
        dims, d = self.dims, self.W.shape[0]
        starts = [sum(dims[:i]) for i in range(len(dims) + 1)]          # z_l at starts[l-1]:starts[l]; x after
        size = starts[-1] + d
        B = self.W.new_zeros(size, size)
        c = self.W.new_zeros(size)
        noise = self.W.new_ones(size)
        for i, (A, a, s) in enumerate(zip(self.weights, self.biases, self.variances, strict=True)):
            B[starts[i]:starts[i + 1], starts[i + 1]:starts[i + 2]] = A
            c[starts[i]:starts[i + 1]] = a
            noise[starts[i]:starts[i + 1]] = s
        B[starts[-1]:, :dims[0]] = self.W
        c[starts[-1]:] = self.b
        noise[starts[-1]:] = self.psi
        eye = torch.eye(size, dtype=self.W.dtype, device=self.W.device)
        T = torch.linalg.solve(eye - B, eye)                             # (I - B)⁻¹
        cov = (T * noise) @ T.T
        return T @ c, 0.5 * (cov + cov.T)

    def prior(self) -> MultivariateNormal:
        """p(z) over z = (z_1, …, z_L)."""
        mean, cov = self.joint()
        k = self.latent_dim
        return MultivariateNormal(mean[:k], cov[:k, :k])

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(E[x], Cov[x])."""
        mean, cov = self.joint()
        k = self.latent_dim
        return MultivariateNormal(mean[k:], cov[k:, k:])

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x), x (B, D) -> (B,)."""
        return self.marginal().log_prob(self._check(x))

    def posterior(self, x: Tensor) -> MultivariateNormal:
        """Exact p(z|x) by Gaussian conditioning, batch shape (B,), event (Σ_l d_l,)."""
        x = self._check(x)
        mean, cov = self.joint()
        k = self.latent_dim
        chol = torch.linalg.cholesky(cov[k:, k:])
        gain = torch.cholesky_solve(cov[k:, :k], chol).T                # Σ_zx Σ_xx⁻¹, (K, D)
        post_cov = cov[:k, :k] - gain @ cov[k:, :k]
        post_mean = mean[:k] + (x - mean[k:]) @ gain.T                  # (B, K)
        return MultivariateNormal(post_mean, covariance_matrix=0.5 * (post_cov + post_cov.T).expand(x.shape[0], -1, -1))

    def elbo(self, x: Tensor, q: Distribution) -> Tensor:
        """Closed-form ELBO of a Gaussian q over z (batch (B,)) at x (B, D), shape (B,)."""
        x, q = self._check(x), as_multivariate_normal(q)
        d1 = self.dims[0]
        mean, cov = q.loc[..., :d1], q.covariance_matrix[..., :d1, :d1]  # the z_1 block
        fit = torch.distributions.Normal(mean @ self.W.T + self.b, self.psi.sqrt()).log_prob(x).sum(-1)
        trace = torch.einsum("dk,bkl,dl->b", self.W / self.psi[:, None], cov, self.W)
        return fit - 0.5 * trace - kl_divergence(q, self.prior().expand(q.batch_shape))

    def kl_to_posterior(self, x: Tensor, q: Distribution) -> Tensor:
        """Exact KL(q || p(z|x)) of a Gaussian q, shape (B,); a TypeError for any other q."""
        return kl_divergence(as_multivariate_normal(q), self.posterior(x))

    def _check(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.W.shape[0]:
            raise ShapeError(f"x of shape {tuple(x.shape)} does not match (batch, {self.W.shape[0]})")
        return x
