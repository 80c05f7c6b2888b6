"""Diagnostics of importance weights: the Pareto k̂ of Pareto-smoothed importance sampling (PSIS; Vehtari,
Simpson, Gelman, Yao & Gabry 2024, "Pareto smoothed importance sampling", JMLR 25) and the effective sample size.

With S draws and weights w_1..w_S, PSIS fits a generalised Pareto distribution (GPD)

    p(y) = (1/σ) (1 + k y / σ)^(-1/k - 1),   y > 0,

to the exceedances y = w - u of the M = ⌈min(S/5, 3 √S)⌉ largest weights over the (M+1)-th largest, u. The
shape k̂ is the number of finite moments in disguise (the weights have 1/k̂ of them): for k̂ < 0.5 the variance
is finite and the central limit theorem, hence the delta-method standard error, applies; for 0.5 <= k̂ <= 0.7
the estimate still converges, slowly; for k̂ > 0.7 the estimate of log E[w] is unreliable and so is its
standard error (:data:`K_HAT_THRESHOLD`). A Gaussian proposal N(m, rΣ) for a Gaussian target N(m, Σ) with
r < 1 (too narrow) has weights with tail shape exactly k = 1 - r.

The fit is Zhang & Stephens' (2009, Technometrics 51) empirical-Bayes estimate, as PSIS uses it: with the
exceedances sorted, y_(M) the largest and y_q = y_(⌊M/4 + ½⌋) the first quartile, on a grid of
m = 30 + ⌊√M⌋ values θ_j = 1/y_(M) + (1 - √(m / (j - ½))) / (3 y_q),

    k(θ) = mean_i log(1 - θ y_i),   ℓ(θ) = M (log(-θ / k(θ)) - k(θ) - 1)      (the profile log-likelihood),
    θ̂ = Σ_j θ_j softmax(ℓ)_j,       k̂ = k(θ̂),   σ̂ = -k̂ / θ̂,

then k̂ is shrunk towards ½ as by a weakly informative prior worth 10 draws: (M k̂ + 5) / (M + 10). Every
function here is vectorised over the examples: one fit per column, no Python loop over examples.

The effective sample size is Kish's (Σ w)² / Σ w², between 1 and S.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["K_HAT_THRESHOLD", "MIN_TAIL", "tail_length", "gpd_fit", "pareto_k", "effective_sample_size"]

#: Above this k̂ the importance-sampled estimate and its standard error are unreliable (Vehtari et al. 2024).
K_HAT_THRESHOLD = 0.7
#: Fewer tail draws than this give no k̂ (NaN): too few to fit two parameters.
MIN_TAIL = 5
_PRIOR_DRAWS, _PRIOR_K = 10, 0.5
#: Numbers one fit's (rows, grid, M) temporaries hold at most (8 MiB of float64): columns are fitted in groups.
_FIT_BUDGET = 1 << 20


def tail_length(n_samples: int) -> int:
    """M = ⌈min(S / 5, 3 √S)⌉, the number of largest weights whose tail PSIS fits (S = ``n_samples``)."""
    return math.ceil(min(0.2 * n_samples, 3 * math.sqrt(n_samples)))


def gpd_fit(y: Tensor, *, prior: bool = True) -> tuple[Tensor, Tensor]:
    """Zhang & Stephens' estimate of the GPD shape k and scale σ of exceedances ``y`` (..., M) > 0, one fit
    per row of the last dimension (module docstring); ``prior``: shrink k̂ towards ½ as PSIS does. Returns
    (k̂, σ̂), each of shape (...). Computed in float64."""
    y = y.double().sort(-1).values
    n = y.shape[-1]
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=torch.float64, device=y.device)
    tiny = torch.finfo(torch.float64).tiny
    largest = y[..., -1:].clamp_min(tiny)                                   # (..., 1)
    quartile = y[..., int(n / 4 + 0.5) - 1, None].clamp_min(tiny)          # (..., 1)
    theta = 1 / largest + (1 - torch.sqrt(m / (j - 0.5))) / (3 * quartile)  # (..., m), each < 1 / y_(M)
    k = torch.log1p(-theta[..., :, None] * y[..., None, :]).mean(-1)       # (..., m)
    profile = n * (torch.log(-theta / k) - k - 1)
    profile = torch.where(torch.isfinite(profile), profile, torch.full_like(profile, -math.inf))
    theta_hat = (torch.softmax(profile, -1) * theta).sum(-1, keepdim=True)  # (..., 1)
    k_hat = torch.log1p(-theta_hat * y).mean(-1)
    sigma = -k_hat / theta_hat.squeeze(-1)
    if prior:
        k_hat = (n * k_hat + _PRIOR_DRAWS * _PRIOR_K) / (n + _PRIOR_DRAWS)
    return k_hat, sigma


def pareto_k(top_log_weights: Tensor, n_samples: int) -> Tensor:
    """PSIS k̂ of each column's importance weights from its largest log-weights ``top_log_weights``
    (T, B), T >= M + 1 with M = :func:`tail_length` (S = ``n_samples``) (only the M + 1 largest are used;
    any order): the GPD fit to the M largest weights' exceedances over the (M+1)-th, shape (B,). NaN where
    M < :data:`MIN_TAIL` (too few draws); the weights are scaled by the largest, so any log-weights do."""
    m = tail_length(n_samples)
    if m < MIN_TAIL:
        return torch.full(top_log_weights.shape[1:], math.nan, dtype=torch.float64, device=top_log_weights.device)
    if top_log_weights.shape[0] < m + 1:
        raise ValueError(f"pareto_k: needs the {m + 1} largest log-weights of {n_samples}, got "
                         f"{top_log_weights.shape[0]}")
    top = top_log_weights.double().topk(m + 1, dim=0).values               # (M+1, B), descending
    scale = top[0]
    exceedances = (torch.exp(top[:m] - scale) - torch.exp(top[m] - scale)).T   # (B, M), >= 0
    rows = max(1, _FIT_BUDGET // (m * (30 + int(math.sqrt(m)))))              # the fit holds (rows, grid, M)
    return torch.cat([gpd_fit(part)[0] for part in exceedances.split(rows)])


def effective_sample_size(log_sum: Tensor, log_sum_sq: Tensor) -> Tensor:
    """Kish's effective sample size (Σ w)² / Σ w² from log Σ w and log Σ w² (any shape)."""
    return torch.exp(2 * log_sum - log_sum_sq)
