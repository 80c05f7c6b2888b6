"""A closed-form start for the linear family (``vaekit train --init ppca``): the exact model instead of a
random one.

For data x_1..x_N (D columns) and K latents, the decoder is set to the maximum-likelihood pPCA fit
(Tipping & Bishop 1999, :func:`vaekit.ppca_mle`): b = the mean, c = the mean of the D − K smallest
eigenvalues of the sample covariance, W = U_K (Λ_K − c I)^{1/2}; with a fixed c (a number) W is the
maximiser for that c, U_K (Λ_K − c I)_+^{1/2}. The encoder is set to the best posterior of its family:

* full covariance: q_x(z) = p(z|x) = N(M⁻¹ Wᵀ Ψ⁻¹ (x − b), M⁻¹), M = I + Wᵀ Ψ⁻¹ W (the ELBO is then log p(x));
* diagonal: the same mean and precisions diag(M), argmin of KL(q || p(z|x)) over diagonal q (the gap left,
  ½ (Σ log M_jj − log det M), is the family's approximation gap, :meth:`LinearGaussian.diagonal_approximation_gap`).

The ELBO's maximum over a full-covariance linear VAE is exactly this point (Lucas et al. 2019), so training
from it has nothing left to gain.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaekit.errors import ConfigError
from vaekit.models.linear_gaussian import LinearGaussian, ppca_mle
from vaekit.models.variance import FixedVariance, LearnedVariance, OptimalVariance
from vaekit.prob.bounds import (
    DECODER_LOG_VAR_MAX,
    DECODER_LOG_VAR_MIN,
    ENCODER_LOG_VAR_MAX,
    ENCODER_LOG_VAR_MIN,
    soft_clamp_inverse,
)

__all__ = ["init_ppca"]


def _ppca_for(model, x: Tensor) -> LinearGaussian:
    """The pPCA maximum-likelihood fit of x (N, D), for the model's c: the MLE's, or its own fixed c."""
    k = int(model.latent_dim)
    fit = ppca_mle(x, k)
    variance = model.decoder.likelihood.variance
    if not isinstance(variance, FixedVariance):
        return fit
    c = float(variance())
    cov = (x - fit.b).T @ (x - fit.b) / x.shape[0]
    eigvals, eigvecs = torch.linalg.eigh(cov)
    eigvals, eigvecs = eigvals.flip(0)[:k], eigvecs.flip(1)[:, :k]
    return LinearGaussian.ppca(eigvecs * (eigvals - c).clamp_min(0).sqrt(), fit.b, c)


@torch.no_grad()
def init_ppca(model, x: Tensor) -> LinearGaussian:
    """Set ``model`` (a linear VAE: affine f, Gaussian decoder, N(0, I) prior, Gaussian encoder) to the pPCA
    maximum-likelihood fit of x (N, *data_shape) and its encoder to the best posterior of its family (module
    docstring), in place; returns the fit. Anything else is a ConfigError naming what is missing."""
    if model.closed_form() is None:
        raise ConfigError("init ppca: needs a linear Gaussian model (--arch linear, --likelihood gaussian, "
                          "--prior standard)")
    encoder = model.encoder
    if getattr(encoder, "covariance", None) not in ("diagonal", "full"):
        raise ConfigError("init ppca: needs a Gaussian posterior (--posterior diagonal or full)")
    flat = x.reshape(x.shape[0], -1).double()
    if flat.shape[0] < 2 or not model.latent_dim < flat.shape[1]:
        raise ConfigError(f"init ppca: needs at least 2 examples and --latent-dim below the data's "
                          f"{flat.shape[1]} dimensions, got {flat.shape[0]} examples and {model.latent_dim}")
    fit = _ppca_for(model, flat)
    dtype = model.decoder.f.weight.dtype
    model.decoder.f.linear.weight.copy_(fit.W.to(dtype))
    model.decoder.f.linear.bias.copy_(fit.b.to(dtype))
    _set_variance(model.decoder.likelihood.variance, float(fit.psi[0]))
    exact = fit.posterior_encoder()                                      # q_x(z) = p(z|x), full covariance
    encoder.mean.weight.copy_(exact.mean.weight.to(dtype))
    encoder.mean.bias.copy_(exact.mean.bias.to(dtype))
    encoder.log_var.weight.zero_()
    if encoder.covariance == "full":
        encoder.log_var.bias.copy_(exact.log_var.bias.to(dtype))
        encoder.off_diagonal.weight.zero_()
        encoder.off_diagonal.bias.copy_(exact.off_diagonal.bias.to(dtype))
    else:                                                                # variances 1 / M_jj
        log_var = -fit.posterior_precision().diagonal().log()
        encoder.log_var.bias.copy_(soft_clamp_inverse(log_var, ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX).to(dtype))
    return fit


def _set_variance(variance, c: float) -> None:
    """Set a decoder variance module to c (a fixed c is left as it is: the fit used it)."""
    if isinstance(variance, OptimalVariance):
        variance.running_c.fill_(c)
        variance.num_updates.fill_(1)
    elif isinstance(variance, LearnedVariance):
        variance.log_c.fill_(float(soft_clamp_inverse(torch.tensor(math.log(c)), DECODER_LOG_VAR_MIN,
                                                      DECODER_LOG_VAR_MAX)))
