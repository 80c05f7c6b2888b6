"""The posterior gap split into the amortisation and approximation gaps, checked against the closed forms of
the linear-Gaussian model: a full-covariance family contains p(z|x) (approximation gap 0, amortisation gap =
KL(q_x || p(z|x))); the best diagonal member has precisions diag(Λ) and a closed-form approximation gap."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import vaekit
from vaekit.inference.gaps import Refinement, elbo_of, gap_terms, refine_posterior
from vaekit.prob.families import free_parameters


def _linear(posterior: str, seed: int = 0):
    torch.manual_seed(seed)
    model = vaekit.build_vae(vaekit.VAEConfig((6,), latent_dim=3, arch="linear", posterior=posterior,
                                              decoder_variance=0.5)).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    return model, x, model.closed_form()


def test_free_parameters_rebuild_the_distribution():
    model, x, _ = _linear("full")
    q = model.encode(x)
    rebuilt = free_parameters(q).distribution()
    torch.testing.assert_close(rebuilt.scale_tril, q.scale_tril)
    torch.testing.assert_close(rebuilt.loc, q.loc)
    with pytest.raises(NotImplementedError, match="Bernoulli"):
        free_parameters(torch.distributions.Bernoulli(probs=torch.rand(3)))


def test_full_covariance_refinement_finds_the_exact_posterior():
    """With p(z|x) in the family, q* reaches it: KL(q* || p(z|x)) from about 4.7 nats down to below 0.01."""
    model, x, exact = _linear("full")
    with torch.no_grad():
        before = exact.kl_to_posterior(x, model.encode(x))
    q_star = refine_posterior(model, x)
    after = exact.kl_to_posterior(x, q_star)
    assert float(before.min()) > 1.0
    assert float(after.max()) < 0.01
    torch.testing.assert_close(q_star.loc, exact.posterior(x).loc, atol=0.05, rtol=0)


def test_diagonal_refinement_finds_the_best_diagonal_member():
    """The best diagonal Gaussian has the posterior mean and precisions diag(Λ), Λ = I + WᵀΨ⁻¹W; its KL
    to p(z|x) is ½ (Σ log Λ_ii − log det Λ) > 0 (the approximation gap), which q* attains."""
    model, x, exact = _linear("diagonal")
    q_star = refine_posterior(model, x)
    best = exact.best_diagonal_posterior(x)
    gap = exact.diagonal_approximation_gap()
    assert float(gap) > 0.01                                                   # the family misses p(z|x)
    torch.testing.assert_close(exact.kl_to_posterior(x, best), gap.expand(8), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(q_star.scale, best.scale, rtol=0.05, atol=0)   # precisions diag(Λ), not 1/Σ_ii
    assert float((exact.kl_to_posterior(x, q_star) - gap).max()) < 0.01
    # and diag(Λ)⁻¹ is not the marginal variance of p(z|x) (the "moment matching" answer)
    marginal = exact.posterior(x).covariance_matrix[0].diagonal()
    assert not torch.allclose(best.scale[0] ** 2, marginal, rtol=0.05)


@pytest.mark.parametrize("posterior", ["full", "diagonal"])
def test_evaluate_splits_the_gap_as_the_closed_forms_do(posterior):
    """evaluate(refinement=...) reports amortisation + approximation = log p̂ − ELBO, each against its
    closed form: approximation = min over the family of KL(q || p(z|x)), amortisation = the exact
    KL(q_x || p(z|x)) minus it."""
    model, x, exact = _linear(posterior)
    torch.manual_seed(1)
    ev = vaekit.evaluate(model, x, importance_samples=4000, refinement=Refinement(), gap_elbo_samples=4000)
    family_gap = 0.0 if posterior == "full" else float(exact.diagonal_approximation_gap())
    with torch.no_grad():
        exact_kl = float(exact.kl_to_posterior(x, model.encode(x)).mean())
    assert ev.approximation_gap == pytest.approx(family_gap, abs=4 * ev.approximation_gap_se + 0.02)
    assert ev.amortisation_gap == pytest.approx(exact_kl - family_gap, abs=4 * ev.amortisation_gap_se + 0.02)
    # a linear-Gaussian model's gaps are closed forms (tests/test_exact_gaps.py): no Monte Carlo search ran
    assert ev.refinement is None and ev.refined_log_likelihood is None and "approximation_gap" in ev.exact
    assert math.isfinite(ev.amortisation_gap_se) and ev.amortisation_gap_se > 0


def test_elbo_of_a_gaussian_q_matches_the_closed_form():
    """E_q[log p(x|z)] by 100,000 draws (a standard error of about 0.013 nats here) − the closed-form KL."""
    model, x, exact = _linear("full")
    with torch.no_grad():
        q = model.encode(x)
        torch.manual_seed(0)
        got = elbo_of(model, x, q, n_samples=100_000)
        torch.testing.assert_close(got, exact.elbo(x, q), atol=0.06, rtol=0)


def test_refinement_on_an_mlp_never_lowers_the_elbo_and_leaves_the_model_alone():
    """On a nonlinear model (no closed form), ELBO(q*) ≥ ELBO(q_x) up to the Monte Carlo noise of the
    common draws, the model's weights and mode are untouched, and no gradient is left on them."""
    torch.manual_seed(0)
    model = vaekit.build_vae(vaekit.VAEConfig((1, 8, 8), latent_dim=4, hidden=(32,), likelihood="bernoulli"))
    model.train()
    x = (torch.rand(16, 1, 8, 8) < 0.3).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    terms = gap_terms(model, x, Refinement(steps=100), elbo_samples=500)
    assert float((terms.refined_elbo - terms.elbo).min()) > -0.05
    assert float((terms.refined_elbo - terms.elbo).mean()) > 0.1          # an untrained encoder leaves a lot
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_refinement_settings_are_checked():
    with pytest.raises(vaekit.ConfigError, match="steps"):
        Refinement(steps=0)
    with pytest.raises(vaekit.ConfigError, match="lr"):
        Refinement(lr=-1.0)


def _vaekit(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
def test_the_command_line_reports_the_split_and_encodes_refined_means(tmp_path):
    """`vaekit evaluate --gap-decomposition` adds the two gaps (they sum to log p̂ − ELBO(q_x) of the same
    draws) and its settings to the JSON; `vaekit encode --refine-steps` writes the means of q*."""
    # an mlp: a linear model's gaps are closed forms (no refinement to report; tests/test_exact_gaps.py)
    train = _vaekit("train", "--data", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1",
                    "--no-figures", "--no-progress", "--importance-samples", "5", "--out", "run", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    ev = _vaekit("evaluate", "run", "--limit", "12", "--importance-samples", "200", "--gap-decomposition",
                 "--refine-steps", "60", "--gap-elbo-samples", "200", "--json", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    doc = json.loads(ev.stdout)
    assert doc["refinement"] == {"steps": 60, "lr": 0.05, "samples": 16, "elbo_samples": 200}
    assert doc["amortisation_gap"] > 0 and doc["approximation_gap_se"] > 0
    tighter = max(doc["log_likelihood"], doc["refined_log_likelihood"])
    assert doc["refined_elbo"] == pytest.approx(tighter - doc["approximation_gap"])
    plain = _vaekit("encode", "run", "--limit", "6", "--out", "z.npy", cwd=tmp_path)
    refined = _vaekit("encode", "run", "--limit", "6", "--refine-steps", "60", "--with-scale", "--out", "zr.npy",
                      cwd=tmp_path)
    assert plain.returncode == 0 and refined.returncode == 0, (plain.stderr, refined.stderr)
    z, zr = np.load(tmp_path / "z.npy"), np.load(tmp_path / "zr.npy")
    assert z.shape == (6, 2) and zr.shape == (6, 2, 2)
    assert not np.allclose(z, zr[:, 0])
    bad = _vaekit("evaluate", "run", "--gap-decomposition", "--refine-steps", "0", cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--refine-steps" in bad.stderr
