"""Estimators of log p(x), of the posterior gap KL(q_x(z) || p(z|x)), and of latent usage.

Importance sampling with the encoder as proposal (Burda et al. 2016, appendix):

    log p̂(x) = log (1/K) Σ_k w_k,   w_k = p(x|z_k) p(z_k) / q_x(z_k),   z_k ~ q_x(z),

K = 5000 by convention. It is a stochastic lower bound (E log p̂ = L_K <= log p(x)) whose bias
≈ Var(w) / (2 K E[w]²) shrinks as 1/K. The draws are taken ``chunk_size`` at a time and folded
into running log-sum-exps, so memory is bounded for any K.

The seed's intractable KL(q_x(z) || p(z|x)) = log p(x) - ELBO(x) is estimated by the posterior
gap log p̂(x) - mean_k log w_k from the same K draws (never negative, by Jensen).

Estimators never change the model they evaluate: each runs with the model in eval mode (so a
profiled decoder variance uses its running c instead of refitting c on the data given) and
restores the mode afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.errors import ConfigError
from vaekit.inference.objectives import check_batch, evaluation_mode, log_importance_weights
from vaekit.inference.pareto import K_HAT_THRESHOLD, effective_sample_size, pareto_k, tail_length
from vaekit.models.protocol import LatentModel, with_labels
from vaekit.prob.distributions import kl_per_dimension as _kl_per_dimension

__all__ = ["LikelihoodEstimate", "estimate_log_likelihood", "log_likelihood", "iwae_bound", "posterior_gap",
           "kl_per_dimension", "active_units", "ActiveUnits", "bits_per_dim", "default_chunk_size",
           "evaluation_mode"]


@dataclass(frozen=True)
class LikelihoodEstimate:
    """Per-example results of one importance-sampling pass, each of shape (B,), nats.

    ``standard_error`` is the delta-method standard error of ``log_likelihood``,
    sqrt((mean w² / (mean w)² - 1) / K), computed from the same draws; it assumes the weights have a
    finite variance, which ``pareto_k`` checks: the PSIS shape k̂ of the weights' tail
    (:mod:`vaekit.inference.pareto`; NaN for K < 25, too few draws to fit it). Where k̂ >
    :data:`~vaekit.inference.pareto.K_HAT_THRESHOLD` (0.7) the estimate and its standard error are
    unreliable (``unreliable``). ``effective_sample_size``: Kish's (Σ w)² / Σ w², between 1 and K.
    """

    log_likelihood: Tensor
    elbo: Tensor
    posterior_gap: Tensor
    standard_error: Tensor
    n_samples: int
    pareto_k: Tensor
    effective_sample_size: Tensor

    @property
    def unreliable(self) -> Tensor:
        """Which examples' estimates are unreliable: k̂ > 0.7, shape (B,) bool (False where k̂ is NaN)."""
        return self.pareto_k > K_HAT_THRESHOLD


#: Numbers one chunk's decoder output holds by default: 2^21 (8 MiB of float32) on the CPU, where a
#: chunk whose temporaries stay in cache is faster than a large one (benchmarks/speed_evaluation.py
#: times both budgets); 2^24 on other devices, which want large kernels.
CPU_CHUNK_BUDGET = 1 << 21
DEVICE_CHUNK_BUDGET = 1 << 24


def default_chunk_size(batch_size: int, data_dim: int, budget: int | None = None, *,
                       device: torch.device | str | None = None) -> int:
    """Draws per chunk so that one chunk's decoder output holds about ``budget`` numbers
    (default: :data:`CPU_CHUNK_BUDGET` on the CPU or when ``device`` is None, else
    :data:`DEVICE_CHUNK_BUDGET`)."""
    if budget is None:
        on_cpu = device is None or torch.device(device).type == "cpu"
        budget = CPU_CHUNK_BUDGET if on_cpu else DEVICE_CHUNK_BUDGET
    return max(1, budget // max(1, batch_size * data_dim))


def estimate_log_likelihood(model: LatentModel, x: Tensor, *, n_samples: int = 5000, chunk_size: int | None = None,
                            proposal: Distribution | None = None, y: Any = None,
                            requires_grad: bool = False) -> LikelihoodEstimate:
    """Importance-sampled log p(x), the ELBO and the posterior gap for x (B, *data_shape), with the
    weights' diagnostics (PSIS k̂, effective sample size): vaekit's one log p(x) estimator
    (:func:`log_likelihood` and :func:`iwae_bound` are thin aliases of it, with
    the same answer for the same seed).

    ``proposal``: the distribution the draws come from (batch shape (B,)); by default the encoder's
    q_x(z). Any proposal gives a stochastic lower bound; one closer to p(z|x) a tighter one (the
    gap decomposition also uses the refined q*_x, :mod:`vaekit.inference.gaps`). The ELBO and the
    posterior gap are then those of the proposal. ``y`` (B,): the labels, for a conditional model, whose
    estimate is then of log p(x|y). It runs under ``torch.no_grad`` (no graph is kept, whatever K) unless
    ``requires_grad``: then the estimates carry gradients to the model's parameters (the graph of all K draws)."""
    check_batch(model, x)
    model = with_labels(model, y)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples: must be an integer >= 1, got {n_samples!r}")
    if chunk_size is None:
        values = math.prod(x.shape[1:]) * int(getattr(model, "values_per_dim", 1))   # the decoder's output per draw
        chunk_size = default_chunk_size(x.shape[0], values, device=x.device)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size: must be >= 1, got {chunk_size}")
    with torch.set_grad_enabled(requires_grad), evaluation_mode(model):
        q = model.encode(x) if proposal is None else proposal   # once: the chunks differ only in their draws
        sums = _WeightSums.empty(x.shape[0], min(n_samples, tail_length(n_samples) + 1), x.device)
        done = 0
        while done < n_samples:
            k = min(chunk_size, n_samples - done)
            sums.add(log_importance_weights(model, x, k, posterior=q).double())     # (k, B)
            done += k
    log_k = math.log(n_samples)
    log_p = sums.lse - log_k
    elbo = sums.sum_log_w / n_samples
    rel_var = torch.expm1((sums.lse_sq - log_k) - 2 * log_p).clamp_min(0)          # Var(w) / E[w]²
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return LikelihoodEstimate(log_p.to(dtype), elbo.to(dtype), (log_p - elbo).to(dtype),
                              (rel_var / n_samples).sqrt().to(dtype), n_samples,
                              pareto_k(sums.top, n_samples).to(dtype),
                              effective_sample_size(sums.lse, sums.lse_sq).detach().to(dtype))


@dataclass
class _WeightSums:
    """Running log Σ w, log Σ w², Σ log w (B,) and the ``keep`` largest log w (keep, B) over chunks of draws."""

    lse: Tensor
    lse_sq: Tensor
    sum_log_w: Tensor
    top: Tensor
    keep: int

    @classmethod
    def empty(cls, batch: int, keep: int, device: torch.device) -> _WeightSums:
        minus_inf = torch.full((batch,), -math.inf, dtype=torch.float64, device=device)
        return cls(minus_inf, minus_inf, torch.zeros_like(minus_inf),
                   torch.empty((0, batch), dtype=torch.float64, device=device), keep)

    def add(self, log_w: Tensor) -> None:
        """Fold in one chunk's log-weights (k, B)."""
        self.lse = torch.logaddexp(self.lse, torch.logsumexp(log_w, 0))
        self.lse_sq = torch.logaddexp(self.lse_sq, torch.logsumexp(2 * log_w, 0))
        self.sum_log_w = self.sum_log_w + log_w.sum(0)
        both = torch.cat([self.top, log_w.detach()])
        self.top = both.topk(min(self.keep, both.shape[0]), dim=0).values


def log_likelihood(model, x: Tensor, *, n_samples: int = 5000, chunk_size: int | None = None,
                   y: Any = None) -> Tensor:
    """log p̂(x) (log p̂(x|y) given labels y) with ``n_samples`` importance samples, shape (B,): an alias of
    ``estimate_log_likelihood(...).log_likelihood`` (the same draws, the same answer for the same seed)."""
    return estimate_log_likelihood(model, x, n_samples=n_samples, chunk_size=chunk_size, y=y).log_likelihood


def iwae_bound(model: LatentModel, x: Tensor, *, n_samples: int, y: Any = None, requires_grad: bool = False) -> Tensor:
    """L_K(x) = log (1/K) Σ_k w_k for one set of K = ``n_samples`` draws (an unbiased estimate of the bound
    of Burda et al. 2016), shape (B,): an alias of ``estimate_log_likelihood(...).log_likelihood`` (the same
    draws, the same answer for the same seed), under ``torch.no_grad`` unless ``requires_grad``. To train
    on the bound, use the objective :class:`vaekit.inference.objectives.IWAE`."""
    return estimate_log_likelihood(model, x, n_samples=n_samples, y=y, requires_grad=requires_grad).log_likelihood


def posterior_gap(model, x: Tensor, *, n_samples: int = 5000, chunk_size: int | None = None,
                  y: Any = None) -> Tensor:
    """Estimate of KL(q_x(z) || p(z|x)) = log p(x) - ELBO(x), shape (B,) (labels ``y``: of q(z|x, y)): an
    alias of ``estimate_log_likelihood(...).posterior_gap``."""
    return estimate_log_likelihood(model, x, n_samples=n_samples, chunk_size=chunk_size, y=y).posterior_gap


@torch.no_grad()
def kl_per_dimension(model, x: Tensor, *, y: Any = None) -> Tensor:
    """KL(q_x(z_i) || p(z_i)) of each latent dimension's marginal against the model's prior, shape
    (B, K); against N(0, 1): ½ (μ_i² + σ_i² - 1 - log σ_i²). For a diagonal posterior these sum to
    KL(q_x(z) || p(z)); for a full covariance to at most that (the marginals drop the correlations).
    A posterior or prior without a per-dimension KL is a ConfigError. ``y``: labels, for a conditional model."""
    check_batch(model, x)
    model = with_labels(model, y)
    with evaluation_mode(model):
        q, prior = model.encode(x), model.prior()
    try:
        return _kl_per_dimension(q, prior)
    except NotImplementedError as exc:
        raise ConfigError(f"kl_per_dimension: {exc}") from None


@dataclass(frozen=True)
class ActiveUnits:
    """``count`` latent dimensions with Cov_x(E_q[z_i]) > ``threshold``; ``variances`` has shape (K,)."""

    count: int
    variances: Tensor
    threshold: float


@torch.no_grad()
def active_units(model, batches: Iterable[Tensor] | Iterable[tuple[Tensor, Any]], *,
                 threshold: float = 0.01) -> ActiveUnits:
    """Active units (Burda et al. 2016): A_u = Cov_x(E_{q_x(z)}[z_u]) > threshold, over all x in
    ``batches`` (an iterable of (B, *data_shape) tensors, or of (x, y) pairs for a conditional model,
    E_q[z] then of q(z|x, y); the variance is the population one)."""
    n = 0
    total: Tensor | None = None
    total_sq: Tensor | None = None
    for batch in batches:
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        check_batch(model, x)
        with evaluation_mode(model):
            mean = with_labels(model, y).summary(x).double()           # (B, K)
        s, s2 = mean.sum(0), (mean**2).sum(0)
        total = s if total is None else total + s
        total_sq = s2 if total_sq is None else total_sq + s2
        n += mean.shape[0]
    if n < 2 or total is None or total_sq is None:  # n >= 2 means both sums were taken
        raise ConfigError(f"active_units: needs at least 2 examples, got {n}")
    variances = (total_sq / n - (total / n) ** 2).clamp_min(0)
    return ActiveUnits(int((variances > threshold).sum()), variances.float(), threshold)


def bits_per_dim(log_likelihood: Tensor, dim: int, *, levels: int = 256) -> Tensor:
    """Bits per dimension of discrete data modelled by a density on dequantised values.

    Convention (Theis et al. 2016; uniform dequantisation): an integer level k in {0, …, L-1}
    becomes y = (k + u) / L with u ~ U[0, 1), so y lies in [0, 1)^D and a density p on it gives
    log P(k) >= E_u[log p(y)] - D log L. Then

        bits/dim = -(log p(y) - D log L) / (D log 2),

    with ``log_likelihood`` = log p(y) in nats per example and ``levels`` = L (256 for 8-bit).
    """
    if dim <= 0 or levels < 2:
        raise ConfigError(f"bits_per_dim: needs dim > 0 and levels >= 2, got dim={dim}, levels={levels}")
    return -(log_likelihood - dim * math.log(levels)) / (dim * math.log(2))


def level_bits_per_dim(log_probability: Tensor, dim: int) -> Tensor:
    """Bits per dimension of discrete data under a model of their exact probabilities (a discretized
    likelihood): bits/dim = -log P(x) / (D log 2), ``log_probability`` = log P(x) in nats per example.
    No dequantisation term: P is already a probability of the integer levels."""
    if dim <= 0:
        raise ConfigError(f"level_bits_per_dim: needs dim > 0, got dim={dim}")
    return -log_probability / (dim * math.log(2))
