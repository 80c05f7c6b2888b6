"""The decoder's variance c in p(x|z) = N(f(z), cI): the constant that sets the balance between
reconstruction and regularisation.

* :class:`FixedVariance`   — c is a constant the user chooses (the seed's c > 0).
* :class:`LearnedVariance` — c is a parameter: one shared scalar or one per output dimension,
  stored as a log-variance and soft-clamped into [exp(-16), exp(16)] (see :mod:`vaekit.prob.bounds`).
* :class:`OptimalVariance` — c is profiled out: in training each batch uses its maximiser
  c* = mean squared error (σ-VAE); a running average of c* is kept for evaluation and sampling.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaekit.errors import ConfigError
from vaekit.prob.bounds import DECODER_LOG_VAR_MAX, DECODER_LOG_VAR_MIN, soft_clamp, soft_clamp_inverse

__all__ = ["DecoderVariance", "FixedVariance", "LearnedVariance", "OptimalVariance", "VARIANCE_MODES",
           "parse_variance", "build_variance"]

#: Decoder variance modes besides a fixed positive number.
VARIANCE_MODES = ("learned", "learned-per-dim", "optimal")
#: The range of a fixed c: beyond it float32 loses c or 1/c (1e308 is infinite in float32), and no data
#: has a noise variance of 1e-12 or 1e12 of its units (standardise the data instead).
C_RANGE = (1e-12, 1e12)


def _check_positive(c: float, name: str = "decoder variance c") -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
        raise ConfigError(f"{name}: must be a finite number > 0, got {c!r}")
    return float(c)


class DecoderVariance(nn.Module):
    """Interface: ``forward()`` returns c, a tensor broadcastable to one example's shape."""

    def forward(self) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class FixedVariance(DecoderVariance):
    """A constant c > 0."""

    c: Tensor

    def __init__(self, c: float):
        super().__init__()
        self.register_buffer("c", torch.tensor(_check_positive(c)))

    def forward(self) -> Tensor:
        return self.c

    def extra_repr(self) -> str:
        return f"c={self.c.item():g}"


class LearnedVariance(DecoderVariance):
    """A learned c: shape ``()`` (one shared scalar) or the data shape (one per dimension).

    c = exp(soft_clamp(log_c, -16, 16)).
    """

    def __init__(self, shape: tuple[int, ...] = (), init: float = 1.0):
        super().__init__()
        start = torch.tensor(math.log(_check_positive(init, "initial c")), device="cpu")   # float32, as c is
        raw = soft_clamp_inverse(start, DECODER_LOG_VAR_MIN, DECODER_LOG_VAR_MAX)      # checked on the CPU, so
        self.log_c = nn.Parameter(torch.full(shape, float(raw)))                        # a meta build works too

    def forward(self) -> Tensor:
        return soft_clamp(self.log_c, DECODER_LOG_VAR_MIN, DECODER_LOG_VAR_MAX).exp()


class OptimalVariance(DecoderVariance):
    """c profiled out per batch (c* = mean squared error); ``forward()`` returns the running
    average of c*, an exponential moving average with weight ``momentum`` on each new batch."""

    running_c: Tensor
    num_updates: Tensor

    def __init__(self, init: float = 1.0, momentum: float = 0.1):
        super().__init__()
        if not 0 < momentum <= 1:
            raise ConfigError(f"OptimalVariance momentum: must lie in (0, 1], got {momentum!r}")
        self.momentum = momentum
        self.register_buffer("running_c", torch.tensor(_check_positive(init, "initial c")))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    def forward(self) -> Tensor:
        return self.running_c

    @torch.no_grad()
    def update(self, c_star: Tensor) -> None:
        """Fold one batch's maximiser c* into the running estimate (first batch: replace)."""
        weight = torch.where(self.num_updates > 0, self.momentum, 1.0)
        self.running_c.lerp_(c_star.to(self.running_c.dtype), weight.to(self.running_c.dtype))
        self.num_updates += 1


def parse_variance(value: object, name: str = "decoder_variance") -> float | str:
    """The one parser of the decoder variance c: a finite number > 0 (or its text), or one of
    :data:`VARIANCE_MODES`; anything else is a ConfigError naming ``name``."""
    if isinstance(value, str):
        if value in VARIANCE_MODES:
            return value
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number > 0 or one of {list(VARIANCE_MODES)}, "
                              f"got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: the constant c must be a finite number > 0, got {value!r}")
    if not C_RANGE[0] <= value <= C_RANGE[1]:
        raise ConfigError(f"{name}: the constant c must lie in [{C_RANGE[0]:g}, {C_RANGE[1]:g}], got {value!r}")
    return float(value)


def build_variance(spec: float | str, data_shape: tuple[int, ...], init: float = 1.0) -> DecoderVariance:
    """The :class:`DecoderVariance` a parsed spec names: fixed c, ``learned`` (one scalar),
    ``learned-per-dim`` (one per data dimension) or ``optimal`` (c* profiled out)."""
    spec = parse_variance(spec)
    if spec == "learned":
        return LearnedVariance((), init=init)
    if spec == "learned-per-dim":
        return LearnedVariance(tuple(data_shape), init=init)
    if spec == "optimal":
        return OptimalVariance(init=init)
    assert isinstance(spec, float)
    return FixedVariance(spec)
