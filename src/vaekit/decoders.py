"""Decoders p(x|z): a network f from z (…, latent_dim) to one example's shape, and a likelihood.

* :class:`GaussianDecoder`  — p(x|z) = N(f(z), cI), c given by a :class:`~vaekit.variance.DecoderVariance`.
* :class:`BernoulliDecoder` — p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d)), for binary data.

f is any ``nn.Module`` whose output has ``prod(data_shape)`` trailing features (reshaped to
``data_shape``) or already ends with ``data_shape``; other shapes raise a ShapeError naming both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torch.distributions import Distribution

from .distributions import DiagonalNormal, ProfiledNormal, bernoulli
from .errors import ShapeError
from .variance import DecoderVariance, OptimalVariance

__all__ = ["Decoder", "GaussianDecoder", "BernoulliDecoder"]


class Decoder(nn.Module):
    """z (*lead, latent_dim) ↦ p(x|z) with batch shape ``lead`` and event shape ``data_shape``."""

    def __init__(self, f: nn.Module, latent_dim: int, data_shape: Sequence[int]):
        super().__init__()
        self.f = f
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(s) for s in data_shape)

    def mean_of(self, z: Tensor) -> Tensor:
        """f(z) reshaped to (*lead, *data_shape)."""
        if z.shape[-1] != self.latent_dim:
            raise ShapeError(f"decoder input of shape {tuple(z.shape)} does not end with latent_dim {self.latent_dim}")
        out = self.f(z)
        lead = tuple(z.shape[:-1])
        if tuple(out.shape) == lead + self.data_shape:
            return out
        if tuple(out.shape) == lead + (math.prod(self.data_shape),):
            return out.reshape(lead + self.data_shape)
        raise ShapeError(f"decoder network output of shape {tuple(out.shape)} does not match "
                         f"{lead + self.data_shape} (latent batch {lead} + data shape {self.data_shape})")


class GaussianDecoder(Decoder):
    """p(x|z) = N(f(z), cI); c from ``variance`` (fixed, learned or optimal)."""

    def __init__(self, f: nn.Module, latent_dim: int, data_shape: Sequence[int], variance: DecoderVariance):
        super().__init__(f, latent_dim, data_shape)
        self.variance = variance
        c_shape = tuple(variance().shape)
        if c_shape not in ((), self.data_shape):
            raise ShapeError(f"decoder variance of shape {c_shape} is neither a scalar nor the data shape {self.data_shape}")

    def forward(self, z: Tensor) -> Distribution:
        mean = self.mean_of(z)
        scale = self.variance().sqrt().to(mean.dtype)
        if isinstance(self.variance, OptimalVariance) and self.training:
            return ProfiledNormal(mean, scale, len(self.data_shape), on_estimate=self.variance.update)
        return DiagonalNormal(mean, scale, len(self.data_shape))


class BernoulliDecoder(Decoder):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d)); f(z) are the logits."""

    def forward(self, z: Tensor) -> Distribution:
        return bernoulli(self.mean_of(z), len(self.data_shape))
