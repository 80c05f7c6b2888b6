"""Two stochastic layers against closed forms: the linear-Gaussian chain

    z_2 ~ N(0, I),  z_1 | z_2 ~ N(A z_2 + a, diag s_1),  x | z_1 ~ N(W z_1 + b, c I)
    ⇒  x ~ N(W a + b, W (A Aᵀ + diag s_1) Wᵀ + c I),

with a posterior q(z_1|x) q(z_2|z_1) whose variances do not depend on the input (so q is jointly Gaussian).
Every reference value is computed here, in NumPy/SciPy, from the parameters: the joint Gaussian of
(z_1, z_2, x) written out block by block, Gaussian conditioning, and the Gaussian ELBO integral."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import stats

from vaekit import VAEConfig, build_vae, elbo, elbo_terms, estimate_log_likelihood, evaluate, iwae_bound
from vaekit.inference.objectives import IWAE, log_importance_weights
from vaekit.models.linear_chain import LinearGaussianChain
from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp_inverse
from vaekit.prob.distributions import rsample_with_log_prob

D, K1, K2 = 5, 3, 2


def _log_var(variances: np.ndarray) -> torch.Tensor:
    return soft_clamp_inverse(torch.log(torch.as_tensor(variances)), ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX)


@dataclass
class Problem:
    """The model's parameters (NumPy) and data; q(z_1|x) = N(M1 x + m1, diag v1), q(z_2|z_1) = N(M2 z_1 + m2,
    diag v2)."""

    model: torch.nn.Module
    x: torch.Tensor
    W: np.ndarray
    b: np.ndarray
    c: float
    A: np.ndarray
    a: np.ndarray
    s1: np.ndarray
    M1: np.ndarray
    m1: np.ndarray
    v1: np.ndarray
    M2: np.ndarray
    m2: np.ndarray
    v2: np.ndarray

    @property
    def xn(self) -> np.ndarray:
        return self.x.numpy()

    def joint(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of (z_1, z_2, x), block by block."""
        W, A = self.W, self.A
        c1 = A @ A.T + np.diag(self.s1)                                   # Cov z_1
        mean = np.concatenate([self.a, np.zeros(K2), W @ self.a + self.b])
        cov = np.block([[c1, A, c1 @ W.T],
                        [A.T, np.eye(K2), A.T @ W.T],
                        [W @ c1, W @ A, W @ c1 @ W.T + self.c * np.eye(D)]])
        return mean, cov

    def log_px(self) -> np.ndarray:
        mean, cov = self.joint()
        return stats.multivariate_normal(mean[K1 + K2:], cov[K1 + K2:, K1 + K2:]).logpdf(self.xn)

    def posterior(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """p(z|x_i) by the Schur complement."""
        mean, cov = self.joint()
        k = K1 + K2
        gain = cov[:k, k:] @ np.linalg.inv(cov[k:, k:])
        return mean[:k] + gain @ (self.xn[i] - mean[k:]), cov[:k, :k] - gain @ cov[k:, :k]

    def q(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The joint Gaussian q(z_1, z_2 | x_i)."""
        mu1 = self.M1 @ self.xn[i] + self.m1
        s = np.diag(self.v1)
        cov = np.block([[s, s @ self.M2.T], [self.M2 @ s, self.M2 @ s @ self.M2.T + np.diag(self.v2)]])
        return np.concatenate([mu1, self.M2 @ mu1 + self.m2]), cov

    def log_joint(self, z: np.ndarray, i: int) -> np.ndarray:
        """log p(x_i|z_1) + log p(z) at z (..., K1 + K2), with SciPy."""
        mean, cov = self.joint()
        prior = stats.multivariate_normal(mean[:K1 + K2], cov[:K1 + K2, :K1 + K2]).logpdf(z)
        fit = stats.norm(z[..., :K1] @ self.W.T + self.b, math.sqrt(self.c)).logpdf(self.xn[i]).sum(-1)
        return prior + fit

    def exact_elbo(self, i: int) -> float:
        """E_q[log p(x, z)] + H(q) for Gaussian q and p, the integral done by hand."""
        m, s = self.q(i)
        mean, cov = self.joint()
        pm, pc = mean[:K1 + K2], cov[:K1 + K2, :K1 + K2]
        inv = np.linalg.inv(pc)
        prior = -0.5 * ((m - pm) @ inv @ (m - pm) + np.trace(inv @ s) + np.linalg.slogdet(2 * np.pi * pc)[1])
        r = self.xn[i] - self.W @ m[:K1] - self.b
        fit = (-0.5 * (r @ r + np.trace(self.W @ s[:K1, :K1] @ self.W.T)) / self.c
               - 0.5 * D * math.log(2 * np.pi * self.c))
        entropy = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * s)[1]
        return float(fit + prior + entropy)

    def kl_to_posterior(self, i: int) -> float:
        m, s = self.q(i)
        pm, ps = self.posterior(i)
        inv = np.linalg.inv(ps)
        return 0.5 * float(np.trace(inv @ s) + (pm - m) @ inv @ (pm - m) - len(m)
                           + np.linalg.slogdet(ps)[1] - np.linalg.slogdet(s)[1])


def _build(seed: int, W, b, c, A, a, s1, M1, m1, v1, M2, m2, v2, n: int) -> Problem:
    config = VAEConfig((D,), latent_dim=K1, arch="linear", decoder_variance=c, layers=2,
                       layer_args={"latent_dims": [K2]})
    torch.manual_seed(seed)
    model = build_vae(config)
    t = torch.as_tensor
    with torch.no_grad():
        model.decoder.f.linear.weight.copy_(t(W))
        model.decoder.f.linear.bias.copy_(t(b))
        down = model.prior_module.layers[0]                 # p(z_1|z_2)
        down.mean.weight.copy_(t(A))
        down.mean.bias.copy_(t(a))
        down.constant_log_var.copy_(_log_var(s1))
        for layer, M, m, v in ((model.encoder, M1, m1, v1), (model.up[0], M2, m2, v2)):
            layer.mean.weight.copy_(t(M))
            layer.mean.bias.copy_(t(m))
            layer.log_var.weight.zero_()
            layer.log_var.bias.copy_(_log_var(v))
    rng = np.random.default_rng(seed + 100)                 # data drawn from the model
    z2 = rng.standard_normal((n, K2))
    z1 = z2 @ A.T + a + np.sqrt(s1) * rng.standard_normal((n, K1))
    x = z1 @ W.T + b + math.sqrt(c) * rng.standard_normal((n, D))
    return Problem(model, torch.as_tensor(x), W, b, c, A, a, s1, M1, m1, v1, M2, m2, v2)


def random_problem(seed: int, n: int = 6) -> Problem:
    """Random parameters; q an arbitrary (imperfect) member of the family."""
    rng = np.random.default_rng(seed)
    W, b, A, a = rng.normal(size=(D, K1)), rng.normal(size=D), rng.normal(size=(K1, K2)), 0.5 * rng.normal(size=K1)
    s1 = 0.2 + rng.random(K1)
    M1, m1, v1 = 0.3 * rng.normal(size=(K1, D)), 0.3 * rng.normal(size=K1), 0.1 + 0.5 * rng.random(K1)
    M2, m2, v2 = 0.3 * rng.normal(size=(K2, K1)), 0.3 * rng.normal(size=K2), 0.2 + 0.5 * rng.random(K2)
    return _build(seed, W, b, 0.4, A, a, s1, M1, m1, v1, M2, m2, v2, n)


def posterior_problem(seed: int, shift: float = 0.0, inflate: float = 1.0, n: int = 6) -> Problem:
    """Parameters for which p(z|x) = p(z_1|x) p(z_2|z_1) has diagonal conditionals (A axis-aligned, W with
    orthogonal columns), so the family holds it: q is p(z|x) with means shifted by ``shift`` and variances
    ``inflate`` times wider. The conditionals are derived here: z_1 ~ N(a, C1) with C1 = AAᵀ + diag s_1
    diagonal, so p(z_1|x) has precision C1⁻¹ + WᵀW/c and mean P⁻¹(C1⁻¹ a + Wᵀ(x − b)/c); p(z_2|z_1) has
    precision I + Aᵀ S1⁻¹ A and mean P2⁻¹ Aᵀ S1⁻¹ (z_1 − a)."""
    rng = np.random.default_rng(seed)
    A = np.zeros((K1, K2))
    A[np.arange(K2), np.arange(K2)] = 1.0 + rng.random(K2)
    a, s1, c = 0.5 * rng.normal(size=K1), 0.2 + rng.random(K1), 0.4
    Q, _ = np.linalg.qr(rng.normal(size=(D, K1)))
    W, b = Q * (1.0 + rng.random(K1)), rng.normal(size=D)
    c1 = np.diag(A @ A.T) + s1
    p1 = 1 / c1 + np.diag(W.T @ W) / c
    M1, m1, v1 = (W.T / c) / p1[:, None], (a / c1 - W.T @ b / c) / p1 + shift, inflate / p1
    p2 = 1 + np.diag(A.T @ (A / s1[:, None]))
    M2 = (A.T / s1) / p2[:, None]
    return _build(seed, W, b, c, A, a, s1, M1, m1, v1, M2, -M2 @ a, inflate / p2, n)


def test_closed_form_marginal_and_posterior_match_scipy(float64):
    prob = random_problem(0)
    truth = prob.model.closed_form()
    assert isinstance(truth, LinearGaussianChain) and truth.dims == (K1, K2)
    cov = prob.W @ (prob.A @ prob.A.T + np.diag(prob.s1)) @ prob.W.T + prob.c * np.eye(D)
    marginal = stats.multivariate_normal(prob.W @ prob.a + prob.b, cov)
    np.testing.assert_allclose(truth.log_marginal(prob.x).numpy(), marginal.logpdf(prob.xn), rtol=1e-10)
    np.testing.assert_allclose(prob.log_px(), marginal.logpdf(prob.xn), rtol=1e-10)
    post = truth.posterior(prob.x)
    for i in range(len(prob.x)):
        mean, cov = prob.posterior(i)
        np.testing.assert_allclose(post.loc[i].numpy(), mean, atol=1e-10)
        np.testing.assert_allclose(post.covariance_matrix[i].numpy(), cov, atol=1e-10)


def test_log_densities_match_scipy_at_any_z(float64):
    """log p(z), log q(z|x) and log p(x|z_1) at arbitrary z (not draws of q), against SciPy."""
    prob = random_problem(1)
    model, x = prob.model, prob.x
    z = torch.randn(4, len(x), K1 + K2, generator=torch.Generator().manual_seed(0)) * 2
    log_q = model.encode(x).log_prob(z).detach().numpy()                        # (4, B)
    log_joint = (model.log_px(x, z) + model.log_pz(z)).detach().numpy()
    for i in range(len(x)):
        zi = z[:, i].numpy()
        np.testing.assert_allclose(log_q[:, i], stats.multivariate_normal(*prob.q(i)).logpdf(zi), rtol=1e-10)
        np.testing.assert_allclose(log_joint[:, i], prob.log_joint(zi, i), rtol=1e-9)


def test_three_closed_form_elbos_agree_and_the_monte_carlo_elbo_converges(float64):
    prob = random_problem(2)
    model, x = prob.model, prob.x
    truth = model.closed_form()
    by_hand = np.array([prob.exact_elbo(i) for i in range(len(x))])
    gap = np.array([prob.kl_to_posterior(i) for i in range(len(x))])
    np.testing.assert_allclose(by_hand, prob.log_px() - gap, rtol=1e-10)           # ELBO = log p(x) - KL(q || p(z|x))
    joint_q = torch.distributions.MultivariateNormal(*(torch.as_tensor(np.stack(v)) for v in
                                                       zip(*(prob.q(i) for i in range(len(x))), strict=True)))
    np.testing.assert_allclose(truth.elbo(x, joint_q).numpy(), by_hand, rtol=1e-9)
    np.testing.assert_allclose(truth.kl_to_posterior(x, joint_q).numpy(), gap, rtol=1e-8)
    assert np.all(gap > 0.1)
    torch.manual_seed(0)
    log_w = log_importance_weights(model, x, 4000).detach()                      # (K, B)
    se = (log_w.std(0) / math.sqrt(log_w.shape[0])).numpy()
    np.testing.assert_array_less(np.abs(log_w.mean(0).numpy() - by_hand), 5 * se)
    for analytic_kl in (True, False):              # True: no closed-form KL, the Monte Carlo one on the same draws
        estimate = elbo(model, x, n_samples=4000, analytic_kl=analytic_kl).detach().numpy()
        np.testing.assert_array_less(np.abs(estimate - by_hand), 5 * se)


def test_iwae_objective_is_the_log_mean_of_the_exact_weights(float64):
    """L_K for given ε: z_1 = μ_1 + σ_1 ε_1, z_2 = M2 z_1 + m2 + σ_2 ε_2 (ε blocks in the order of z), and
    log (1/K) Σ_k p(x, z_k)/q(z_k|x) with every density from SciPy."""
    prob = random_problem(3, n=4)
    eps = torch.randn(7, len(prob.x), K1 + K2, generator=torch.Generator().manual_seed(1))
    terms = IWAE(samples=7).terms(prob.model, prob.x, eps=eps)
    e = eps.numpy()
    z1 = prob.xn @ prob.M1.T + prob.m1 + np.sqrt(prob.v1) * e[..., :K1]
    z = np.concatenate([z1, z1 @ prob.M2.T + prob.m2 + np.sqrt(prob.v2) * e[..., K1:]], -1)        # (K, B, K1+K2)
    for i in range(len(prob.x)):
        log_w = prob.log_joint(z[:, i], i) - stats.multivariate_normal(*prob.q(i)).logpdf(z[:, i])
        expected = np.logaddexp.reduce(log_w) - math.log(7)
        np.testing.assert_allclose(terms.objective[i].item(), expected, rtol=1e-10)
        np.testing.assert_allclose(terms.elbo[i].item(), log_w.mean(), rtol=1e-10)


def test_iwae_bound_rises_from_the_elbo_towards_log_likelihood(float64):
    """E L_K from 200 independent sets of K weights, K = 1, 10, 100 (nested: the first K of each set of 100)."""
    prob = random_problem(4, n=3)
    torch.manual_seed(0)
    log_px = torch.as_tensor(prob.log_px())
    exact_elbo = torch.as_tensor([prob.exact_elbo(i) for i in range(len(prob.x))])
    log_w = log_importance_weights(prob.model, prob.x, 200 * 100).detach().reshape(200, 100, -1)
    means, ses = [], []
    for k in (1, 10, 100):
        draws = torch.logsumexp(log_w[:, :k], 1) - math.log(k)                     # (200, B): L_K estimates
        means.append(draws.mean(0))
        ses.append(draws.std(0) / math.sqrt(200))
    assert torch.all((means[0] - exact_elbo).abs() < 5 * ses[0])                   # L_1 is the ELBO
    for lo, hi, se_lo, se_hi in zip(means, means[1:], ses, ses[1:], strict=False):
        assert torch.all(hi > lo - 3 * (se_lo**2 + se_hi**2).sqrt())                # non-decreasing in K
    assert torch.all(means[-1] <= log_px + 3 * ses[-1])                              # still a lower bound
    assert torch.all(log_px - means[-1] < 0.5 * (log_px - exact_elbo))              # and closer to log p(x)
    torch.manual_seed(1)                                                             # the estimator itself
    single = torch.stack([iwae_bound(prob.model, prob.x, n_samples=100).detach() for _ in range(20)])
    assert torch.all((single.mean(0) - means[-1]).abs() < 5 * (ses[-1]**2 + single.var(0) / 20).sqrt())


def test_the_exact_posterior_makes_every_bound_exact(float64):
    prob = posterior_problem(5)
    model, x = prob.model, prob.x
    truth = model.closed_form()
    z = torch.randn(3, len(x), K1 + K2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model.encode(x).log_prob(z), truth.posterior(x).log_prob(z), atol=1e-10, rtol=0)
    log_px = torch.as_tensor(prob.log_px())
    # every importance weight p(x, z)/p(z|x) equals p(x): one draw gives log p(x)
    torch.testing.assert_close(elbo(model, x, analytic_kl=True).detach(), log_px, atol=1e-9, rtol=0)
    torch.testing.assert_close(iwae_bound(model, x, n_samples=5).detach(), log_px, atol=1e-9, rtol=0)
    est = estimate_log_likelihood(model, x, n_samples=64, chunk_size=10)
    torch.testing.assert_close(est.log_likelihood, log_px, atol=1e-9, rtol=0)
    torch.testing.assert_close(est.posterior_gap, torch.zeros(len(x)), atol=1e-9, rtol=0)


def test_importance_sampled_log_likelihood_and_posterior_gap_converge(float64):
    """Tolerance as for one layer (tests/test_estimators.py): 5 standard errors plus the O(1/K) bias se²/2."""
    prob = posterior_problem(6, shift=0.2, inflate=1.5)
    torch.manual_seed(0)
    est = estimate_log_likelihood(prob.model, prob.x, n_samples=5000, chunk_size=1000)
    err = (est.log_likelihood - torch.as_tensor(prob.log_px())).abs()
    assert torch.all(err < 5 * est.standard_error + est.standard_error**2 / 2 + 1e-6), (err, est.standard_error)
    assert torch.all(est.standard_error < 0.03)
    gap = torch.as_tensor([prob.kl_to_posterior(i) for i in range(len(prob.x))])
    assert torch.all(gap > 0.05)
    assert torch.all((est.posterior_gap - gap).abs() < 5 * est.standard_error + 0.1)


def test_evaluate_reports_the_exact_log_likelihood(float64):
    prob = posterior_problem(7, shift=0.1, inflate=1.2)
    torch.manual_seed(0)
    result = evaluate(prob.model, prob.x, importance_samples=2000)
    assert result.latent_dim == K1 + K2
    assert result.exact_log_likelihood == pytest.approx(float(prob.log_px().mean()), abs=1e-9)
    assert abs(result.log_likelihood - result.exact_log_likelihood) < 0.05
    assert result.elbo < result.exact_log_likelihood


def test_elbo_terms_kl_is_the_monte_carlo_kl_on_its_own_draws(float64):
    """No closed form for KL(q(z|x) || p(z)) with layers: the ELBO's KL is mean_s [log q(z_s) − log p(z_s)]
    on the draws z_s of its reconstruction term."""
    prob = random_problem(8, n=3)
    eps = torch.randn(4, 3, K1 + K2, generator=torch.Generator().manual_seed(3))
    terms = elbo_terms(prob.model, prob.x, n_samples=4, eps=eps)
    z, log_q = rsample_with_log_prob(prob.model.encode(prob.x), 4, eps)
    torch.testing.assert_close(terms.kl, (log_q - prob.model.log_pz(z)).mean(0))
    torch.testing.assert_close(terms.reconstruction, prob.model.log_px(prob.x, z).mean(0))
