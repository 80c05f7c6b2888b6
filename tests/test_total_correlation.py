"""The β-TC-VAE decomposition against its exact values in a Gaussian case (float64).

Data x ~ N(0, Σ_x) in 3 dimensions and an encoder q(z|x) = N(A x + c, diag s²) in 2: the aggregate
posterior is q(z) = N(c, Σ), Σ = A Σ_x Aᵀ + diag s², so

    MI  = E_x KL(q(z|x) || q(z)) = ½ (log det Σ - Σ_d log s_d²),
    TC  = KL(q(z) || Π_d q(z_d)) = ½ (Σ_d log Σ_dd - log det Σ),
    DKL = Σ_d KL(N(c_d, Σ_dd) || N(0, 1)),

and the minibatch estimates converge to them as the batch grows.
"""

from __future__ import annotations

import math

import pytest
import torch

from linear_problems import near_posterior_problem
from vaekit.errors import ConfigError
from vaekit.inference.objectives import ELBO, importance_terms
from vaekit.inference.total_correlation import tc_decomposition
from vaekit.inference.training_objectives import BTCVAE
from vaekit.prob.distributions import DiagonalNormal, standard_normal

pytestmark = pytest.mark.usefixtures("float64")

A = torch.tensor([[1.0, 0.5, -0.3], [0.9, 0.6, 0.1]], dtype=torch.float64)
C = torch.tensor([0.3, -0.5], dtype=torch.float64)
S = torch.tensor([0.4, 0.7], dtype=torch.float64)
SIGMA_X = torch.tensor([[1.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.0]], dtype=torch.float64)


def _exact() -> tuple[float, float, float]:
    cov = A @ SIGMA_X @ A.T + torch.diag(S**2)
    mi = 0.5 * (torch.logdet(cov) - (S**2).log().sum())
    tc = 0.5 * (cov.diagonal().log().sum() - torch.logdet(cov))
    var = cov.diagonal()
    dkl = 0.5 * (var + C**2 - 1 - var.log()).sum()
    return float(mi), float(tc), float(dkl)


def _estimate(batch: int, estimator: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, generator=g) @ torch.linalg.cholesky(SIGMA_X).T
    q = DiagonalNormal(x @ A.T + C, S.expand(batch, 2))
    z = q.loc + S * torch.randn(batch, 2, generator=g)
    parts = tc_decomposition(q, z, standard_normal(2), estimator=estimator, dataset_size=10**9)
    assert torch.allclose(parts.mutual_information + parts.total_correlation + parts.dimension_kl,
                          q.log_prob(z) - standard_normal(2).log_prob(z), atol=1e-10)
    return torch.stack([parts.mutual_information.mean(), parts.total_correlation.mean(), parts.dimension_kl.mean()])


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_estimates_converge_to_the_exact_terms(estimator):
    exact = torch.tensor(_exact())
    assert (exact > 0.05).all()
    errors = {}
    for batch, reps in ((16, 40), (800, 6)):
        est = torch.stack([_estimate(batch, estimator, seed) for seed in range(reps)]).mean(0)
        errors[batch] = (est - exact).abs()
    assert (errors[800] < 0.05).all(), errors[800]
    assert errors[16].max() > 0.1 and errors[16].max() > 3 * errors[800].max()   # a visible bias that shrinks


def test_btcvae_with_unit_weights_is_the_one_draw_elbo():
    _, model, x = near_posterior_problem(1)
    eps = torch.randn(1, x.shape[0], 2, generator=torch.Generator().manual_seed(0))
    log_px, log_pz, log_q = importance_terms(model, x, 1, eps=eps)
    t = BTCVAE(1.0, 1.0, 1.0).terms(model, x, eps=eps)
    assert torch.allclose(t.objective, (log_px + log_pz - log_q)[0], atol=1e-10)
    assert torch.allclose(t.elbo, t.objective, atol=1e-10)
    heavy = BTCVAE(1.0, 6.0, 1.0).terms(model, x, eps=eps)
    assert torch.allclose(heavy.elbo, t.elbo) and not torch.allclose(heavy.objective, t.objective)
    assert ELBO(1).terms(model, x).lower_bound and not heavy.lower_bound


def test_full_covariance_posteriors_and_refusals():
    """A full-covariance q gives the same terms as the diagonal q with the same covariance; a prior without
    Gaussian marginals (a mixture) and a dataset smaller than the batch are refused."""
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(6, 2, generator=g), 0.5 + torch.rand(6, 2, generator=g)
    z = loc + scale * torch.randn(6, 2, generator=g)
    diagonal = tc_decomposition(DiagonalNormal(loc, scale), z, standard_normal(2))
    full = tc_decomposition(torch.distributions.MultivariateNormal(loc, scale_tril=torch.diag_embed(scale)), z,
                            standard_normal(2))
    for name in ("log_q_given_x", "log_q_aggregate", "log_q_marginals", "log_p"):
        assert torch.allclose(getattr(full, name), getattr(diagonal, name), atol=1e-10), name
    q = DiagonalNormal(loc, scale)
    with pytest.raises(ConfigError, match="dataset_size >= the batch"):
        tc_decomposition(q, z, standard_normal(2), estimator="mss", dataset_size=3)
    mixture = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(2)),
                                                    DiagonalNormal(torch.randn(2, 2, generator=g), torch.ones(2, 2)))
    with pytest.raises(ConfigError, match="needs a Gaussian posterior and prior"):
        tc_decomposition(q, z, mixture)
    assert math.isfinite(_exact()[0])
