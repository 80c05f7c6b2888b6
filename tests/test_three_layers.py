"""Three stochastic layers against closed forms, in both inference directions, and a VampPrior on top.

The linear-Gaussian model z_3 ~ N(0, I), z_2 | z_3 ~ N(A_2 z_3 + a_2, diag s_2), z_1 | z_2 ~ N(A_1 z_2 + a_1,
diag s_1), x | z_1 ~ N(W z_1 + b, c I), with posteriors whose variances do not depend on the input, so that q
is jointly Gaussian:

* bottom-up: z_1 = M_1 x + m_1 + √v_1 ε_1, z_2 = M_2 z_1 + m_2 + √v_2 ε_2, z_3 = M_3 z_2 + m_3 + √v_3 ε_3;
* top-down (Ladder VAE): the pass of means μ̂_1 = M_1 x + m_1, μ̂_{l+1} = M_{l+1} μ̂_l + m_{l+1}, then
  z_3 = μ̂_3 + √v_3 ε_3 and z_l = σ_l² (μ̂_l / v_l + (A_l z_{l+1} + a_l) / s_l) + σ_l ε_l, σ_l⁻² = 1/v_l + 1/s_l.

Every reference is computed here in NumPy/SciPy from the parameters: the joint of (z, x) and q as linear maps
of independent noise, the ELBO as the Gaussian integral E_q[log p(x, z)] + H(q), the gap as KL(q || p(z|x)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from vaekit import VAEConfig, build_vae, elbo, estimate_log_likelihood
from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp_inverse
from vaekit.prob.chain import MarkovChain

D, DIMS = 5, (3, 2, 2)
K = sum(DIMS)


def _log_var(variances: np.ndarray) -> torch.Tensor:
    return soft_clamp_inverse(torch.log(torch.as_tensor(variances)), ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX)


def _linear_map(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of variables v_i = offset_i + G_i e (e standard normal) given as (offset, G)."""
    mean = np.concatenate([r[0] for r in rows])
    G = np.concatenate([r[1] for r in rows])
    return mean, G @ G.T


@dataclass
class Problem:
    model: torch.nn.Module
    x: torch.Tensor
    p: dict[str, np.ndarray]
    inference: str

    def joint(self) -> tuple[np.ndarray, np.ndarray]:
        """(z_1, z_2, z_3, x) as affine maps of the noise e = (e_3, e_2, e_1, e_x), ancestrally."""
        p, n = self.p, K + D
        top = (np.zeros(DIMS[2]), np.eye(DIMS[2], n))                      # z_3 = e_3
        G2 = p["A2"] @ top[1]
        G2[:, DIMS[2]:DIMS[2] + DIMS[1]] += np.diag(np.sqrt(p["s2"]))
        z2 = (p["A2"] @ top[0] + p["a2"], G2)
        G1 = p["A1"] @ z2[1]
        G1[:, DIMS[2] + DIMS[1]:K] += np.diag(np.sqrt(p["s1"]))
        z1 = (p["A1"] @ z2[0] + p["a1"], G1)
        Gx = p["W"] @ z1[1]
        Gx[:, K:] += math.sqrt(p["c"]) * np.eye(D)
        return _linear_map([z1, z2, top, (p["W"] @ z1[0] + p["b"], Gx)])

    def log_px(self) -> np.ndarray:
        mean, cov = self.joint()
        return stats.multivariate_normal(mean[K:], cov[K:, K:]).logpdf(self.x.numpy())

    def q(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """q(z_1, z_2, z_3 | x_i) as affine maps of ε = (ε_1, ε_2, ε_3)."""
        p, xi = self.p, self.x.numpy()[i]
        e = [np.eye(K)[sum(DIMS[:j]):sum(DIMS[:j + 1])] for j in range(3)]    # rows of ε_1, ε_2, ε_3
        if self.inference == "bottom-up":
            z1 = (p["M1"] @ xi + p["m1"], np.sqrt(p["v1"])[:, None] * e[0])
            z2 = (p["M2"] @ z1[0] + p["m2"], p["M2"] @ z1[1] + np.sqrt(p["v2"])[:, None] * e[1])
            z3 = (p["M3"] @ z2[0] + p["m3"], p["M3"] @ z2[1] + np.sqrt(p["v3"])[:, None] * e[2])
            return _linear_map([z1, z2, z3])
        mu1 = p["M1"] @ xi + p["m1"]
        mu2 = p["M2"] @ mu1 + p["m2"]
        mu3 = p["M3"] @ mu2 + p["m3"]
        z3 = (mu3, np.sqrt(p["v3"])[:, None] * e[2])
        var2 = 1 / (1 / p["v2"] + 1 / p["s2"])
        z2 = (var2 * (mu2 / p["v2"] + (p["A2"] @ z3[0] + p["a2"]) / p["s2"]),
              (var2 / p["s2"])[:, None] * (p["A2"] @ z3[1]) + np.sqrt(var2)[:, None] * e[1])
        var1 = 1 / (1 / p["v1"] + 1 / p["s1"])
        z1 = (var1 * (mu1 / p["v1"] + (p["A1"] @ z2[0] + p["a1"]) / p["s1"]),
              (var1 / p["s1"])[:, None] * (p["A1"] @ z2[1]) + np.sqrt(var1)[:, None] * e[0])
        return _linear_map([z1, z2, z3])

    def exact_elbo(self, i: int) -> float:
        """E_q[log p(x_i|z_1)] + E_q[log p(z)] + H(q), each a Gaussian integral."""
        m, s = self.q(i)
        mean, cov = self.joint()
        pm, pc = mean[:K], cov[:K, :K]
        inv = np.linalg.inv(pc)
        prior = -0.5 * ((m - pm) @ inv @ (m - pm) + np.trace(inv @ s) + np.linalg.slogdet(2 * np.pi * pc)[1])
        W, c = self.p["W"], self.p["c"]
        r = self.x.numpy()[i] - W @ m[:DIMS[0]] - self.p["b"]
        fit = -0.5 * (r @ r + np.trace(W @ s[:DIMS[0], :DIMS[0]] @ W.T)) / c - 0.5 * D * math.log(2 * np.pi * c)
        return float(fit + prior + 0.5 * np.linalg.slogdet(2 * np.pi * np.e * s)[1])

    def gap(self, i: int) -> float:
        """KL(q || p(z|x_i)), p(z|x) by Gaussian conditioning."""
        m, s = self.q(i)
        mean, cov = self.joint()
        gain = cov[:K, K:] @ np.linalg.inv(cov[K:, K:])
        pm = mean[:K] + gain @ (self.x.numpy()[i] - mean[K:])
        ps = cov[:K, :K] - gain @ cov[K:, :K]
        inv = np.linalg.inv(ps)
        return 0.5 * float(np.trace(inv @ s) + (pm - m) @ inv @ (pm - m) - K
                           + np.linalg.slogdet(ps)[1] - np.linalg.slogdet(s)[1])


def _problem(seed: int, inference: str, n: int = 5, aligned: bool = False, **config) -> Problem:
    """Random parameters; ``aligned``: W with orthogonal columns and A_l axis-aligned, so that p(z|x) has diagonal
    conditionals in either direction and the posterior families hold it."""
    rng = np.random.default_rng(seed)
    d1, d2, d3 = DIMS
    p = {"W": rng.normal(size=(D, d1)), "b": rng.normal(size=D), "c": 0.3,
         "A1": rng.normal(size=(d1, d2)), "a1": 0.5 * rng.normal(size=d1), "s1": 0.2 + rng.random(d1),
         "A2": rng.normal(size=(d2, d3)), "a2": 0.5 * rng.normal(size=d2), "s2": 0.2 + rng.random(d2),
         "M1": 0.3 * rng.normal(size=(d1, D)), "m1": 0.3 * rng.normal(size=d1), "v1": 0.1 + 0.5 * rng.random(d1),
         "M2": 0.3 * rng.normal(size=(d2, d1)), "m2": 0.3 * rng.normal(size=d2), "v2": 0.2 + 0.5 * rng.random(d2),
         "M3": 0.3 * rng.normal(size=(d3, d2)), "m3": 0.3 * rng.normal(size=d3), "v3": 0.2 + 0.5 * rng.random(d3)}
    if aligned:
        Q, _ = np.linalg.qr(rng.normal(size=(D, d1)))
        p["W"] = Q * (1.0 + rng.random(d1))
        for A, (rows, cols) in (("A1", (d1, d2)), ("A2", (d2, d3))):
            p[A] = np.zeros((rows, cols))
            k = min(rows, cols)
            p[A][np.arange(k), np.arange(k)] = 1.0 + rng.random(k)
    cfg = VAEConfig((D,), latent_dim=d1, arch="linear", decoder_variance=p["c"], layers=3,
                    layer_args={"latent_dims": [d2, d3]}, inference=inference, **config)
    torch.manual_seed(seed)
    model = build_vae(cfg)
    t = torch.as_tensor
    with torch.no_grad():
        model.decoder.f.linear.weight.copy_(t(p["W"]))
        model.decoder.f.linear.bias.copy_(t(p["b"]))
        for layer, A, a, s in zip(model.prior_module.layers, ("A1", "A2"), ("a1", "a2"), ("s1", "s2"), strict=True):
            layer.mean.weight.copy_(t(p[A]))
            layer.mean.bias.copy_(t(p[a]))
            layer.constant_log_var.copy_(_log_var(p[s]))
        for layer, j in zip((model.encoder, *model.up), "123", strict=True):
            layer.mean.weight.copy_(t(p["M" + j]))
            layer.mean.bias.copy_(t(p["m" + j]))
            layer.log_var.weight.zero_()
            layer.log_var.bias.copy_(_log_var(p["v" + j]))
    x = torch.as_tensor(rng.normal(size=(n, D)) + p["b"])
    return Problem(model, x, p, inference)


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_elbo_log_likelihood_and_gap_equal_their_closed_forms(float64, inference):
    """The model's own q (its moments read off the model's chain) in the model's closed form: log p(x), the
    ELBO and the gap KL(q || p(z|x)) equal the NumPy references to 1e-6 relative, and ELBO = log p(x) − gap."""
    prob = _problem(0, inference)
    model, x = prob.model, prob.x
    q = model.encode(x)
    assert isinstance(q, MarkovChain) and q.order == ("up" if inference == "bottom-up" else "down")
    mean, cov = q.gaussian_moments()
    for i in range(len(x)):
        m, s = prob.q(i)
        np.testing.assert_allclose(mean[i].detach().numpy(), m, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(cov[i].detach().numpy(), s, rtol=1e-7, atol=1e-9)
    truth = model.closed_form()
    q_gauss = torch.distributions.MultivariateNormal(mean.detach(), covariance_matrix=cov.detach())
    log_px, by_hand, gap = prob.log_px(), np.array([prob.exact_elbo(i) for i in range(len(x))]), \
        np.array([prob.gap(i) for i in range(len(x))])
    np.testing.assert_allclose(by_hand, log_px - gap, rtol=1e-9)
    np.testing.assert_allclose(truth.log_marginal(x).numpy(), log_px, rtol=1e-6)
    np.testing.assert_allclose(truth.elbo(x, q_gauss).numpy(), by_hand, rtol=1e-6)
    np.testing.assert_allclose(truth.kl_to_posterior(x, q_gauss).numpy(), gap, rtol=1e-6)
    assert np.all(gap > 0.05)


def _fitted(prob: Problem, steps: int = 300, inflate: float = 1.5) -> Problem:
    """q's parameters moved towards p(z|x) by Adam on the closed-form ELBO of the model's own q (its moments,
    differentiable), then its variances ``inflate``-fold, so that importance sampling has a proposal near the
    posterior and wider than it; the NumPy parameters are read back from the model."""
    model, x = prob.model, prob.x
    truth = model.closed_form()
    params = [v for name, v in [*model.encoder.named_parameters(), *model.up.named_parameters()]
              if not name.endswith("log_var.weight")]                   # variances stay independent of the input
    optimizer = torch.optim.Adam(params, lr=0.05)
    for _ in range(steps):
        mean, cov = model.encode(x).gaussian_moments()
        loss = -truth.elbo(x, torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    p = dict(prob.p)
    for layer, j in zip((model.encoder, *model.up), "123", strict=True):
        with torch.no_grad():
            p["M" + j] = layer.mean.weight.numpy().copy()
            p["m" + j] = layer.mean.bias.numpy().copy()
            p["v" + j] = inflate * layer(torch.zeros(1, layer.mean.weight.shape[1])).scale[0].numpy() ** 2
            layer.log_var.bias.copy_(_log_var(p["v" + j]))           # wider than the fit: lighter-tailed weights
    return Problem(model, x, p, prob.inference)


@pytest.mark.slow            # about 10 s each on 2 loaded cores (the fit of q and 4000 importance samples)
@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_monte_carlo_elbo_and_importance_sampled_log_likelihood_agree_within_their_errors(float64, inference):
    """The objective's ELBO (per-layer analytic KLs top-down, Monte Carlo bottom-up) within 5 standard errors of
    the exact ELBO; the importance-sampled log p(x) within 5 standard errors (plus its O(1/K) bias) of log p(x)."""
    prob = _fitted(_problem(1, inference, n=4, aligned=True))
    model, x = prob.model, prob.x
    by_hand = np.array([prob.exact_elbo(i) for i in range(len(x))])
    torch.manual_seed(0)
    draws = elbo(model, x.repeat(2000, 1), n_samples=1).detach().reshape(2000, len(x))  # independent draws
    se = (draws.std(0) / math.sqrt(len(draws))).numpy()
    np.testing.assert_array_less(np.abs(draws.mean(0).numpy() - by_hand), 5 * se + 1e-9)
    est = estimate_log_likelihood(model, x, n_samples=4000, chunk_size=1000)
    err = np.abs(est.log_likelihood.numpy() - prob.log_px())
    se_is = est.standard_error.numpy()
    np.testing.assert_array_less(err, 5 * se_is + se_is**2 / 2 + 1e-6)
    assert np.all(se_is < 0.05)


def test_top_down_kl_is_the_sum_of_analytic_per_layer_kls(float64):
    """Top-down, both chains run downwards: the ELBO's KL on given draws is KL(q̂_3 || N(0, I)) + Σ_l
    KL(q(z_l|z_{l+1}, x) || p(z_l|z_{l+1})) at the drawn z_{l+1}, each the closed-form Gaussian KL (by hand)."""
    from vaekit.inference.objectives import elbo_terms
    from vaekit.prob.distributions import rsample_with_log_prob

    prob = _problem(2, "top-down", n=3)
    model, x, p = prob.model, prob.x, prob.p
    eps = torch.randn(2, 3, K, generator=torch.Generator().manual_seed(0))
    terms = elbo_terms(model, x, n_samples=2, eps=eps)
    z, _ = rsample_with_log_prob(model.encode(x), 2, eps)
    z = z.detach().numpy()
    z2, z3 = z[..., DIMS[0]:DIMS[0] + DIMS[1]], z[..., DIMS[0] + DIMS[1]:]

    def kl(m, v, pm, pv):                                   # diagonal Gaussians, summed over the last axis
        return 0.5 * ((v + (m - pm) ** 2) / pv - 1 + np.log(pv / v)).sum(-1)

    xn = x.numpy()
    mu1 = xn @ p["M1"].T + p["m1"]
    mu2 = mu1 @ p["M2"].T + p["m2"]
    mu3 = mu2 @ p["M3"].T + p["m3"]
    total = kl(mu3, p["v3"], 0.0, 1.0)[None]
    for mu, v, A, a, s, above in ((mu2, p["v2"], p["A2"], p["a2"], p["s2"], z3), (mu1, p["v1"], p["A1"], p["a1"],
                                                                                  p["s1"], z2)):
        prior_mean = above @ A.T + a
        var = 1 / (1 / v + 1 / s)
        total = total + kl(var * (mu / v + prior_mean / s), var, prior_mean, s)
    np.testing.assert_allclose(terms.kl.detach().numpy(), total.mean(0), rtol=1e-9)


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_vamp_prior_on_top_is_the_mixture_of_the_top_of_the_inference_path(float64, inference):
    """p(z_3) = (1/C) Σ_k N(z_3; μ̂_3(u_k), diag v_3): the pseudo-inputs u_k pass the whole bottom-up path of
    means (μ̂_1 = M_1 u + m_1, μ̂_{l+1} = M_{l+1} μ̂_l + m_{l+1}); log p(z) adds the two Gaussian layers. Against
    a direct float64 mixture (SciPy)."""
    prob = _problem(3, inference, prior="vamp", prior_args={"pseudo_inputs": 4, "init_std": 1.0})
    model, p = prob.model, prob.p
    u = model.prior_module.top.pseudo_inputs.detach().numpy()                # (C, D)
    mu3 = ((u @ p["M1"].T + p["m1"]) @ p["M2"].T + p["m2"]) @ p["M3"].T + p["m3"]   # (C, d_3)
    z = torch.randn(6, K, generator=torch.Generator().manual_seed(1)) * 1.5
    zn = z.numpy()
    z1, z2, z3 = zn[:, :DIMS[0]], zn[:, DIMS[0]:DIMS[0] + DIMS[1]], zn[:, DIMS[0] + DIMS[1]:]
    comps = np.stack([stats.multivariate_normal(m, np.diag(p["v3"])).logpdf(z3) for m in mu3])   # (C, 6)
    top = logsumexp(comps, 0) - math.log(len(u))
    prior = model.prior()
    np.testing.assert_allclose(prior.first.log_prob(torch.as_tensor(z3)).detach().numpy(), top, rtol=1e-10)
    layers = (stats.norm(z3 @ p["A2"].T + p["a2"], np.sqrt(p["s2"])).logpdf(z2).sum(-1)
              + stats.norm(z2 @ p["A1"].T + p["a1"], np.sqrt(p["s1"])).logpdf(z1).sum(-1))
    np.testing.assert_allclose(model.log_pz(z).detach().numpy(), top + layers, rtol=1e-10)
    assert model.closed_form() is None                                          # p(x) is a mixture now
    draws = model.prior_draws(3, generator=torch.Generator().manual_seed(2))
    again = model.prior_draws(3, generator=torch.Generator().manual_seed(2))
    assert draws.shape == (3, K) and torch.equal(draws, again)
