"""The ex-post Gaussian mixture on the latents: its draws follow the mixture (Kolmogorov-Smirnov on
projections against the mixture's closed-form CDF, and its moments), the fit is scikit-learn's on the
posterior means, and ``vaekit sample --sampler gmm`` runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from vaekit import VAEConfig, build_vae, fit_latent_gmm, sample_gmm
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.errors import ConfigError
from vaekit.inference.latent_mixture import LatentGMM
from vaekit.store.model_files import save_model
from vaekit.store.runs import DataSpec, eval_tensor


def _mixture() -> LatentGMM:
    """Three 2-D Gaussians with unequal weights and correlated, non-symmetric-square-root covariances."""
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0], [4.0, -1.0], [-3.0, 3.0]], dtype=torch.float64)
    a = torch.tensor([[[1.0, 0.0], [0.9, 0.5]], [[0.3, 0.0], [-0.2, 1.5]], [[2.0, 0.0], [1.0, 0.4]]],
                     dtype=torch.float64)
    return LatentGMM(weights, means, a @ a.transpose(1, 2), "means", 0, 0.0)


def test_draws_follow_the_mixture():
    gmm = _mixture()
    z = gmm.sample(20000, generator=torch.Generator().manual_seed(0)).numpy()
    w, m, s = gmm.weights.numpy(), gmm.means.numpy(), gmm.covariances.numpy()
    for direction in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -2.0]):
        u = np.asarray(direction) / np.linalg.norm(direction)
        loc, scale = m @ u, np.sqrt(np.einsum("i,cij,j->c", u, s, u))      # a projected mixture: 1-D Gaussians

        def cdf(t, loc=loc, scale=scale):
            return (w * stats.norm.cdf((np.asarray(t)[..., None] - loc) / scale)).sum(-1)

        assert stats.kstest(z @ u, cdf).pvalue > 1e-3, direction
    mean = (w[:, None] * m).sum(0)
    cov = (w[:, None, None] * (s + m[:, :, None] * m[:, None, :])).sum(0) - np.outer(mean, mean)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.06)
    np.testing.assert_allclose(np.cov(z.T), cov, rtol=0.05, atol=0.05)
    again = [gmm.sample(5, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*again)                                            # the generator alone decides the draws


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=3, arch="mlp", arch_args={"hidden": (16,)}))
    dataset = load_dataset("digits")
    prep = fit_preprocessing(dataset, "gaussian")
    return model, eval_tensor(prep, dataset.train, seed=0), prep


def test_the_fit_is_scikit_learns_on_the_posterior_means(model_and_data):
    from sklearn.mixture import GaussianMixture

    model, x, _ = model_and_data
    state = torch.get_rng_state()
    gmm = fit_latent_gmm(model, x, components=4, seed=1)
    with torch.no_grad():
        points = model.summary(x).double().numpy()
    reference = GaussianMixture(4, covariance_type="full", reg_covar=1e-6, max_iter=200, random_state=1).fit(points)
    np.testing.assert_allclose(gmm.weights.numpy(), reference.weights_)
    np.testing.assert_allclose(gmm.means.numpy(), reference.means_)
    assert gmm.n == len(x) and gmm.log_likelihood == pytest.approx(reference.score(points))
    draws = fit_latent_gmm(model, x, components=4, fit_on="draws", seed=1)
    assert draws.fit_on == "draws" and not torch.equal(draws.means, gmm.means)
    assert torch.equal(torch.get_rng_state(), state)                     # torch's global generator left alone
    z = gmm.sample(6, generator=torch.Generator().manual_seed(2))
    decoded = sample_gmm(model, gmm, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(decoded, model.decode(z.float()).mean)
    with pytest.raises(ConfigError, match="components"):
        fit_latent_gmm(model, x[:3], components=4)
    with pytest.raises(ConfigError, match="fit_on"):
        fit_latent_gmm(model, x, fit_on="modes")


def test_sample_gmm_command(model_and_data, tmp_path):
    model, _, prep = model_and_data
    save_model(model, tmp_path / "run", extra={"preprocessing": prep.to_dict(), "data": DataSpec().to_dict(),
                                               "train": {}})
    cmd = [sys.executable, "-m", "vaekit", "sample", "run", "--sampler", "gmm", "--components", "3", "--n", "12",
           "--out", "g.npy", "--seed", "4"]
    done = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "mixture of 3 Gaussians" in done.stdout
    samples = np.load(tmp_path / "g.npy")
    train = eval_tensor(prep, load_dataset("digits").train, seed=0)        # the run's training split, as it sees it
    gmm = fit_latent_gmm(model, train, components=3, seed=4)
    expected = sample_gmm(model, gmm, 12, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(samples, expected.numpy(), rtol=1e-5, atol=1e-6)
