"""Smooth bounds for log-variances, so that variances can neither underflow to 0 nor overflow.

``soft_clamp(t, lo, hi)`` squashes t smoothly into ``(lo, hi)`` (the soft clip of Rybkin et al. 2021,
applied on both sides), so gradients never vanish the way they do under a hard ``clamp``:

    lower(t) = lo + softplus(t - lo),        soft_clamp(t) = hi - softplus(hi - lower(t)).

What holds (softplus(u) = u + log(1 + e^-u) and log(1 + v) <= v): the deviation from the identity is

    -e^(t - hi) · exp(e^(lo - t))  <=  soft_clamp(t) - t  <=  e^(lo - t),

about e^(lo - t) - e^(t - hi): below 1e-3 only where t is more than 6.9 inside both bounds, below 1e-8
more than 18.4 inside, an interval that is empty for both ranges below (each is 32 wide). So a
log-variance is never the raw network output exactly: the encoder's at t = 0 (a variance of 1) is
off by 6.1e-6, at t = -15 by 6.7e-3; the decoder's log c at -13.6 by 0.09. Nothing
depends on the identity: the variance used is always exp(soft_clamp(t)), in training and in every
reported number, and the bound only compresses the scale near the edges (any c in the range is
reached by some t). The decoder's lower edge, c = 1.1e-7, lies below the variance of uniform
dequantisation noise of 8-bit images, (1/256)²/12 = 1.3e-6, the smallest c a per-pixel decoder of
dequantised images needs.

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
