"""Encoders q_x(z) = N(g(x), h(x)): a trunk shared by g and h, then two linear heads.

* ``covariance="diagonal"``: h(x) = diag(exp(s(x))), s(x) the log-variance head (soft-clamped to
  [-20, 12], :mod:`vaekit.prob.bounds`); q is a :class:`~vaekit.prob.distributions.DiagonalNormal`.
* ``covariance="full"``: h(x) = L(x) L(x)ᵀ with L lower-triangular, its diagonal exp(s(x)/2) > 0
  and its strictly-lower part a free head; q is a ``MultivariateNormal`` with ``scale_tril=L``.

The trunk is any ``nn.Module`` mapping x of shape (B, *data_shape) to features (B, trunk_dim):
:class:`~vaekit.models.networks.MLP` for the built-in networks, :class:`~vaekit.models.networks.Flatten` for the
linear (pPCA) case, or a module of the user's own (e.g. a convolutional network).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal

from vaekit.errors import ConfigError, ShapeError
from vaekit.ops.linear import Linear
from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp
from vaekit.prob.distributions import DiagonalNormal

__all__ = ["GaussianEncoder", "COVARIANCES"]

COVARIANCES = ("diagonal", "full")


class GaussianEncoder(nn.Module):
    """x (B, *data_shape) ↦ q_x(z) = N(g(x), h(x)) with batch shape (B,), event shape (latent_dim,)."""

    _rows: Tensor
    _cols: Tensor

    def __init__(self, trunk: nn.Module, trunk_dim: int, latent_dim: int, data_shape: Sequence[int],
                 covariance: str = "diagonal"):
        super().__init__()
        if covariance not in COVARIANCES:
            raise ConfigError(f"posterior covariance: unknown {covariance!r}; choose one of {list(COVARIANCES)}")
        if latent_dim <= 0 or trunk_dim <= 0:
            raise ConfigError(f"GaussianEncoder: latent_dim and trunk_dim must be positive, "
                              f"got {latent_dim}, {trunk_dim}")
        self.trunk = trunk
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim = int(latent_dim)
        self.covariance = covariance
        self.mean = Linear(trunk_dim, latent_dim)      # g
        self.log_var = Linear(trunk_dim, latent_dim)   # log of the diagonal of h
        if covariance == "full":
            with warnings.catch_warnings():   # latent_dim 1: an empty head, which torch warns about initialising
                warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
                self.off_diagonal = Linear(trunk_dim, latent_dim * (latent_dim - 1) // 2)
            rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
            self.register_buffer("_rows", rows, persistent=False)
            self.register_buffer("_cols", cols, persistent=False)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """z = g(x) + L(x) ε with ε ~ N(0, I_K): one example's ε has shape (latent_dim,)."""
        return (self.latent_dim,)

    def features(self, x: Tensor) -> Tensor:
        """The trunk's output for x (B, *data_shape), shape-checked: (B, trunk_dim)."""
        if x.ndim != len(self.data_shape) + 1 or tuple(x.shape[1:]) != self.data_shape:
            raise ShapeError(f"encoder input of shape {tuple(x.shape)} does not match (batch, *{self.data_shape})")
        return self.trunk(x)

    def forward(self, x: Tensor) -> Distribution:
        return self.heads(self.features(x))

    def heads(self, hidden: Tensor) -> Distribution:
        """q_x(z) from the trunk's features (B, trunk_dim): the heads g, h (an encoder built on this one,
        e.g. a flow's base q0, :mod:`vaekit.models.iaf`, calls them on features it also uses)."""
        mean = self.mean(hidden)                                           # (B, K)
        log_var = soft_clamp(self.log_var(hidden), ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX)
        if self.covariance == "diagonal":
            return DiagonalNormal(mean, torch.exp(0.5 * log_var))
        tril = torch.diag_embed(torch.exp(0.5 * log_var))                  # (B, K, K)
        lower = torch.zeros_like(tril)
        lower[:, self._rows, self._cols] = self.off_diagonal(hidden)      # strictly lower part
        tril = tril + lower
        return MultivariateNormal(mean, scale_tril=tril, validate_args=False)
