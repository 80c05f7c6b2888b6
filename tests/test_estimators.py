"""Estimators: importance-sampled log p(x) and the posterior gap against the exact values."""

from __future__ import annotations

import math

import pytest
import torch

from linear_problems import near_posterior_problem, random_linear_problem
from vaekit import (
    ConfigError,
    VAEConfig,
    active_units,
    bits_per_dim,
    build_vae,
    estimate_log_likelihood,
    kl_divergence,
    kl_per_dimension,
)
from vaekit.inference.estimators import default_chunk_size


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_importance_sampled_log_likelihood_converges_to_exact(float64, posterior):
    """Tolerance: 5 delta-method standard errors (computed from the same draws) plus the O(1/K) bias
    bound Var(w)/(2K E[w]²) = se²/2; a wrong weight (e.g. a missing prior term) misses by > 0.5 nats."""
    truth, model, x = near_posterior_problem(7, posterior=posterior)
    torch.manual_seed(0)
    est = estimate_log_likelihood(model, x, n_samples=5000, chunk_size=700)
    exact = truth.log_marginal(x)
    err = (est.log_likelihood - exact).abs()
    assert torch.all(err < 5 * est.standard_error + est.standard_error**2 / 2 + 1e-6), (err, est.standard_error)
    assert torch.all(est.standard_error < 0.03)                 # the check is informative, not vacuous
    # the posterior gap estimates the exact KL(q_x(z) || p(z|x)); its error adds the ELBO's Monte
    # Carlo error, sd(log w)/sqrt(K) < 0.02 here, to the log-likelihood's
    exact_gap = truth.kl_to_posterior(x, model.encode(x))
    assert torch.all(exact_gap > 0.05)
    assert torch.all((est.posterior_gap - exact_gap).abs() < 5 * est.standard_error + 0.1)
    assert torch.all(est.posterior_gap >= 0)


def test_estimate_is_exact_with_the_exact_posterior(float64):
    truth, model, x = random_linear_problem(8)
    model.encoder = truth.posterior_encoder()
    est = estimate_log_likelihood(model, x, n_samples=64, chunk_size=10)
    torch.testing.assert_close(est.log_likelihood, truth.log_marginal(x), atol=1e-9, rtol=0)
    torch.testing.assert_close(est.posterior_gap, torch.zeros(len(x)), atol=1e-9, rtol=0)


def test_chunking_changes_memory_not_the_estimator(float64):
    """The same seed gives the same draws whatever the chunk size (8 examples x 2 latent dims = 16
    normals per draw, a multiple of torch's 16-number Box-Muller block, so every chunking consumes the
    generator identically): the estimates agree to float rounding, not merely within their errors."""
    truth, model, x = near_posterior_problem(9, n=8)
    exact = truth.log_marginal(x)
    estimates = []
    for chunk in (1, 16, 33, 5000):
        torch.manual_seed(1)
        est = estimate_log_likelihood(model, x, n_samples=3000, chunk_size=chunk)
        assert est.n_samples == 3000
        assert torch.all((est.log_likelihood - exact).abs() < 5 * est.standard_error + 1e-6)
        estimates.append(est)
    for est in estimates[1:]:
        for field in ("log_likelihood", "elbo", "posterior_gap", "standard_error"):
            torch.testing.assert_close(getattr(est, field), getattr(estimates[0], field), rtol=1e-12, atol=1e-12)


def test_kl_per_dimension_sums_to_the_kl(float64):
    _, model, x = random_linear_problem(10, k=3)
    per_dim = kl_per_dimension(model, x)
    assert per_dim.shape == (len(x), 3) and torch.all(per_dim >= 0)
    torch.testing.assert_close(per_dim.sum(-1), kl_divergence(model.encode(x), model.prior()))


def test_active_units_counts_dimensions_whose_mean_varies():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((6,), latent_dim=4, arch="linear"))
    with torch.no_grad():
        model.encoder.mean.weight.zero_()
        model.encoder.mean.weight[0, 0] = 1.0     # Var_x E[z_0] = Var(x_0) = 1
        model.encoder.mean.weight[1, 1] = 0.05    # Var = 0.0025 < 0.01: inactive
    x = torch.randn(4000, 6)
    au = active_units(model, x.split(512))
    assert au.count == 1
    assert abs(au.variances[0].item() - 1.0) < 0.1 and abs(au.variances[1].item() - 0.0025) < 5e-4
    with pytest.raises(ConfigError):
        active_units(model, [x[:1]])


def test_bits_per_dim_follows_the_dequantisation_convention():
    # the uniform density on [0,1)^D (log p = 0) spends exactly log2(L) bits per dimension
    assert bits_per_dim(torch.tensor(0.0), 784).item() == pytest.approx(8.0)
    assert bits_per_dim(torch.tensor(0.0), 64, levels=17).item() == pytest.approx(math.log2(17))
    # 100 nats more likelihood over D = 100 dims saves 1/log 2 bits per dim
    assert bits_per_dim(torch.tensor(100.0), 100).item() == pytest.approx(8 - 1 / math.log(2))


def test_default_chunk_size_budgets_and_encoder_reuse():
    """The default chunk holds about 2^21 decoder outputs on the CPU (cache-sized), 2^24 on other
    devices; the estimator encodes x once however many chunks it draws."""
    assert default_chunk_size(256, 784) == (1 << 21) // (256 * 784) == 10
    assert default_chunk_size(256, 784, device="cpu") == 10
    assert default_chunk_size(256, 784, device="cuda") == (1 << 24) // (256 * 784)
    assert default_chunk_size(256, 784, 1 << 10) == 1
    torch.manual_seed(0)
    model = build_vae(VAEConfig((6,), latent_dim=2, hidden=(8,)))
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    est = estimate_log_likelihood(model, torch.randn(5, 6), n_samples=48, chunk_size=7)
    assert len(calls) == 1 and bool(torch.isfinite(est.log_likelihood).all())
