"""vaekit.inference.evaluate against the closed forms of the linear-Gaussian model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from linear_problems import near_posterior_problem
from vaekit import ConfigError, ShapeError, VAEConfig, build_vae
from vaekit.inference.evaluate import Evaluation, evaluate


def _scipy_log_marginal(model, x) -> np.ndarray:
    """log N(x; b, WWᵀ + Ψ) by SciPy, from the model's weights (independent of vaekit.LinearGaussian)."""
    W = model.decoder.f.weight.detach().double().numpy()
    b = model.decoder.f.bias.detach().double().numpy()
    psi = np.broadcast_to(model.decoder.variance().detach().double().numpy(), b.shape)
    return multivariate_normal(b, W @ W.T + np.diag(psi)).logpdf(x.double().numpy())


def _numpy_kl_to_posterior(model, x) -> np.ndarray:
    """KL(q_x || p(z|x)) by the Gaussian KL formula in NumPy; p(z|x) = N(S Wᵀ Ψ⁻¹ (x - b), S),
    S = (I + Wᵀ Ψ⁻¹ W)⁻¹ (Bishop, PRML 12.42), q_x from the encoder."""
    W = model.decoder.f.weight.detach().double().numpy()
    b = model.decoder.f.bias.detach().double().numpy()
    psi = np.broadcast_to(model.decoder.variance().detach().double().numpy(), b.shape)
    k = W.shape[1]
    S = np.linalg.inv(np.eye(k) + W.T @ (W / psi[:, None]))
    with torch.no_grad():
        q = model.encode(x)
    m_q = q.loc.double().numpy()
    var_q = q.variance.double().numpy()                           # a diagonal posterior
    out = []
    for i, xi in enumerate(x.double().numpy()):
        m_p = S @ W.T @ ((xi - b) / psi)
        cov_q = np.diag(var_q[i])
        S_inv = np.linalg.inv(S)
        d = m_p - m_q[i]
        out.append(0.5 * (np.trace(S_inv @ cov_q) + d @ S_inv @ d - k
                          + np.linalg.slogdet(S)[1] - np.linalg.slogdet(cov_q)[1]))
    return np.asarray(out)


def test_matches_the_exact_linear_gaussian_values(float64):
    """n = 50 examples, K = 5000. The per-example delta-method standard errors are < 0.02 here, so
    the Monte Carlo error of the mean log p̂ is < 0.02/sqrt(50) ≈ 0.003 and the 1/K bias < 0.02²/2;
    tolerance 0.02 nats (about 6 standard errors). The posterior gap adds the error of the K-sample
    ELBO (sd(log w)/sqrt(K) per example, smaller still): tolerance 0.03. A wrong importance weight
    misses by far more than that (see test_estimators)."""
    truth, model, x = near_posterior_problem(0, n=50)
    torch.manual_seed(0)
    ev = evaluate(model, x, importance_samples=5000, batch_size=16, elbo_samples=200)
    exact_ll = float(np.mean(_scipy_log_marginal(model, x)))
    exact_gap = float(np.mean(_numpy_kl_to_posterior(model, x)))
    assert truth.log_marginal(x).mean().item() == pytest.approx(exact_ll, abs=1e-9)   # the problem's own truth
    assert ev.exact_log_likelihood == pytest.approx(exact_ll, abs=1e-9)
    assert ev.exact_posterior_gap == pytest.approx(exact_gap, abs=1e-9)
    assert abs(ev.log_likelihood - exact_ll) < 0.02
    assert exact_gap > 0.3                                       # the gap check is informative
    assert abs(ev.posterior_gap - exact_gap) < 0.03
    # ELBO = log p(x) - KL(q || p(z|x)): with 200 draws its Monte Carlo error is ~0.02 nats, far below the gap
    exact_elbo = truth.elbo(x, model.encode(x)).mean().item()
    assert ev.elbo <= exact_ll
    assert abs(ev.elbo - exact_elbo) < 0.1
    assert ev.elbo == pytest.approx(ev.reconstruction - ev.kl, abs=1e-9)
    assert ev.kl > 0
    assert 0 < ev.log_likelihood_se < 1
    assert (ev.n, ev.latent_dim, ev.importance_samples, ev.bits_per_dim) == (50, 2, 5000, None)


def test_exact_values_are_computed_in_float64():
    """A float32 model: the exact values still agree with a float64 computation to 1e-9."""
    truth, model, x = near_posterior_problem(1, n=20)          # built in float32
    assert model.decoder.f.weight.dtype == torch.float32
    ev = evaluate(model, x, importance_samples=10)
    assert ev.exact_log_likelihood == pytest.approx(float(np.mean(_scipy_log_marginal(model, x))), abs=1e-9)
    assert model.training and next(model.parameters()).dtype == torch.float32   # mode and dtype untouched


def test_bits_per_dim_follows_the_dequantisation_formula():
    """bits/dim = -(log p(y) - D log L) / (D log 2) of the mean log-likelihood, Gaussian decoder only."""
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 4, 4), latent_dim=2, hidden=(8,), decoder_variance=0.05))
    y = torch.rand(30, 1, 4, 4)                                 # dequantised values in [0, 1)
    ev = evaluate(model, y, importance_samples=20, levels=17)
    d = 16
    assert ev.bits_per_dim == pytest.approx(-(ev.log_likelihood - d * math.log(17)) / (d * math.log(2)), rel=1e-9)
    assert evaluate(model, y, importance_samples=5).bits_per_dim is None            # no levels: no bits/dim
    assert ev.exact_log_likelihood is None and ev.exact_posterior_gap is None      # not linear
    bern = build_vae(VAEConfig((1, 4, 4), latent_dim=2, hidden=(8,), likelihood="bernoulli"))
    assert evaluate(bern, y.round(), importance_samples=5, levels=17).bits_per_dim is None


def test_active_units_counts_the_dims_the_encoder_uses():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((6,), latent_dim=4, arch="linear"))
    with torch.no_grad():
        model.encoder.mean.weight.copy_(torch.eye(4, 6))        # z_u = x_u: variance 1 over the data
        model.encoder.mean.weight[[1, 3]] = 0                   # dims 1 and 3 ignore x: variance 0
    ev = evaluate(model, torch.randn(100, 6), importance_samples=5)
    assert (ev.active_units, ev.latent_dim) == (2, 4)


def test_to_dict_is_json_ready():
    ev = Evaluation(n=3, elbo=-1.0, log_likelihood=float("nan"), log_likelihood_se=0.1, kl=0.5, reconstruction=-0.5,
                    posterior_gap=float("inf"), active_units=1, latent_dim=2, importance_samples=10)
    d = ev.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["log_likelihood"] is None and d["posterior_gap"] is None and d["elbo"] == -1.0
    assert {"n", "elbo", "log_likelihood", "log_likelihood_se", "kl", "reconstruction", "posterior_gap",
            "active_units", "bits_per_dim", "exact_log_likelihood", "exact_posterior_gap"} <= set(d)


def test_bad_inputs_raise_one_line_errors():
    model = build_vae(VAEConfig((3,), latent_dim=2, hidden=(4,)))
    with pytest.raises(ShapeError, match="does not match"):
        evaluate(model, torch.zeros(5, 4))
    with pytest.raises(ConfigError, match="at least 2 examples"):
        evaluate(model, torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="importance_samples"):
        evaluate(model, torch.zeros(5, 3), importance_samples=0)
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(model, torch.zeros(5, 3), batch_size=0)
    with pytest.raises(ConfigError, match="levels"):
        evaluate(model, torch.zeros(5, 3), levels=1)
