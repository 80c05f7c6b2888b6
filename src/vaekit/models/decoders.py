"""Decoders p(x|z): a network f from z to one example's shape, and a likelihood given f(z).

* :class:`Decoder`          — any f and any :class:`~vaekit.models.likelihoods.Likelihood`;
* :class:`GaussianDecoder`  — p(x|z) = N(f(z), cI), c given by a :class:`~vaekit.models.variance.DecoderVariance`;
* :class:`BernoulliDecoder` — p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d)), for binary data.

f is any ``nn.Module``. It is called on the latents with their leading dimensions flattened,
z (N, latent_dim), so an ordinary network (a transposed convolution, say) works unchanged; its
output must be (N, *data_shape) or (N, prod(data_shape)); other shapes raise a ShapeError naming both.
A likelihood with P = ``params_per_dim`` > 1 values per data dimension (a discretized logistic mixture,
say) needs P times as many: (N, P, *data_shape), (N, P·C, *rest) for data_shape (C, *rest) (a
convolution with P·C output channels, parameter-major: channels [p·C, (p+1)·C) hold parameter p), or
(N, P·prod(data_shape)), all read in that order as (N, P, *data_shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ShapeError
from vaekit.models.likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood
from vaekit.models.variance import DecoderVariance
from vaekit.prob.distributions import Reduction

__all__ = ["Decoder", "GaussianDecoder", "BernoulliDecoder"]


class Decoder(nn.Module):
    """z (*lead, latent_dim) ↦ p(x|z) with batch shape ``lead`` and event shape ``data_shape``."""

    def __init__(self, f: nn.Module, latent_dim: int, data_shape: Sequence[int], likelihood: Likelihood):
        super().__init__()
        self.f = f
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.likelihood = likelihood
        self._register_load_state_dict_pre_hook(_rename_version1_keys)

    def mean_of(self, z: Tensor) -> Tensor:
        """f(z) for z (*lead, latent_dim), computed on z (N, latent_dim), as (*lead, *data_shape), or as
        (*lead, P, *data_shape) for a likelihood with P = ``params_per_dim`` > 1 (module docstring)."""
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"decoder input of shape {tuple(z.shape)} does not end with latent_dim {self.latent_dim}")
        lead = tuple(z.shape[:-1])
        out = self.f(z.reshape(-1, self.latent_dim))                      # (N, *data_shape) or (N, D), times P
        n, p = math.prod(lead), int(getattr(self.likelihood, "params_per_dim", 1))
        shape = self.data_shape if p == 1 else (p, *self.data_shape)
        accepted = [(n, *shape), (n, math.prod(shape))]
        if p > 1:
            accepted.append((n, p * self.data_shape[0], *self.data_shape[1:]))
        if tuple(out.shape) in accepted:
            return out.reshape(lead + shape)
        what = "" if p == 1 else f" ({p} values per data dimension for the {type(self.likelihood).__name__})"
        raise ShapeError(f"decoder network output of shape {tuple(out.shape)} does not match "
                         f"{(n, *shape)} (flattened latent batch {n} + data shape {self.data_shape}{what})")

    def forward(self, z: Tensor, *, reduce: Reduction | None = None) -> Distribution:
        return self.likelihood.distribution(self.mean_of(z), len(self.data_shape), reduce=reduce)

    @property
    def variance(self) -> DecoderVariance:
        """The variance c of a Gaussian likelihood (an AttributeError for the others)."""
        if not isinstance(self.likelihood, GaussianLikelihood):
            raise AttributeError(f"a decoder with a {type(self.likelihood).__name__} has no variance c")
        return self.likelihood.variance


def _rename_version1_keys(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Weights written before the likelihood objects (vaekit 0.1, config format 1) kept the decoder
    variance at ``decoder.variance.*``; it now lives at ``decoder.likelihood.variance.*``."""
    old = prefix + "variance."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict.setdefault(prefix + "likelihood." + key[len(prefix):], state_dict.pop(key))


class GaussianDecoder(Decoder):
    """p(x|z) = N(f(z), cI); c from ``variance`` (fixed, learned or optimal)."""

    def __init__(self, f: nn.Module, latent_dim: int, data_shape: Sequence[int], variance: DecoderVariance):
        shape = tuple(int(s) for s in data_shape)
        super().__init__(f, latent_dim, shape, GaussianLikelihood(variance, shape))


class BernoulliDecoder(Decoder):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d)); f(z) are the logits."""

    def __init__(self, f: nn.Module, latent_dim: int, data_shape: Sequence[int]):
        super().__init__(f, latent_dim, data_shape, BernoulliLikelihood())
