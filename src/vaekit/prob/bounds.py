"""Smooth bounds for log-variances, so that variances can neither underflow to 0 nor overflow.

``soft_clamp(t, lo, hi)`` is the identity to within ``1e-8`` when ``lo + 20 < t < hi - 20`` and
bends smoothly into ``(lo, hi)`` near the edges (the soft clip of Rybkin et al. 2021, applied on
both sides), so gradients never vanish the way they do under a hard ``clamp``:

    lower(t) = lo + softplus(t - lo),        soft_clamp(t) = hi - softplus(hi - lower(t)).

The bounds used by the library (natural log of a variance):

* encoder log-variance, log h(x):  [ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX] = [-20, 12]
  (standard deviations between 4.5e-5 and 403);
* decoder log-variance, log c:     [DECODER_LOG_VAR_MIN, DECODER_LOG_VAR_MAX] = [-16, 16]
  (c between 1.1e-7 and 8.9e6).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import softplus

ENCODER_LOG_VAR_MIN = -20.0
ENCODER_LOG_VAR_MAX = 12.0
DECODER_LOG_VAR_MIN = -16.0
DECODER_LOG_VAR_MAX = 16.0


def _softplus_inverse(y: Tensor) -> Tensor:
    """Inverse of softplus, log(exp(y) - 1), computed stably for y > 0."""
    return y + torch.log(-torch.expm1(-y))


def soft_clamp(t: Tensor, lo: float, hi: float) -> Tensor:
    """Smoothly squash ``t`` into the open interval ``(lo, hi)``; identity far from the edges."""
    lower = lo + softplus(t - lo)
    return hi - softplus(hi - lower)


def soft_clamp_inverse(y: Tensor, lo: float, hi: float) -> Tensor:
    """The ``t`` with ``soft_clamp(t, lo, hi) == y``, for ``lo < y < hi``."""
    if bool(((y <= lo) | (y >= hi)).any()):
        raise ValueError(f"soft_clamp_inverse: values must lie in ({lo}, {hi}), got [{y.min()}, {y.max()}]")
    lower = hi - _softplus_inverse(hi - y)
    return lo + _softplus_inverse(lower - lo)
