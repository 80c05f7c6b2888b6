"""Discretized logistic distributions over the L integer levels of an image (PixelCNN++, Salimans et al.
2017; IAF, Kingma et al. 2016; VDVAE): exact probabilities of the levels, so bits/dim need no
dequantisation term.

Values live on the [0, 1] grid the preprocessing gives images: level k in {0, ..., L-1} is the value
x = k Δ with Δ = 1 / (L - 1) (PixelCNN++ uses [-1, 1]; the probabilities are the same, the location and
scale are in [0, 1] units). Level k owns the bin [x - Δ/2, x + Δ/2]; the first bin extends to -∞ and the
last to +∞, so the L probabilities sum to 1. With a logistic of location μ and scale s,

    a = (x - Δ/2 - μ) / s,   b = (x + Δ/2 - μ) / s,   P(k) = σ(b) - σ(a)
                                                          = σ(b) σ(-a) (1 - e^{-(b - a)}),

    log P(k) = log σ(b) + log σ(-a) + log(1 - e^{-Δ/s})       (0 < k < L-1),
    log P(0) = log σ(b),      log P(L-1) = log σ(-a) = -softplus(a).

The factorised form is exact and never takes a difference of two CDFs, so it does not underflow where
σ(b) - σ(a) does: PixelCNN++ falls back there to the mid-bin density, log pdf(x) + log Δ, an
approximation that this form makes unnecessary (the two agree wherever PixelCNN++ uses the CDF
difference). Every term is a log-sigmoid, softplus or log(-expm1) of finite arguments, so values and
gradients are finite at the edge levels and for locations far outside [0, 1].

* :class:`DiscretizedLogistic`        one logistic per data dimension;
* :class:`DiscretizedLogisticMixture` a mixture of K logistics per data dimension (channels independent).

``log_prob`` sums over the last ``event_ndims`` dimensions (one example), like every vaekit distribution.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints
from torch.nn.functional import logsigmoid

from vaekit.errors import ConfigError, DataError, ShapeError

__all__ = ["DiscretizedLogistic", "DiscretizedLogisticMixture", "level_log_prob", "levels_of", "check_bins",
           "MAX_BINS"]

#: The most levels a discretized likelihood models (8-bit images).
MAX_BINS = 256
#: Below this δ = Δ/s, log(1 - e^{-δ}) is taken as its series log δ - δ/2 + δ²/24 (error below δ⁴/2880 < 4e-16).
_SMALL_WIDTH = 1e-3


def check_bins(bins: object, name: str = "bins") -> int:
    """``bins`` as an integer L with 2 <= L <= :data:`MAX_BINS`, or a ConfigError naming ``name``."""
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= MAX_BINS:
        raise ConfigError(f"{name}: the number of levels must be an integer from 2 to {MAX_BINS}, got {bins!r}")
    return bins


def levels_of(value: Tensor, bins: int, *, validate: bool = True) -> Tensor:
    """The integer levels k = round(x (L - 1)) of values x on the [0, 1] grid (as floats, x's dtype).
    With ``validate``, values off the grid (more than 1e-3 of a level away) or outside [0, 1] are a DataError."""
    scaled = value * (bins - 1)
    k = torch.round(scaled)
    if validate and value.numel() and bool(((scaled - k).abs() > 1e-3).any() | (k < 0).any() | (k > bins - 1).any()):
        raise DataError(f"discretized likelihood: values must be levels k / {bins - 1}, k in 0..{bins - 1} (the "
                        f"{bins} levels of the images, neither dequantised nor binarised); found values off that grid")
    return k


def _log1mexp_neg(log_delta: Tensor) -> Tensor:
    """log(1 - e^{-δ}) for δ = e^{log_delta} > 0, stable for δ → 0 (log δ - δ/2 + δ²/24, which needs no δ > 0
    in floating point) and δ → ∞ (→ 0; past δ = e^30 the value, -e^{-δ}, is 0 in any float, and so its gradient)."""
    delta = torch.exp(log_delta.clamp(max=30.0))
    small = delta < _SMALL_WIDTH
    safe = torch.where(small, torch.ones_like(delta), delta)        # no inf/NaN gradient in the unused branch
    return torch.where(small, log_delta - 0.5 * delta + delta * delta / 24, torch.log(-torch.expm1(-safe)))


def level_log_prob(k: Tensor, loc: Tensor, log_scale: Tensor, bins: int) -> Tensor:
    """log P(K = k) of the discretized logistic(μ = ``loc``, s = e^``log_scale``) on L = ``bins`` levels,
    elementwise (the arguments broadcast; ``k`` holds integer levels as floats). See the module docstring:
    log σ(b) [k < L-1] + log σ(-a) [k > 0] + log(1 - e^{-Δ/s}) [0 < k < L-1]."""
    step = 1.0 / (bins - 1)
    inv_scale = torch.exp(-log_scale)
    # edges as (k ± ½) Δ - μ, so that level k's upper edge and level k+1's lower edge are the same number
    # in floating point too (the CDF values telescope and the L probabilities still sum to 1)
    upper = logsigmoid(((k + 0.5) * step - loc) * inv_scale)       # log σ(b): the CDF at the upper edge
    lower = logsigmoid(-((k - 0.5) * step - loc) * inv_scale)      # log σ(-a): 1 - the CDF at the lower edge
    width = _log1mexp_neg(math.log(step) - log_scale)
    first, last = k <= 0, k >= bins - 1
    zero = torch.zeros((), dtype=upper.dtype, device=upper.device)
    return (torch.where(last, zero, upper) + torch.where(first, zero, lower)
            + torch.where(first | last, zero, width))


def _discretized_mean(loc: Tensor, log_scale: Tensor, bins: int) -> Tensor:
    """E[X] = Δ Σ_{j=1}^{L-1} P(K >= j) = Δ Σ_j σ((μ - (j - ½)Δ) / s), exactly (the edges pile up the
    tails on levels 0 and L-1), elementwise; one pass over the L - 1 inner edges."""
    step = 1.0 / (bins - 1)
    inv_scale = torch.exp(-log_scale)
    total = torch.zeros(torch.broadcast_shapes(loc.shape, log_scale.shape), dtype=loc.dtype, device=loc.device)
    for j in range(1, bins):
        total = total + torch.sigmoid((loc - (j - 0.5) * step) * inv_scale)
    return total * step


def _logistic_mode(loc: Tensor, log_scale: Tensor, bins: int) -> Tensor:
    """argmax_k P(k) of a discretized logistic, as k Δ. The inner bins all have width Δ, and the mass a window
    of fixed width takes from a symmetric unimodal density falls with the distance of its centre from μ, so
    the best inner level is the one nearest μ, clamp(round(μ / Δ), 1, L-2); the edge levels 0 and L-1 hold
    the tails and may outweigh it (μ = 0.3, s = e^-2: P(0) = σ(-2.8) > P(77)). The mode is the most probable
    of these three candidates (ties: the lowest level, as argmax over all L levels gives)."""
    levels = bins - 1
    inner = torch.clamp(torch.round(loc * levels), min(1, levels), max(levels - 1, 0))
    candidates = torch.stack(torch.broadcast_tensors(torch.zeros_like(inner), inner,
                                                     torch.full_like(inner, levels)), -1)   # (..., 3), ascending
    log_p = level_log_prob(candidates, loc.unsqueeze(-1), log_scale.unsqueeze(-1), bins)
    return candidates.gather(-1, log_p.argmax(-1, keepdim=True)).squeeze(-1) / levels


def _sample_levels(loc: Tensor, log_scale: Tensor, bins: int) -> Tensor:
    """Values k Δ with k = clamp(round(y / Δ), 0, L-1), y = μ + s (log u - log(1 - u)), u ~ U[0, 1)."""
    u = torch.rand(loc.shape, dtype=loc.dtype, device=loc.device)
    y = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return torch.clamp(torch.round(y * (bins - 1)), 0, bins - 1) / (bins - 1)


class DiscretizedLogistic(Distribution):
    """prod_d P(k_d) over the last ``event_ndims`` dimensions, each a discretized logistic(loc_d, e^log_scale_d)
    on ``bins`` levels of [0, 1] (module docstring). ``loc`` and ``log_scale`` broadcast to batch + event shape.

    ``log_prob(x)`` = Σ_d log P(k_d), k_d = round(x_d (L - 1)); ``mean`` the exact mean of the levels,
    Δ Σ_k k P(k); ``sample`` draws levels (as values k Δ). No ``rsample``: the levels are discrete."""

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    has_rsample = False

    def __init__(self, loc: Tensor, log_scale: Tensor, bins: int, event_ndims: int,
                 validate_args: bool | None = None):
        self.bins = check_bins(bins)
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        shape = self.loc.shape
        if not 0 <= event_ndims <= len(shape):
            raise ShapeError(f"event_ndims {event_ndims} does not fit parameters of shape {tuple(shape)}")
        split = len(shape) - event_ndims
        super().__init__(shape[:split], shape[split:], validate_args=validate_args)

    def _levels(self, value: Tensor) -> Tensor:
        if tuple(value.shape[value.ndim - len(self.event_shape):]) != tuple(self.event_shape):
            raise ShapeError(f"log_prob: values of shape {tuple(value.shape)} do not end with the event shape "
                             f"{tuple(self.event_shape)}")
        return levels_of(value, self.bins, validate=bool(self._validate_args))

    def _sum_event(self, per_element: Tensor) -> Tensor:
        n = len(self.event_shape)
        return per_element.flatten(-n).sum(-1) if n else per_element

    def log_prob(self, value: Tensor) -> Tensor:
        return self._sum_event(level_log_prob(self._levels(value), self.loc, self.log_scale, self.bins))

    @property
    def mean(self) -> Tensor:
        return _discretized_mean(self.loc, self.log_scale, self.bins)

    @property
    def mode(self) -> Tensor:
        """The most probable level, argmax_k P(k), as a value k Δ (elementwise, no event sum)."""
        return _logistic_mode(self.loc, self.log_scale, self.bins)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        return _sample_levels(self.loc.expand(shape), self.log_scale.expand(shape), self.bins)


class DiscretizedLogisticMixture(Distribution):
    """prod_d Σ_j π_dj P_j(k_d): per data dimension a mixture of K discretized logistics, π = softmax(logits).
    ``logits``, ``loc``, ``log_scale`` have shape (*batch, *event, K) (they broadcast). The dimensions, RGB
    channels included, are independent given z (PixelCNN++ instead shares the component across a pixel's
    channels and makes the green and blue means linear in the red and green values; for greyscale images
    the two are the same).

    ``log_prob(x)`` = Σ_d logsumexp_j [log π_dj + log P_j(k_d)]; ``mean`` = Σ_j π_j E_j[X]; ``sample``
    picks a component j ~ π, then a level from it. K = 1 is :class:`DiscretizedLogistic`."""

    arg_constraints = {"logits": constraints.real_vector, "loc": constraints.real_vector,
                       "log_scale": constraints.real_vector}
    has_rsample = False

    def __init__(self, logits: Tensor, loc: Tensor, log_scale: Tensor, bins: int, event_ndims: int,
                 validate_args: bool | None = None):
        self.bins = check_bins(bins)
        self.logits, self.loc, self.log_scale = torch.broadcast_tensors(logits, loc, log_scale)
        shape = self.loc.shape[:-1]                                  # (*batch, *event); the last is K
        if self.loc.ndim < 1 or not 0 <= event_ndims <= len(shape):
            raise ShapeError(f"event_ndims {event_ndims} does not fit mixture parameters of shape "
                             f"{tuple(self.loc.shape)} (*batch, *event, K)")
        split = len(shape) - event_ndims
        super().__init__(shape[:split], shape[split:], validate_args=validate_args)

    @property
    def components(self) -> int:
        return int(self.loc.shape[-1])

    def log_prob(self, value: Tensor) -> Tensor:
        if tuple(value.shape[value.ndim - len(self.event_shape):]) != tuple(self.event_shape):
            raise ShapeError(f"log_prob: values of shape {tuple(value.shape)} do not end with the event shape "
                             f"{tuple(self.event_shape)}")
        k = levels_of(value, self.bins, validate=bool(self._validate_args)).unsqueeze(-1)   # (..., *event, 1)
        log_weights = torch.log_softmax(self.logits, -1)
        per_element = torch.logsumexp(log_weights + level_log_prob(k, self.loc, self.log_scale, self.bins), -1)
        n = len(self.event_shape)
        return per_element.flatten(-n).sum(-1) if n else per_element

    @property
    def mean(self) -> Tensor:
        weights = torch.softmax(self.logits, -1)
        return (weights * _discretized_mean(self.loc, self.log_scale, self.bins)).sum(-1)

    @property
    def mode(self) -> Tensor:
        """The most probable level, argmax_k Σ_j π_j P_j(k), as a value k Δ (elementwise, no event sum): the
        mixture of levels need not be unimodal, so every level is scored, one at a time (memory of one level's
        (*batch, *event, K) terms; ties: the lowest level)."""
        log_weights = torch.log_softmax(self.logits, -1)
        best_k = torch.zeros(self.loc.shape[:-1], dtype=self.loc.dtype, device=self.loc.device)
        best = torch.full_like(best_k, -math.inf)
        for k in range(self.bins):
            level = torch.full((), float(k), dtype=self.loc.dtype, device=self.loc.device)
            log_p = torch.logsumexp(log_weights + level_log_prob(level, self.loc, self.log_scale, self.bins), -1)
            better = log_p > best
            best, best_k = torch.where(better, log_p, best), torch.where(better, level, best_k)
        return best_k / (self.bins - 1)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        logits = self.logits.expand(*shape, self.components)
        j = Categorical(logits=logits, validate_args=False).sample().unsqueeze(-1)          # (*shape, 1)
        loc = self.loc.expand(*shape, self.components).gather(-1, j).squeeze(-1)
        log_scale = self.log_scale.expand(*shape, self.components).gather(-1, j).squeeze(-1)
        return _sample_levels(loc, log_scale, self.bins)
