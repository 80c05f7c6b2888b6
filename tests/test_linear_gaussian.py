"""The exact linear-Gaussian reference against SciPy, brute-force Bayes and scikit-learn's pPCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.decomposition import PCA

from linear_problems import random_linear_problem
from vaekit import ConfigError, LinearGaussian, ShapeError, ppca_mle


def test_log_marginal_matches_scipy(float64):
    truth, _, x = random_linear_problem(0, d=6, k=3)
    cov = truth.W @ truth.W.T + torch.diag(truth.psi)
    ref = stats.multivariate_normal(truth.b.numpy(), cov.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(truth.log_marginal(x).numpy(), ref, rtol=1e-10)


def test_posterior_matches_gaussian_conditioning(float64):
    """p(z|x) from the joint N([0, b], [[I, Wᵀ], [W, WWᵀ+Ψ]]) by the Schur complement."""
    g = torch.Generator().manual_seed(1)
    W, b, psi = torch.randn(5, 2, generator=g), torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.2
    model = LinearGaussian(W, b, psi)                          # factor analysis: one variance per dim
    x = torch.randn(4, 5, generator=g)
    sxx = W @ W.T + torch.diag(psi)
    gain = W.T @ torch.linalg.inv(sxx)
    post = model.posterior(x)
    torch.testing.assert_close(post.loc, (x - b) @ gain.T)
    torch.testing.assert_close(post.covariance_matrix[0], torch.eye(2) - gain @ W)


def test_kl_to_posterior_is_zero_for_the_posterior_and_positive_otherwise(float64):
    truth, model, x = random_linear_problem(2)
    assert torch.all(truth.kl_to_posterior(x, model.encode(x)) > 1e-3)
    torch.testing.assert_close(truth.kl_to_posterior(x, truth.posterior(x)), torch.zeros(len(x)), atol=1e-10, rtol=0)


def test_ppca_mle_matches_scikit_learn_and_beats_perturbations(float64):
    truth, _, _ = random_linear_problem(3, d=8, k=3)
    x = truth.marginal().sample((400,))
    fit = ppca_mle(x, 3)
    ours = fit.log_marginal(x).mean().item()
    sk = PCA(n_components=3).fit(x.numpy())
    # scikit-learn's pPCA uses the unbiased covariance (divisor N - 1); ours is the exact maximiser
    assert abs(fit.psi[0].item() - sk.noise_variance_ * (400 - 1) / 400) < 1e-10
    assert 0 <= ours - sk.score(x.numpy()) < 1e-4
    g = torch.Generator().manual_seed(0)
    for _ in range(5):                                          # a maximum: nearby models are worse
        W = fit.W + 0.05 * torch.randn(fit.W.shape, generator=g)
        nearby = LinearGaussian.ppca(W, fit.b + 0.05 * torch.randn(8, generator=g), fit.psi[0] * 1.05)
        assert nearby.log_marginal(x).mean().item() < ours


def test_errors_name_the_shapes(float64):
    truth, _, _ = random_linear_problem(0, d=5)
    with pytest.raises(ShapeError, match=r"\(3, 4\)"):
        truth.log_marginal(torch.zeros(3, 4))
    with pytest.raises(ShapeError):
        LinearGaussian(torch.zeros(5, 2), torch.zeros(4), torch.ones(5))
    with pytest.raises(ConfigError, match="> 0"):
        LinearGaussian.ppca(torch.zeros(5, 2), torch.zeros(5), 0.0)
    with pytest.raises(ConfigError, match="latent_dim"):
        ppca_mle(torch.zeros(10, 5), 5)
