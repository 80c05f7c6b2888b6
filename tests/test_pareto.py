"""PSIS diagnostics of importance weights: the generalised-Pareto fit against SciPy's maximum likelihood, and
k̂ on linear-Gaussian problems whose answer is known (a well-matched proposal and a too-narrow one, for which the
weights' tail shape is exactly 1 - r with r the proposal's variance ratio)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from linear_problems import near_posterior_problem
from vaekit import estimate_log_likelihood, evaluate
from vaekit.inference.pareto import effective_sample_size, gpd_fit, pareto_k, tail_length


@pytest.mark.parametrize("shape", [-0.3, 0.0, 0.4, 0.8, 1.3])
def test_gpd_fit_matches_scipy_on_large_samples(shape):
    """Two rows of 3000 GPD draws fitted at once: each k̂, σ̂ as SciPy's maximum likelihood (floc=0) gives
    them, to 0.01, and near the truth (k = shape, σ = 2)."""
    rng = np.random.default_rng(7)
    y = stats.genpareto.rvs(shape, scale=2.0, size=(2, 3000), random_state=rng)
    k, sigma = gpd_fit(torch.tensor(y), prior=False)
    for row, k_row, s_row in zip(y, k.tolist(), sigma.tolist(), strict=True):
        ref_k, _, ref_sigma = stats.genpareto.fit(row, floc=0)
        assert abs(k_row - ref_k) < 0.01 and abs(s_row / ref_sigma - 1) < 0.01, (k_row, ref_k, s_row, ref_sigma)
        assert abs(k_row - shape) < 0.1
    shrunk, _ = gpd_fit(torch.tensor(y[:, :20]))                 # the PSIS prior pulls a short tail's k̂ towards ½
    plain, _ = gpd_fit(torch.tensor(y[:, :20]), prior=False)
    torch.testing.assert_close(shrunk, (20 * plain + 5) / 30)


def test_tail_length_and_effective_sample_size():
    assert [tail_length(s) for s in (10, 100, 5000)] == [2, 20, 213]          # ⌈min(S/5, 3√S)⌉
    assert torch.isnan(pareto_k(torch.zeros(3, 2), 10)).all()                 # too few draws for a tail
    log_w = torch.log(torch.tensor([[1.0], [1.0], [2.0]]))
    ess = effective_sample_size(torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0))
    torch.testing.assert_close(ess, torch.tensor([16 / 6]))                   # (Σ w)² / Σ w²


@pytest.mark.parametrize("posterior", ["full", "diagonal"])
def test_a_wide_proposal_has_a_small_k_hat_and_an_honest_error_bar(float64, posterior):
    """Proposal 1.5× the posterior's covariance: finite-variance weights, k̂ < 0.5, and log p̂(x) within 3 of its
    standard errors of the exact log p(x) on every example."""
    truth, model, x = near_posterior_problem(0, posterior=posterior, inflate=1.5, shift=0.1)
    torch.manual_seed(0)
    est = estimate_log_likelihood(model, x, n_samples=5000)
    exact = truth.log_marginal(x)
    assert (est.pareto_k < 0.5).all(), est.pareto_k
    assert not est.unreliable.any()
    assert ((est.log_likelihood - exact).abs() <= 3 * est.standard_error).all()
    assert ((est.effective_sample_size > 1000) & (est.effective_sample_size <= 5000)).all()


def test_a_too_narrow_proposal_is_flagged(float64, capsys):
    """Proposal 0.1× the posterior's covariance (full, same mean): the weights' tail shape is 1 - 0.1 = 0.9, so
    k̂ is near 0.9 (> 0.7) on every example, the estimate is marked unreliable, and evaluate counts the examples
    and the CLI's report warns."""
    from vaekit.cli.evaluate_cmd import warn_unreliable

    truth, model, x = near_posterior_problem(1, posterior="full", inflate=0.1, shift=0.0, n=8)
    torch.manual_seed(1)
    est = estimate_log_likelihood(model, x, n_samples=20000)
    assert (est.pareto_k > 0.7).all() and est.unreliable.all(), est.pareto_k
    assert abs(float(est.pareto_k.mean()) - 0.9) < 0.1
    assert (est.effective_sample_size < 2000).all()
    result = evaluate(model, x, importance_samples=5000)
    assert result.unreliable_examples >= 6 and result.pareto_k_max > 0.7
    assert math.isfinite(result.effective_sample_size_min)
    warn_unreliable(result)
    assert "Pareto k̂ > 0.7" in capsys.readouterr().err
