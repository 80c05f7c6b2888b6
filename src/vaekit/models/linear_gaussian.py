"""The linear-Gaussian model, in closed form: the case where every quantity the estimators
approximate is known exactly (probabilistic PCA / factor analysis).

Model: z ~ N(0, I_K),  x | z ~ N(W z + b, Ψ),  Ψ = c I (pPCA; c > 0 the seed's constant) or
Ψ = diag(ψ) (one variance per dimension). Then, with M = I + Wᵀ Ψ⁻¹ W:

* marginal   p(x)   = N(x; b, W Wᵀ + Ψ);
* posterior  p(z|x) = N(M⁻¹ Wᵀ Ψ⁻¹ (x - b), M⁻¹);
* ELBO(q)    = log N(x; W m + b, Ψ) - ½ tr(Ψ⁻¹ W S Wᵀ) - KL(N(m, S) || N(0, I))  for q = N(m, S);
* log p(x) - ELBO(q) = KL(q || p(z|x)).

The maximum-likelihood pPCA fit (Tipping & Bishop 1999): b = sample mean; with the sample
covariance's eigenvalues λ_1 >= … >= λ_D and eigenvectors U, c = mean(λ_{K+1..D}) and
W = U_K (Λ_K - c I)^{1/2} (up to a rotation of z).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal, kl_divergence

from vaekit.errors import ConfigError, ShapeError
from vaekit.models.decoders import Decoder
from vaekit.models.encoders import GaussianEncoder
from vaekit.models.likelihoods import GaussianLikelihood
from vaekit.models.networks import Affine, Flatten
from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp_inverse
from vaekit.prob.distributions import DiagonalNormal, as_multivariate_normal, standard_normal

__all__ = ["LinearGaussian", "ppca_mle"]


@dataclass(frozen=True)
class LinearGaussian:
    """z ~ N(0, I), x|z ~ N(W z + b, diag(psi)); W (D, K), b (D,), psi (D,) (all equal for pPCA)."""

    W: Tensor
    b: Tensor
    psi: Tensor

    def __post_init__(self) -> None:
        d, k = self.W.shape
        if self.b.shape != (d,) or self.psi.shape != (d,):
            raise ShapeError(f"LinearGaussian: W {tuple(self.W.shape)} needs b and psi of shape ({d},), "
                             f"got {tuple(self.b.shape)} and {tuple(self.psi.shape)}")
        if not bool((self.psi > 0).all()):
            raise ConfigError(f"LinearGaussian: the noise variance must be > 0, got min {self.psi.min().item()}")

    @classmethod
    def ppca(cls, W: Tensor, b: Tensor, c: float | Tensor) -> LinearGaussian:
        """pPCA parameters: Ψ = c I."""
        c = torch.as_tensor(c, dtype=W.dtype, device=W.device)
        return cls(W, b, c.expand(W.shape[0]).clone())

    @classmethod
    def from_model(cls, model) -> LinearGaussian:
        """The linear-Gaussian model a VAE with an affine Gaussian decoder defines (its W, b, c)."""
        decoder = getattr(model, "decoder", None)
        if not (isinstance(decoder, Decoder) and isinstance(decoder.likelihood, GaussianLikelihood)
                and isinstance(decoder.f, Affine)):
            raise ConfigError("LinearGaussian.from_model: needs a Gaussian decoder with an affine f (arch 'linear')")
        W, b = decoder.f.weight.detach(), decoder.f.bias.detach()
        psi = decoder.variance().detach().to(W.dtype).reshape(-1).expand(W.shape[0]).clone()
        return cls(W, b, psi)

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W Wᵀ + Ψ)."""
        return MultivariateNormal(self.b, self.W @ self.W.T + torch.diag(self.psi))

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x), x (B, D) -> (B,)."""
        return self.marginal().log_prob(self._check(x))

    def posterior(self, x: Tensor) -> MultivariateNormal:
        """Exact p(z|x) = N(M⁻¹ Wᵀ Ψ⁻¹ (x - b), M⁻¹), batch shape (B,)."""
        x = self._check(x)
        wt_psi_inv = self.W.T / self.psi                                   # (K, D)
        precision = torch.eye(self.latent_dim, dtype=self.W.dtype, device=self.W.device) + wt_psi_inv @ self.W
        cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        mean = (x - self.b) @ (cov @ wt_psi_inv).T                          # (B, K)
        return MultivariateNormal(mean, covariance_matrix=cov.expand(x.shape[0], -1, -1))

    def elbo(self, x: Tensor, q: Distribution) -> Tensor:
        """Closed-form ELBO of a Gaussian q (batch (B,)) at x (B, D), shape (B,)."""
        x, q = self._check(x), as_multivariate_normal(q)
        mean, cov = q.loc, q.covariance_matrix                              # (B, K), (B, K, K)
        fit = torch.distributions.Normal(mean @ self.W.T + self.b, self.psi.sqrt()).log_prob(x).sum(-1)
        trace = torch.einsum("dk,bkl,dl->b", self.W / self.psi[:, None], cov, self.W)
        prior = standard_normal(self.latent_dim, device=x.device, dtype=x.dtype)
        return fit - 0.5 * trace - kl_divergence(q, as_multivariate_normal(prior.expand(q.batch_shape)))

    def posterior_precision(self) -> Tensor:
        """Λ = M = I + Wᵀ Ψ⁻¹ W, the precision of p(z|x) (the same for every x), (K, K)."""
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype, device=self.W.device)
        return eye + (self.W.T / self.psi) @ self.W

    def best_diagonal_posterior(self, x: Tensor) -> DiagonalNormal:
        """argmin over diagonal Gaussians q of KL(q || p(z|x)): the posterior mean, and precisions
        diag(Λ) (the marginal precisions of p(z|x), not its marginal variances), batch (B,)."""
        mean = self.posterior(x).loc
        scale = self.posterior_precision().diagonal().rsqrt()
        return DiagonalNormal(mean, scale.expand_as(mean))

    def diagonal_approximation_gap(self) -> Tensor:
        """min over diagonal q of KL(q || p(z|x)) = ½ (Σ_i log Λ_ii − log det Λ), the same for every x:
        the approximation gap of a diagonal posterior family (0 for a full covariance)."""
        precision = self.posterior_precision()
        return 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))

    def family_approximation_gap(self, q: Distribution) -> Tensor:
        """min over the family of q of KL(q' || p(z|x)), a 0-d tensor: :meth:`diagonal_approximation_gap` for a
        diagonal Gaussian q, 0 for a full-covariance one (p(z|x) is a member); a TypeError for any other q."""
        if isinstance(q, DiagonalNormal):
            return self.diagonal_approximation_gap()
        if isinstance(q, MultivariateNormal):
            return torch.zeros((), dtype=self.W.dtype, device=self.W.device)
        raise TypeError(f"family_approximation_gap: needs a Gaussian posterior, got {type(q).__name__}")

    def kl_to_posterior(self, x: Tensor, q: Distribution) -> Tensor:
        """Exact KL(q || p(z|x)), shape (B,)."""
        return kl_divergence(as_multivariate_normal(q), self.posterior(x))

    def posterior_encoder(self) -> GaussianEncoder:
        """A full-covariance linear encoder whose q_x(z) is exactly p(z|x), for x of shape (D,)."""
        d, k = self.W.shape
        encoder = GaussianEncoder(Flatten((d,)), d, k, (d,), covariance="full").to(self.W.dtype)
        post = self.posterior(self.b[None])
        wt_psi_inv = self.W.T / self.psi
        tril = torch.linalg.cholesky(post.covariance_matrix[0])
        with torch.no_grad():
            encoder.mean.weight.copy_(post.covariance_matrix[0] @ wt_psi_inv)
            encoder.mean.bias.copy_(-(encoder.mean.weight @ self.b))
            encoder.log_var.weight.zero_()
            encoder.log_var.bias.copy_(soft_clamp_inverse(2 * tril.diagonal().log(), ENCODER_LOG_VAR_MIN,
                                                          ENCODER_LOG_VAR_MAX))
            encoder.off_diagonal.weight.zero_()
            rows, cols = torch.tril_indices(k, k, offset=-1)
            encoder.off_diagonal.bias.copy_(tril[rows, cols])
        return encoder

    def _check(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.W.shape[0]:
            raise ShapeError(f"x of shape {tuple(x.shape)} does not match (batch, {self.W.shape[0]})")
        return x


def ppca_mle(x: Tensor, latent_dim: int) -> LinearGaussian:
    """Maximum-likelihood pPCA (Tipping & Bishop 1999) of data x (N, D) with K = latent_dim < D."""
    if x.ndim != 2:
        raise ShapeError(f"ppca_mle: x must have shape (N, D), got {tuple(x.shape)}")
    n, d = x.shape
    if not 0 < latent_dim < d:
        raise ConfigError(f"ppca_mle: latent_dim must lie in [1, {d - 1}], got {latent_dim}")
    b = x.mean(0)
    cov = (x - b).T @ (x - b) / n                                   # maximum-likelihood covariance
    eigvals, eigvecs = torch.linalg.eigh(cov)                       # ascending
    eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1)
    c = eigvals[latent_dim:].mean()
    W = eigvecs[:, :latent_dim] * (eigvals[:latent_dim] - c).clamp_min(0).sqrt()
    return LinearGaussian.ppca(W, b, c)
