"""Bounds on log p(x) from log importance weights, and the DReG reweighting of their gradient.

Every function here takes log w_k = log p(x, z_k) - log q_x(z_k) for K draws z_k ~ q_x(z), shape
(K, B), and returns one value per example, shape (B,). With w_k the weights and M groups of K draws
(K·M draws in all, draw m·K + k the k-th of group m):

    IWAE      L_K        = log (1/K) Σ_k w_k                                   (Burda et al. 2016)
    MIWAE     L_{M,K}    = (1/M) Σ_m log (1/K) Σ_k w_{m,k}                    (Rainforth et al. 2018)
    CIWAE     L_β        = β · (1/K) Σ_k log w_k + (1 - β) · L_K              (Rainforth et al. 2018)
    Rényi     L_{α,K}    = 1/(1-α) · log (1/K) Σ_k w_k^{1-α}   (α ≠ 1),  (1/K) Σ_k log w_k (α = 1)
                                                                            (Li & Turner 2016)

Each is the estimate from one set of draws; its expectation is the bound. All are lower bounds on
log p(x) (the Rényi bound for α >= 0: α = 0 is L_K, α → 1 the ELBO; for α < 0 its expectation can
exceed log p(x)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaekit.errors import ShapeError

__all__ = ["iwae_value", "miwae_value", "ciwae_value", "renyi_value", "reweight_path_gradient"]


def _grouped(log_w: Tensor, groups: int) -> Tensor:
    """log w (M·K, B) as (M, K, B), draw m·K + k at [m, k]."""
    if log_w.ndim != 2 or log_w.shape[0] % groups:
        raise ShapeError(f"log_w: expected (groups * K, batch) with groups {groups}, got {tuple(log_w.shape)}")
    return log_w.reshape(groups, log_w.shape[0] // groups, log_w.shape[1])


def iwae_value(log_w: Tensor) -> Tensor:
    """L_K = logsumexp_k log w_k - log K, (K, B) -> (B,)."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def miwae_value(log_w: Tensor, groups: int) -> Tensor:
    """L_{M,K} = mean over the M groups of each group's L_K, (M·K, B) -> (B,). M = 1 is L_K; K = 1
    (M = the number of draws) the ELBO estimate mean log w."""
    grouped = _grouped(log_w, groups)                                   # (M, K, B)
    return (torch.logsumexp(grouped, 1) - math.log(grouped.shape[1])).mean(0)


def ciwae_value(log_w: Tensor, beta: float) -> Tensor:
    """β · mean_k log w_k + (1 - β) · L_K, (K, B) -> (B,): β = 1 the ELBO estimate, β = 0 L_K."""
    return beta * log_w.mean(0) + (1.0 - beta) * iwae_value(log_w)


def renyi_value(log_w: Tensor, alpha: float) -> Tensor:
    """L_{α,K} = (logsumexp_k (1-α) log w_k - log K) / (1-α), (K, B) -> (B,); mean_k log w_k at α = 1
    (the limit). α = 0 is L_K."""
    if alpha == 1.0:
        return log_w.mean(0)
    return (torch.logsumexp((1.0 - alpha) * log_w, 0) - math.log(log_w.shape[0])) / (1.0 - alpha)


def reweight_path_gradient(z: Tensor, log_w: Tensor, groups: int = 1) -> None:
    """Make the gradient of L_{M,K} (:func:`miwae_value`; M = 1: L_K) that reaches the draws z the doubly
    reparameterised one (DReG, Tucker et al. 2019).

    With log w_k computed with q's parameters stopped in log q (the path derivative only,
    :func:`vaekit.prob.distributions.stop_gradient`), the gradient of L_K reaching z_k is
    w̃_k ∂ log w_k/∂z_k, w̃_k = w_k / Σ_j w_j (within z_k's group). DReG's estimator of the inference
    network's gradient is Σ_k w̃_k² ∂ log w_k/∂z_k ∂z_k/∂φ: this registers a hook on ``z`` (M·K, B, ...)
    that multiplies the gradient arriving at z_k by w̃_k (held constant). The generative network's
    gradient (through log p(x, z) directly, not through z) keeps the IWAE weights w̃_k. Nothing is
    registered when z does not require a gradient."""
    if not z.requires_grad:
        return
    grouped = _grouped(log_w.detach(), groups)                          # (M, K, B)
    weights = torch.softmax(grouped, 1).reshape(log_w.shape)             # (M·K, B): w̃ within each group
    if tuple(z.shape[:2]) != tuple(log_w.shape):
        raise ShapeError(f"z: expected draws of shape ({log_w.shape[0]}, {log_w.shape[1]}, ...), got "
                         f"{tuple(z.shape)}")
    scale = weights.reshape(*weights.shape, *([1] * (z.ndim - 2))).to(z.dtype)
    z.register_hook(lambda grad: grad * scale)
