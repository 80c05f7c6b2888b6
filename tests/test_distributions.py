"""Distributions: closed-form KLs against Monte Carlo, log-densities against SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import MultivariateNormal

from vaekit import DiagonalNormal, ProfiledNormal, kl_divergence, standard_normal
from vaekit.prob.bounds import soft_clamp, soft_clamp_inverse
from vaekit.prob.distributions import as_multivariate_normal, bernoulli


def _mc_kl(q, p, n=400_000):
    z = q.sample((n,))
    diff = q.log_prob(z) - p.log_prob(z)
    return diff.mean(0), diff.std(0) / math.sqrt(n)


def test_kl_diagonal_vs_standard_normal_matches_monte_carlo(float64):
    torch.manual_seed(0)
    q = DiagonalNormal(torch.randn(3, 4), torch.rand(3, 4) + 0.3)
    p = standard_normal(4)
    exact = kl_divergence(q, p)
    formula = 0.5 * (q.loc**2 + q.scale**2 - 1 - 2 * q.scale.log()).sum(-1)
    torch.testing.assert_close(exact, formula)
    mc, se = _mc_kl(q, p)
    assert torch.all((exact - mc).abs() < 5 * se), (exact, mc, se)


def test_kl_full_covariance_vs_diagonal_matches_monte_carlo_and_torch(float64):
    torch.manual_seed(1)
    a = torch.randn(2, 3, 3)
    tril = torch.linalg.cholesky(a @ a.transpose(-1, -2) + 0.5 * torch.eye(3))
    q = MultivariateNormal(torch.randn(2, 3), scale_tril=tril)
    p = DiagonalNormal(torch.randn(3), torch.rand(3) + 0.5)
    exact = kl_divergence(q, p)                       # registered closed form
    reference = torch.distributions.kl_divergence(q, as_multivariate_normal(p.expand((2,))))
    torch.testing.assert_close(exact, reference)
    mc, se = _mc_kl(q, p)
    assert torch.all((exact - mc).abs() < 5 * se)


def test_kl_falls_back_to_monte_carlo_without_closed_form(float64):
    torch.manual_seed(2)
    q = torch.distributions.Independent(torch.distributions.Laplace(torch.zeros(2), torch.ones(2)), 1)
    p = standard_normal(2)
    z = q.sample((200_000,))
    estimate = kl_divergence(q, p, z)
    # KL(Laplace(0,1) || N(0,1)) per dim = -log 2 - 1 + ½ log 2π + ½ E[z²] (E[z²] = 2)
    exact = 2 * (-math.log(2) - 1 + 0.5 * math.log(2 * math.pi) + 1.0)
    assert abs(estimate.item() - exact) < 0.02


def test_gaussian_log_prob_matches_scipy(float64):
    torch.manual_seed(3)
    loc, x, c = torch.randn(5, 7), torch.randn(5, 7), 0.37
    ours = DiagonalNormal(loc, torch.tensor(c).sqrt()).log_prob(x)
    ref = [stats.multivariate_normal(loc[i].numpy(), c * np.eye(7)).logpdf(x[i].numpy()) for i in range(5)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)


def test_image_shaped_gaussian_sums_over_all_event_dims(float64):
    loc, x = torch.zeros(2, 1, 3, 3), torch.ones(2, 1, 3, 3)
    ours = DiagonalNormal(loc, torch.ones(()), event_ndims=3).log_prob(x)
    assert ours.shape == (2,)
    np.testing.assert_allclose(ours.numpy(), stats.norm.logpdf(1.0) * 9)


def test_bernoulli_log_prob_matches_scipy(float64):
    torch.manual_seed(4)
    logits = torch.randn(4, 6) * 3
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    ours = bernoulli(logits, 1).log_prob(x)
    prob = torch.sigmoid(logits).numpy()
    ref = stats.bernoulli(prob).logpmf(x.numpy()).sum(-1)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-9)


def test_profiled_normal_uses_the_maximising_variance(float64):
    torch.manual_seed(5)
    loc, x = torch.randn(8, 5), torch.randn(8, 5)
    seen = []
    total = ProfiledNormal(loc, torch.ones(()), 1, on_estimate=seen.append).log_prob(x).sum().item()
    c_star = ((x - loc) ** 2).mean().item()
    assert seen and abs(seen[0].item() - c_star) < 1e-12
    for c in (0.5 * c_star, 0.9 * c_star, 1.1 * c_star, 2 * c_star):       # c* is the maximiser
        assert DiagonalNormal(loc, torch.tensor(c).sqrt()).log_prob(x).sum().item() < total
    ref = stats.norm(loc.numpy(), math.sqrt(c_star)).logpdf(x.numpy()).sum()
    assert abs(total - ref) < 1e-9


def test_soft_clamp_is_bounded_and_invertible(float64):
    t = torch.linspace(-40, 30, 2001)
    y = soft_clamp(t, -20.0, 12.0)
    assert torch.all(y > -20) and torch.all(y < 12) and torch.all(torch.diff(y) > 0)
    inner = (t > -10) & (t < 5)
    torch.testing.assert_close(soft_clamp_inverse(y[inner], -20.0, 12.0), t[inner])
    mid = (t > 0) & (t < 1)
    assert torch.all((y[mid] - t[mid]).abs() < 1e-4)
    with pytest.raises(ValueError):
        soft_clamp_inverse(torch.tensor([13.0]), -20.0, 12.0)


def test_log_prob_from_the_standardised_draw_equals_log_prob(float64):
    from vaekit.prob.distributions import rsample_with_log_prob

    torch.manual_seed(6)
    a = torch.randn(4, 3, 3)
    tril = torch.linalg.cholesky(a @ a.transpose(-1, -2) + 0.3 * torch.eye(3))
    for q in (MultivariateNormal(torch.randn(4, 3), scale_tril=tril),
              DiagonalNormal(torch.randn(4, 3), torch.rand(4, 3) + 0.1)):
        z, log_q = rsample_with_log_prob(q, 5)
        assert z.shape == (5, 4, 3) and log_q.shape == (5, 4)
        torch.testing.assert_close(log_q, q.log_prob(z))


def test_soft_clamp_deviation_is_bounded_as_documented():
    """-e^(t-hi)·exp(e^(lo-t)) <= soft_clamp(t) - t <= e^(lo-t) on both ranges the library uses, and the
    deviations the module docstring quotes (computed in float64)."""
    from vaekit.prob.bounds import (
        DECODER_LOG_VAR_MAX,
        DECODER_LOG_VAR_MIN,
        ENCODER_LOG_VAR_MAX,
        ENCODER_LOG_VAR_MIN,
        soft_clamp,
    )

    for lo, hi in ((ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX), (DECODER_LOG_VAR_MIN, DECODER_LOG_VAR_MAX)):
        t = torch.linspace(lo - 5, hi + 5, 20001, dtype=torch.float64)
        dev = soft_clamp(t, lo, hi) - t
        upper = torch.exp(lo - t)
        lower = -torch.exp(t - hi) * torch.exp(torch.exp(lo - t))
        assert torch.all(dev <= upper * (1 + 1e-12) + 1e-15) and torch.all(dev >= lower * (1 + 1e-12) - 1e-15)
        inside = soft_clamp(t, lo, hi)
        assert torch.all((inside > lo) & (inside < hi))
    at = torch.tensor([0.0, -15.0], dtype=torch.float64)
    dev = (soft_clamp(at, ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX) - at).abs()
    assert dev[0] == pytest.approx(6.1e-6, rel=0.02) and dev[1] == pytest.approx(6.7e-3, rel=0.02)
    c = torch.tensor(-13.6, dtype=torch.float64)
    assert float(soft_clamp(c, DECODER_LOG_VAR_MIN, DECODER_LOG_VAR_MAX) - c) == pytest.approx(0.087, rel=0.05)
