"""Training a linear VAE with learned c by the ELBO recovers the closed-form pPCA maximum likelihood."""

from __future__ import annotations

import pytest
import torch

from vaekit import LinearGaussian, VAEConfig, build_vae, elbo, ppca_mle


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_linear_vae_reaches_the_ppca_maximum_likelihood(float64, posterior):
    """At its optimum the linear VAE's ELBO is tight and its decoder is the pPCA MLE (Lucas et al.
    2019), so log p(x) under the trained decoder must come within 0.02 nats/example of the MLE."""
    g = torch.Generator().manual_seed(0)
    truth = LinearGaussian.ppca(1.5 * torch.randn(5, 2, generator=g), torch.randn(5, generator=g), 0.5)
    x = truth.b + torch.randn(500, 2, generator=g) @ truth.W.T + 0.5**0.5 * torch.randn(500, 5, generator=g)
    best = ppca_mle(x, 2).log_marginal(x).mean().item()

    torch.manual_seed(1)
    model = build_vae(VAEConfig((5,), latent_dim=2, arch="linear", decoder_variance="learned", posterior=posterior))
    start = LinearGaussian.from_model(model).log_marginal(x).mean().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1500)
    for _ in range(1500):
        loss = -elbo(model, x, n_samples=4, requires_grad=True).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    reached = LinearGaussian.from_model(model).log_marginal(x).mean().item()
    assert best - start > 5                                   # the model starts far from the optimum
    assert 0 <= best - reached < 0.02, (best, reached)       # and ends within 0.02 nats of it
