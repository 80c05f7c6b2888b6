"""The gap decomposition of a linear-Gaussian model in closed form: evaluate reports the approximation and
amortisation gaps exactly (no Monte Carlo search), and names the numbers that are exact."""

from __future__ import annotations

import pytest
import torch

from linear_problems import random_linear_problem
from vaekit import evaluate
from vaekit.inference.gaps import Refinement


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_linear_gaussian_gaps_are_closed_forms(float64, posterior):
    truth, model, x = random_linear_problem(2, posterior=posterior, n=12)
    torch.manual_seed(0)
    result = evaluate(model, x, importance_samples=200, refinement=Refinement(steps=2))
    with torch.no_grad():
        q = model.encode(x)
    kl = truth.kl_to_posterior(x, q)                                   # KL(q_x || p(z|x)) per example
    best = truth.diagonal_approximation_gap() if posterior == "diagonal" else torch.zeros(())
    if posterior == "diagonal":                                        # the best diagonal member, by its own formula
        torch.testing.assert_close(truth.kl_to_posterior(x, truth.best_diagonal_posterior(x)), best.expand(12))
    assert result.approximation_gap == pytest.approx(float(best), abs=1e-12)
    assert result.approximation_gap_se == pytest.approx(0.0, abs=1e-12)          # the same for every x: no noise
    assert result.amortisation_gap == pytest.approx(float((kl - best).mean()), abs=1e-10)
    assert result.amortisation_gap_se == pytest.approx(float((kl - best).std()) / 12**0.5, rel=1e-9)
    assert result.exact_posterior_gap == pytest.approx(float(kl.mean()), abs=1e-10)
    assert result.exact_elbo == pytest.approx(float(truth.elbo(x, q).mean()), abs=1e-10)
    log_p = truth.log_marginal(x)
    assert result.refined_elbo == pytest.approx(float((log_p - best).mean()), abs=1e-10)
    assert result.exact_posterior_gap == pytest.approx(result.amortisation_gap + result.approximation_gap, abs=1e-12)
    assert {"approximation_gap", "amortisation_gap", "exact_posterior_gap", "exact_log_likelihood",
            "exact_elbo", "refined_elbo"} <= set(result.exact)
    assert "log_likelihood" not in result.exact and result.refinement is None     # nothing searched by Monte Carlo
    assert result.to_dict()["exact"] == list(result.exact) or tuple(result.to_dict()["exact"]) == result.exact
