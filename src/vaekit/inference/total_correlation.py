"""The β-TC-VAE decomposition of the ELBO's KL term (Chen et al. 2018), estimated on a minibatch.

With q(z) = E_{p(x)}[q_x(z)] the aggregate posterior and q(z_d) its marginals, the expected KL splits
into three terms:

    E_x KL(q_x(z) || p(z)) = I_q(x; z)                       index-code mutual information
                             + KL(q(z) || Π_d q(z_d))        total correlation
                             + Σ_d KL(q(z_d) || p(z_d))      dimension-wise KL   (p factorised)

Per example i with one draw z_i ~ q_{x_i}(z), the terms are estimated as

    MI_i  = log q(z_i|x_i) - log q̂(z_i),   TC_i = log q̂(z_i) - Σ_d log q̂(z_id),
    DKL_i = Σ_d log q̂(z_id) - log p(z_i),

whose sum is exactly log q(z_i|x_i) - log p(z_i), the ELBO's one-draw KL estimate. q̂ estimates
the aggregate density from the minibatch x_1..x_B, q̂(z) = Σ_j a_ij q(z|x_j):

* ``mws`` (minibatch-weighted sampling): a_ij = 1/B, the minibatch mean. Chen et al. write
  log(1/(N B)) Σ_j q(z|x_j) with N the dataset size; the extra -log N shifts the estimates of
  MI, TC and DKL by the constants log N, -(D-1) log N and D log N and changes no gradient, so
  vaekit leaves it out, and the estimates converge to the terms' values as B grows.
* ``mss`` (minibatch-stratified sampling): a_ii = 1/N for the example's own x_i, a_ij =
  (N-1)/(N(B-1)) for the B-1 others, an unbiased estimate of q(z_i) = (1/N) Σ_n q(z_i|x_n) when
  the others are drawn without replacement from the other N-1 examples.

Both are consistent but biased (the log of an estimate); the bias shrinks as B grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.errors import ConfigError
from vaekit.prob.distributions import marginal_moments

__all__ = ["ESTIMATORS", "TCDecomposition", "tc_decomposition"]

ESTIMATORS = ("mws", "mss")


@dataclass(frozen=True)
class TCDecomposition:
    """The per-example log-densities of the decomposition, each (B,): log q(z_i|x_i), the estimates
    log q̂(z_i) and Σ_d log q̂(z_id), and log p(z_i)."""

    log_q_given_x: Tensor
    log_q_aggregate: Tensor
    log_q_marginals: Tensor
    log_p: Tensor

    @property
    def mutual_information(self) -> Tensor:
        """log q(z|x) - log q̂(z), (B,)."""
        return self.log_q_given_x - self.log_q_aggregate

    @property
    def total_correlation(self) -> Tensor:
        """log q̂(z) - Σ_d log q̂(z_d), (B,)."""
        return self.log_q_aggregate - self.log_q_marginals

    @property
    def dimension_kl(self) -> Tensor:
        """Σ_d log q̂(z_d) - log p(z), (B,)."""
        return self.log_q_marginals - self.log_p


def _log_mixture_weights(batch: int, estimator: str, dataset_size: int | None, like: Tensor) -> Tensor:
    """log a_ij, (B, B)."""
    if estimator == "mws":
        return torch.full((batch, batch), -math.log(batch), dtype=like.dtype, device=like.device)
    if dataset_size is None or dataset_size < batch or batch < 2:
        raise ConfigError(f"estimator mss: needs a batch of >= 2 examples and dataset_size >= the batch, got batch "
                          f"{batch}, dataset_size {dataset_size}")
    n = float(dataset_size)
    other = math.log((n - 1) / (n * (batch - 1)))
    weights = torch.full((batch, batch), other, dtype=like.dtype, device=like.device)
    weights.fill_diagonal_(-math.log(n))
    return weights


def _log_marginals(moments: tuple[Tensor, Tensor], z: Tensor) -> Tensor:
    """log N(z_d; m_d, v_d) per dimension, broadcast over the leading dimensions of z and the moments."""
    mean, var = moments
    return -0.5 * ((z - mean) ** 2 / var + torch.log(2 * math.pi * var))


def tc_decomposition(q: Distribution, z: Tensor, prior: Distribution, *, estimator: str = "mws",
                     dataset_size: int | None = None) -> TCDecomposition:
    """The decomposition for a Gaussian q over vectors (batch (B,), event (D,); diagonal or full covariance,
    whose 1-D marginals q(z_d|x) are Gaussian), one draw per example ``z`` (B, D) (z_i from q_{x_i}) and a
    Gaussian ``prior`` whose dimension-wise term uses its marginals p(z_d) (the decomposition assumes p
    factorises, as N(0, I) does). ``dataset_size`` N: for ``mss``."""
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator: unknown {estimator!r}; choose one of {list(ESTIMATORS)}")
    try:
        q_moments = tuple(m.unsqueeze(0) for m in marginal_moments(q))                  # (1, B_j, D) each
        p_moments = marginal_moments(prior)
    except NotImplementedError as exc:
        raise ConfigError(f"objective btcvae: needs a Gaussian posterior and prior ({exc})") from None
    batch = z.shape[0]
    joint = q.log_prob(z.unsqueeze(1))                                                  # (B_i, B_j): log q(z_i|x_j)
    per_dim = _log_marginals((q_moments[0], q_moments[1]), z.unsqueeze(1))              # (B_i, B_j, D)
    log_a = _log_mixture_weights(batch, estimator, dataset_size, per_dim)               # (B_i, B_j)
    log_q_aggregate = torch.logsumexp(joint + log_a, 1)                                 # (B,)
    log_q_marginals = torch.logsumexp(per_dim + log_a.unsqueeze(-1), 1).sum(-1)         # (B,)
    log_p = _log_marginals(p_moments, z).sum(-1)                                        # (B,)
    return TCDecomposition(torch.diagonal(joint), log_q_aggregate, log_q_marginals, log_p)
