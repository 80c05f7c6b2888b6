"""MIWAE, PIWAE, CIWAE and the Rényi bound: their limits, an independent NumPy/SciPy reference, and
log p(x) exactly where the encoder is the exact posterior (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from linear_problems import near_posterior_problem, random_linear_problem
from vaekit.errors import ConfigError
from vaekit.inference.bounds import ciwae_value, iwae_value, miwae_value, renyi_value
from vaekit.inference.objectives import ELBO, IWAE, importance_terms
from vaekit.inference.training_objectives import BTCVAE, CIWAE, MIWAE, PIWAE, VR, make_objective
from vaekit.training.step import batch_loss, routed_backward

pytestmark = pytest.mark.usefixtures("float64")


def _log_w(seed: int = 0, k: int = 12, b: int = 5) -> torch.Tensor:
    return 3 * torch.randn(k, b, generator=torch.Generator().manual_seed(seed))


def test_values_against_a_numpy_reference():
    log_w = _log_w()
    w = log_w.numpy()
    k = w.shape[0]
    np.testing.assert_allclose(iwae_value(log_w), logsumexp(w, 0) - math.log(k), rtol=1e-12)
    groups = w.reshape(3, 4, -1)
    np.testing.assert_allclose(miwae_value(log_w, 3), (logsumexp(groups, 1) - math.log(4)).mean(0), rtol=1e-12)
    np.testing.assert_allclose(ciwae_value(log_w, 0.3), 0.3 * w.mean(0) + 0.7 * (logsumexp(w, 0) - math.log(k)),
                               rtol=1e-12)
    for alpha in (-1.0, 0.5, 2.0):
        ref = np.log(np.mean(np.exp((1 - alpha) * w), 0)) / (1 - alpha)
        np.testing.assert_allclose(renyi_value(log_w, alpha), ref, rtol=1e-10)


def test_limits_on_the_same_draws():
    log_w = _log_w(1)
    elbo = log_w.mean(0)
    assert torch.allclose(renyi_value(log_w, 0.0), iwae_value(log_w), atol=1e-12)          # VR α = 0 is IWAE
    assert torch.allclose(renyi_value(log_w, 1.0 - 1e-7), elbo, atol=1e-4)                # α -> 1 the ELBO
    assert torch.allclose(renyi_value(log_w, 1.0), elbo, atol=1e-12)
    assert torch.allclose(miwae_value(log_w, 1), iwae_value(log_w), atol=1e-12)           # MIWAE(1, K) = IWAE
    assert torch.allclose(miwae_value(log_w, 12), elbo, atol=1e-12)                       # MIWAE(M, 1) = ELBO
    assert torch.allclose(ciwae_value(log_w, 1.0), elbo, atol=1e-12)
    assert torch.allclose(ciwae_value(log_w, 0.0), iwae_value(log_w), atol=1e-12)
    # ordering for fixed draws: ELBO <= MIWAE(3, 4) <= IWAE(12); the Rényi bound falls as α grows
    assert (elbo <= miwae_value(log_w, 3) + 1e-12).all() and (miwae_value(log_w, 3) <= iwae_value(log_w)).all()
    values = torch.stack([renyi_value(log_w, a) for a in (-2.0, -0.5, 0.0, 0.5, 0.99, 3.0)])
    assert (values[1:] <= values[:-1] + 1e-12).all()


def test_objectives_on_given_draws_match_their_limits():
    _, model, x = near_posterior_problem(2)
    eps = torch.randn(6, x.shape[0], 2, generator=torch.Generator().manual_seed(0))
    log_px, log_pz, log_q = importance_terms(model, x, 6, eps=eps)
    log_w = log_px + log_pz - log_q
    iwae = IWAE(6).terms(model, x, eps=eps).objective
    assert torch.allclose(iwae, iwae_value(log_w))
    assert torch.allclose(VR(0.0, 6).terms(model, x, eps=eps).objective, iwae)
    assert torch.allclose(MIWAE(1, 6).terms(model, x, eps=eps).objective, iwae)
    assert torch.allclose(MIWAE(6, 1).terms(model, x, eps=eps).objective, log_w.mean(0))
    assert torch.allclose(CIWAE(1.0, 6).terms(model, x, eps=eps).objective, log_w.mean(0))
    assert torch.allclose(CIWAE(0.0, 6).terms(model, x, eps=eps).objective, iwae)
    piwae = PIWAE(2, 3).terms(model, x, eps=eps)
    assert torch.allclose(piwae.objective, iwae)
    assert torch.allclose(piwae.inference_objective, miwae_value(log_w, 2))


# (the default ELBO's reconstruction term alone is a Monte Carlo estimate: exact only in expectation)
@pytest.mark.parametrize("objective", [ELBO(4, gradient="stl"), IWAE(5), IWAE(5, gradient="dreg"),
                                       MIWAE(2, 3), MIWAE(2, 3, gradient="dreg"), PIWAE(3, 2), CIWAE(0.05, 5),
                                       VR(0.5, 5), VR(-1.0, 5), VR(2.0, 5)],
                         ids=lambda o: f"{o.name}-{getattr(o, 'gradient', 'reparam')}")
def test_every_bound_is_log_px_at_the_exact_posterior(objective):
    truth, model, x = random_linear_problem(4, posterior="full")
    model.encoder = truth.posterior_encoder()
    t = objective.terms(model, x)
    log_px = truth.log_marginal(x)
    assert torch.allclose(t.objective, log_px, atol=1e-9)
    assert torch.allclose(t.elbo, log_px, atol=1e-9)
    if t.inference_objective is not None:
        assert torch.allclose(t.inference_objective, log_px, atol=1e-9)


def test_lower_bound_flags():
    _, model, x = near_posterior_problem(0)
    assert IWAE(3).terms(model, x).lower_bound and MIWAE(2, 2).terms(model, x).lower_bound
    assert ELBO(1).terms(model, x, beta=1.0).lower_bound and not ELBO(1).terms(model, x, beta=0.5).lower_bound
    assert not ELBO(1, free_bits=0.1).terms(model, x).lower_bound
    assert VR(0.5, 3).terms(model, x).lower_bound and not VR(-0.5, 3).terms(model, x).lower_bound
    assert BTCVAE(1.0, 1.0, 1.0).terms(model, x).lower_bound and not BTCVAE().terms(model, x).lower_bound


def _grads(model, params) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def test_piwae_routes_miwae_to_the_encoder_and_iwae_to_the_decoder():
    _, model, x = near_posterior_problem(5)
    eps = torch.randn(6, x.shape[0], 2, generator=torch.Generator().manual_seed(3))
    params = list(model.parameters())
    enc = {id(p) for p in model.encoder.parameters()}

    def gradients_of(value: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        (-value.sum() / x.shape[0]).backward()
        return _grads(model, params)

    for gradient in ("reparam", "dreg"):
        miwae = gradients_of(MIWAE(2, 3, gradient=gradient).terms(model, x, eps=eps).objective)
        iwae = gradients_of(IWAE(6).terms(model, x, eps=eps).objective)
        model.zero_grad(set_to_none=True)
        loss, _ = batch_loss(model, PIWAE(2, 3, gradient=gradient), x, 1.0, eps, 1.0 / x.shape[0])
        routed_backward(loss, params, model)
        piwae = _grads(model, params)
        for p, got, m, i in zip(params, piwae, miwae, iwae, strict=True):
            expected = m if id(p) in enc else i
            assert torch.allclose(got, expected, atol=1e-12), (gradient, id(p) in enc)
        assert any((m - i).abs().max() > 1e-4 for m, i in zip(miwae, iwae, strict=True))   # the groups differ


@pytest.mark.parametrize("name, kwargs, message", [
    ("elbo", {"gradient": "dreg"}, "gradient: dreg does not apply to objective elbo"),
    ("iwae", {"gradient": "stl"}, "STL is biased"),
    ("ciwae", {"gradient": "dreg"}, "does not apply to objective ciwae"),
    ("miwae", {"options": {"M": 2}}, "unknown ['M'] for objective miwae"),
    ("ciwae", {"options": {"beta": 1.5}}, "beta: must be a finite number in [0, 1]"),
    ("btcvae", {"options": {"estimator": "mss"}}, "dataset_size: estimator mss needs"),
    ("btcvae", {"samples": 3}, "one draw per example"),
    ("vr", {"free_bits": 0.5}, "free_bits: applies to objective elbo only"),
    ("elbo", {"gradient": "stl", "free_bits": 0.5}, "free bits need the KL per dimension"),
])
def test_bad_combinations_are_refused(name, kwargs, message):
    with pytest.raises(ConfigError, match=None) as info:
        make_objective(name, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_piwae_is_refused_under_data_parallelism(monkeypatch):
    from vaekit.training import TrainConfig, distributed, fit

    _, model, x = near_posterior_problem(5)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    config = TrainConfig(epochs=1, batch_size=4, objective="piwae", samples=2, objective_args={"groups": 2})
    with pytest.raises(ConfigError, match="objective piwae: trains its two parameter groups by two backward"):
        fit(model, x, x, config, progress=False)
