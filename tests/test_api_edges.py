"""The Python API's sharp edges (issue 30): ``fit`` hands back the best validation weights, the estimators keep
no autograd graph unless asked, and the log p(x) entry points are one estimator with one answer per seed."""

from __future__ import annotations

import pytest
import torch

import vaekit
from linear_problems import near_posterior_problem
from vaekit import TrainConfig, VAEConfig, build_vae, fit
from vaekit.data import fit_preprocessing
from vaekit.store.runs import DataSpec
from vaekit.store.weights import load_weights


def test_fit_returns_the_best_validation_weights(tmp_path):
    """A step size that makes the validation ELBO fall after its best epoch: the model fit returns holds that
    epoch's weights (those a callback saw then, and the run's weights file), not the last epoch's."""
    dataset = DataSpec().load()
    pp = fit_preprocessing(dataset, "gaussian")
    x, v = pp.prepare(dataset.train[:64]), pp.prepare(dataset.val[:16])
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(16,)))
    seen = {}

    def keep(metrics):
        seen[metrics.epoch] = {k: t.clone() for k, t in model.state_dict().items()}

    result = fit(model, x, v, TrainConfig(epochs=4, batch_size=32, lr=0.3, seed=2), preprocessing=pp,
                 callbacks=[keep], run_dir=tmp_path / "run")
    assert result.best_epoch < 4, result.best_epoch                  # the last epoch is not the best here
    best, stored = seen[result.best_epoch], load_weights(tmp_path / "run" / "model.safetensors")
    for k, t in model.state_dict().items():
        assert torch.equal(t, best[k]) and torch.equal(t, stored[k]), k
    torch.manual_seed(0)
    last = build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(16,)))
    fit(last, x, v, TrainConfig(epochs=4, batch_size=32, lr=0.3, seed=2), preprocessing=pp, restore_best=False)
    assert all(torch.equal(t, seen[4][k]) for k, t in last.state_dict().items())   # opt-out: the last epoch's


def test_estimators_keep_no_graph_unless_asked(float64):
    _, model, x = near_posterior_problem(0)
    for value in (vaekit.estimate_log_likelihood(model, x, n_samples=50).log_likelihood,
                  vaekit.log_likelihood(model, x, n_samples=50), vaekit.iwae_bound(model, x, n_samples=50),
                  vaekit.elbo(model, x), vaekit.posterior_gap(model, x, n_samples=50)):
        assert value.grad_fn is None and not value.requires_grad
    bound = vaekit.iwae_bound(model, x, n_samples=50, requires_grad=True)
    est = vaekit.estimate_log_likelihood(model, x, n_samples=50, requires_grad=True)
    for value in (bound, est.log_likelihood, vaekit.elbo(model, x, requires_grad=True)):
        assert value.grad_fn is not None
    est.log_likelihood.sum().backward()
    assert model.decoder.f.linear.weight.grad is not None


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_the_log_likelihood_entry_points_agree_for_the_same_seed(chunk_size):
    """In float32 too: every entry point folds the same draws' weights in float64, bit for bit the same."""
    _, model, x = near_posterior_problem(1)
    answers = []
    for call in (lambda: vaekit.estimate_log_likelihood(model, x, n_samples=40, chunk_size=chunk_size).log_likelihood,
                 lambda: vaekit.log_likelihood(model, x, n_samples=40, chunk_size=chunk_size),
                 lambda: vaekit.iwae_bound(model, x, n_samples=40) if chunk_size is None else
                 vaekit.estimate_log_likelihood(model, x, n_samples=40, chunk_size=7).log_likelihood):
        torch.manual_seed(5)
        answers.append(call())
    assert torch.equal(answers[0], answers[1]) and torch.equal(answers[0], answers[2])
