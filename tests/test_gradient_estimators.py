"""STL and DReG against what is known exactly on a linear-Gaussian model (float64).

* With the encoder equal to the exact posterior p(z|x), every log weight equals log p(x): the STL gradient
  of the ELBO and the DReG gradient of the IWAE bound w.r.t. the encoder are zero for every draw (zero
  variance), while the plain reparameterised gradients (whose score term is left in) are not.
* At other parameters the mean of many STL gradients equals the exact gradient of the closed-form ELBO,
  and the mean of many DReG gradients the mean of plain reparameterised IWAE gradients; a biased
  estimator (STL applied to the IWAE bound, Tucker et al. 2019) fails the same check.
"""

from __future__ import annotations

import pytest
import torch

from linear_problems import near_posterior_problem, random_linear_problem
from vaekit.inference.bounds import iwae_value
from vaekit.inference.objectives import ELBO, IWAE, weighted_draws

pytestmark = pytest.mark.usefixtures("float64")


def _exact_encoder_problem(seed: int = 0):
    truth, model, x = random_linear_problem(seed, posterior="full")
    model.encoder = truth.posterior_encoder()
    return truth, model, x


def _encoder_grad(model, value: torch.Tensor) -> torch.Tensor:
    params = list(model.encoder.parameters())
    grads = torch.autograd.grad(value.sum(), params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads,
                                                                                           strict=True)])


def _draws_of_gradient(model, x, value_fn, repeats: int, copies: int) -> torch.Tensor:
    """(repeats, P): each row the encoder gradient of Σ value over ``copies`` replicas of x, divided by copies."""
    xs = x.repeat(copies, 1)
    return torch.stack([_encoder_grad(model, value_fn(model, xs)) / copies for _ in range(repeats)])


def _iwae_stl(model, x, k=4):
    """A biased estimator for the IWAE bound: the score term removed with the IWAE weights w̃_k (not w̃_k²)."""
    log_px, log_pz, log_q = weighted_draws(model, x, k, gradient="stl")
    return iwae_value(log_px + log_pz - log_q)


@pytest.mark.parametrize("objective, plain", [(ELBO(3, gradient="stl"), ELBO(3)), (IWAE(4, gradient="dreg"), IWAE(4))])
def test_zero_variance_at_the_exact_posterior(objective, plain):
    truth, model, x = _exact_encoder_problem()
    torch.manual_seed(1)
    for _ in range(5):
        t = objective.terms(model, x)
        assert torch.allclose(t.objective, truth.log_marginal(x), atol=1e-10)   # every log w_k = log p(x)
        assert _encoder_grad(model, t.objective).abs().max() < 1e-10
    # the plain reparameterised gradient (the score term left in) differs from draw to draw
    first, second = (_encoder_grad(model, plain.terms(model, x).objective) for _ in range(2))
    assert (first - second).abs().max() > 1e-2


def test_stl_is_unbiased_for_the_closed_form_elbo_gradient():
    truth, model, x = near_posterior_problem(3)
    exact = _encoder_grad(model, truth.elbo(x, model.encode(x)))
    torch.manual_seed(0)
    grads = _draws_of_gradient(model, x, ELBO(1, gradient="stl"), repeats=100, copies=40)
    se = grads.std(0) / grads.shape[0] ** 0.5
    assert exact.abs().max() > 0.05                                   # away from the optimum
    assert ((grads.mean(0) - exact).abs() <= 4 * se + 1e-9).all()


def test_dreg_is_unbiased_for_the_iwae_gradient_and_stl_is_not():
    truth, model, x = near_posterior_problem(3, inflate=2.5, shift=0.6)
    torch.manual_seed(0)
    plain = _draws_of_gradient(model, x, IWAE(4), repeats=100, copies=40)
    dreg = _draws_of_gradient(model, x, IWAE(4, gradient="dreg"), repeats=100, copies=40)
    biased = _draws_of_gradient(model, x, _iwae_stl, repeats=100, copies=40)

    def z_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
        return (a.mean(0) - b.mean(0)).abs() / se

    assert z_scores(dreg, plain).max() < 4.5
    assert z_scores(biased, plain).max() > 8                          # the check has the power to fail
    assert dreg.var(0).sum() < plain.var(0).sum()                     # and DReG is the quieter one here
