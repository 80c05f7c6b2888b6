"""Objectives: the ELBO and L_K against the exact linear-Gaussian quantities."""

from __future__ import annotations

import math

import pytest
import torch

from linear_problems import random_linear_problem
from vaekit import ConfigError, LinearGaussian, ShapeError, VAEConfig, build_vae, elbo, elbo_terms, iwae_bound
from vaekit.inference.estimators import kl_per_dimension


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_elbo_below_exact_log_likelihood_and_gap_is_exact_kl(float64, posterior):
    for seed in range(5):
        truth, model, x = random_linear_problem(seed, posterior=posterior)
        q = model.encode(x)
        exact_elbo = truth.elbo(x, q)
        log_px = truth.log_marginal(x)
        assert torch.all(exact_elbo <= log_px)
        # log p(x) - ELBO = KL(q_x(z) || p(z|x)), three independently computed closed forms
        torch.testing.assert_close(log_px - exact_elbo, truth.kl_to_posterior(x, q), atol=1e-5, rtol=0)


def test_model_read_back_as_linear_gaussian(float64):
    truth, model, x = random_linear_problem(0)
    read = LinearGaussian.from_model(model)
    torch.testing.assert_close(read.log_marginal(x), truth.log_marginal(x))


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_monte_carlo_elbo_converges_to_closed_form(float64, analytic_kl):
    truth, model, x = random_linear_problem(3)
    torch.manual_seed(0)
    n = 20_000
    draws = torch.stack([elbo(model, x, n_samples=1, analytic_kl=analytic_kl) for _ in range(200)])
    # 200 single-draw estimates: unbiased for the exact ELBO; 5 standard errors of tolerance
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    exact = truth.elbo(x, model.encode(x))
    assert torch.all((mean - exact).abs() < 5 * se + 1e-9), (mean - exact, se)
    many = elbo(model, x, n_samples=n, analytic_kl=analytic_kl)
    assert torch.all((many - exact).abs() < 5 * se * math.sqrt(200 / n) + 1e-9)


def test_elbo_equals_log_likelihood_when_q_is_the_exact_posterior(float64):
    truth, model, x = random_linear_problem(4)
    model.encoder = truth.posterior_encoder()
    # every importance weight p(x, z)/p(z|x) equals p(x): even a single draw gives log p(x)
    torch.testing.assert_close(elbo(model, x, analytic_kl=False), truth.log_marginal(x), atol=1e-9, rtol=0)
    torch.testing.assert_close(truth.elbo(x, model.encode(x)), truth.log_marginal(x), atol=1e-9, rtol=0)
    torch.testing.assert_close(iwae_bound(model, x, n_samples=7), truth.log_marginal(x), atol=1e-9, rtol=0)


def test_iwae_bound_increases_with_k_and_approaches_log_likelihood(float64):
    truth, model, x = random_linear_problem(5, n=4)
    torch.manual_seed(0)
    log_px = truth.log_marginal(x)
    means, ses = [], []
    for k in (1, 5, 50, 500):
        draws = torch.stack([iwae_bound(model, x, n_samples=k) for _ in range(400)])   # (400, B)
        means.append(draws.mean(0))
        ses.append(draws.std(0) / 20)
    for lo, hi, se_lo, se_hi in zip(means, means[1:], ses, ses[1:], strict=False):
        assert torch.all(hi > lo - 3 * (se_lo**2 + se_hi**2).sqrt())          # non-decreasing in K
    assert torch.all(means[-1] <= log_px + 3 * ses[-1])                          # still a lower bound
    gap_1, gap_500 = log_px - means[0], log_px - means[-1]
    assert torch.all(gap_500 < 0.1 * gap_1 + 3 * ses[-1])                         # approaches log p(x)


def test_beta_weights_the_kl_and_shapes_are_per_example():
    model = build_vae(VAEConfig((1, 4, 4), latent_dim=3, hidden=(8,)))
    x = torch.rand(5, 1, 4, 4)
    torch.manual_seed(0)
    t1 = elbo_terms(model, x, beta=1.0)
    torch.manual_seed(0)
    t2 = elbo_terms(model, x, beta=0.25)
    for t in (t1, t2):
        assert t.objective.shape == t.elbo.shape == t.kl.shape == t.reconstruction.shape == (5,)
    torch.testing.assert_close(t2.objective, t2.reconstruction - 0.25 * t2.kl)
    torch.testing.assert_close(t1.elbo, t2.elbo)
    assert iwae_bound(model, x, n_samples=3).shape == (5,)


def test_free_bits_floors_each_dimension_but_not_the_elbo():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((6,), latent_dim=4, hidden=(8,)))
    x = torch.randn(10, 6)
    t = elbo_terms(model, x, free_bits=5.0)
    assert torch.allclose(t.kl_penalty.mean(), torch.tensor(4 * 5.0))
    torch.testing.assert_close(t.elbo, t.reconstruction - t.kl)


def test_free_bits_stop_the_kl_gradient_of_dimensions_below_the_floor():
    """A dimension under λ contributes the constant λ: no KL gradient reaches the encoder through it; a
    dimension above λ keeps its whole KL gradient (the two cases told apart by per-dimension gradients)."""
    torch.manual_seed(0)
    model = build_vae(VAEConfig((6,), latent_dim=4, hidden=(8,)))
    x = torch.randn(10, 6)
    with torch.no_grad():
        per_dim = kl_per_dimension(model, x).mean(0)
    lam = float(per_dim.sort().values[1:3].mean())              # two dimensions below λ, two above
    below = per_dim <= lam
    t = elbo_terms(model, x, free_bits=lam)
    mean_head = model.encoder.mean.weight
    grad_free, = torch.autograd.grad(t.kl_penalty.sum(), mean_head)
    q = model.encode(x)
    full = 0.5 * (q.scale**2 + q.loc**2 - 1 - 2 * q.scale.log())   # KL per dimension, closed form
    grad_kl, = torch.autograd.grad(full.sum(), mean_head)
    assert torch.count_nonzero(grad_free[below]) == 0
    torch.testing.assert_close(grad_free[~below], grad_kl[~below])
    torch.testing.assert_close(t.kl_penalty.mean(), torch.clamp_min(per_dim, lam).sum())


def test_wrong_shapes_and_bad_options_raise_clear_errors():
    model = build_vae(VAEConfig((1, 4, 4), latent_dim=2, hidden=(8,)))
    with pytest.raises(ShapeError, match=r"\(5, 16\).*\(1, 4, 4\)"):
        elbo(model, torch.rand(5, 16))
    with pytest.raises(ShapeError, match=r"\(3, 1, 4, 5\)"):
        iwae_bound(model, torch.rand(3, 1, 4, 5), n_samples=2)
    with pytest.raises(ConfigError, match="n_samples"):
        iwae_bound(model, torch.rand(3, 1, 4, 4), n_samples=0)
    with pytest.raises(ConfigError, match="beta"):
        elbo(model, torch.rand(3, 1, 4, 4), beta=-1)


@pytest.mark.parametrize("c", [0, -1.0, float("nan"), float("inf"), "abc", True])
def test_non_positive_decoder_variance_is_refused(c):
    with pytest.raises(ConfigError, match="decoder_variance"):
        VAEConfig((3,), decoder_variance=c)
