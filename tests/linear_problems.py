"""Random linear-Gaussian problems shared by the tests."""

from __future__ import annotations

import torch

from vaekit import LinearGaussian, VAEConfig, build_vae


def random_linear_problem(seed: int, d: int = 5, k: int = 2, c: float = 0.4, n: int = 6, posterior: str = "diagonal"):
    """A pPCA model with random W, b; data x drawn from it; a linear VAE with that decoder and a
    random (imperfect) linear encoder. Returns (truth, model, x)."""
    g = torch.Generator().manual_seed(seed)
    W, b = torch.randn(d, k, generator=g), torch.randn(d, generator=g)
    truth = LinearGaussian.ppca(W, b, c)
    x = b + torch.randn(n, k, generator=g) @ W.T + c**0.5 * torch.randn(n, d, generator=g)
    torch.manual_seed(seed)
    model = build_vae(VAEConfig((d,), latent_dim=k, arch="linear", decoder_variance=c, posterior=posterior))
    with torch.no_grad():
        model.decoder.f.linear.weight.copy_(W)
        model.decoder.f.linear.bias.copy_(b)
        for p in model.encoder.parameters():
            p.mul_(0.5)
    return truth, model, x


def near_posterior_problem(seed: int, posterior: str = "diagonal", inflate: float = 1.5, shift: float = 0.2, **kw):
    """Like :func:`random_linear_problem`, but the encoder is a deliberately imperfect copy of the
    exact posterior: means shifted by ``shift``, covariance ``inflate`` times wider (diagonal: the
    posterior's marginal variances), so importance weights have finite variance."""
    from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp_inverse

    truth, model, x = random_linear_problem(seed, posterior=posterior, **kw)
    exact = truth.posterior_encoder()
    cov = truth.posterior(x[:1]).covariance_matrix[0] * inflate
    enc = model.encoder
    with torch.no_grad():
        enc.mean.weight.copy_(exact.mean.weight)
        enc.mean.bias.copy_(exact.mean.bias + shift)
        enc.log_var.weight.zero_()
        if posterior == "diagonal":
            log_var = cov.diagonal().log()
        else:
            tril = torch.linalg.cholesky(cov)
            log_var = 2 * tril.diagonal().log()
            rows, cols = torch.tril_indices(len(cov), len(cov), offset=-1)
            enc.off_diagonal.weight.zero_()
            enc.off_diagonal.bias.copy_(tril[rows, cols])
        enc.log_var.bias.copy_(soft_clamp_inverse(log_var, ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX))
    return truth, model, x
