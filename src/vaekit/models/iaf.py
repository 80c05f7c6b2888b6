"""The inverse autoregressive flow posterior (Kingma et al. 2016, "Improved Variational Inference with
Inverse Autoregressive Flow"), the ``iaf`` entry of :data:`vaekit.models.posteriors.POSTERIORS`.

The encoder's trunk gives features e(x); linear heads give the diagonal Gaussian q0(z0|x) = N(μ(x), diag σ²(x))
(the heads of :class:`~vaekit.models.encoders.GaussianEncoder`) and, with ``context`` > 0, a context vector
h(x) (width ``context``). Then T = ``steps`` affine autoregressive steps, for t = 1..T:

    z_t = m_t(z_{t−1}, h) + exp(a_t(z_{t−1}, h)) ⊙ z_{t−1},      log|det ∂z_t/∂z_{t−1}| = Σ_i a_t,i

(eq. 10 of the paper with σ_t = exp(a_t)), where (m_t, a_t)_i depends on (z_{t−1})_{<i} in the step's order
only: a MADE (Germain et al. 2015) with hidden widths ``hidden``, the orders alternating between ascending and
descending from step to step. Each step is zuko's ``MaskedAutoregressiveTransform`` applied forwards (one
pass of its network); zuko's affine map soft-clips a_t to |a_t| < log 1000. The networks' last layers start
at zero, so a new IAF is exactly its q0 until trained. Sampling and log q(z) come in one pass,
:class:`vaekit.prob.flows.FlowPosterior`.

``posterior_args``: ``steps`` (T, default 2), ``hidden`` (the widths of each step's MADE, default [64, 64]),
``context`` (the width of h(x), default 32; 0: steps without context).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError
from vaekit.models.architectures import sizes
from vaekit.models.encoders import GaussianEncoder
from vaekit.prob.distributions import DiagonalNormal
from vaekit.prob.flows import FlowPosterior, FlowTransform

# zuko turns torch.distributions' argument checks off for the whole process when imported
# (``Distribution._validate_args = False``); keep the user's setting.
_VALIDATE_ARGS = Distribution._validate_args
from zuko.flows.autoregressive import MaskedAutoregressiveTransform  # noqa: E402
from zuko.transforms import ComposedTransform  # noqa: E402

Distribution._validate_args = _VALIDATE_ARGS

__all__ = ["IAFEncoder", "IAF_DEFAULTS", "MAX_STEPS", "MAX_FLOW_VALUES", "MAX_IAF_LATENT", "check_iaf_args",
           "flow_values"]

#: The defaults of ``posterior_args`` for ``iaf``.
IAF_DEFAULTS: dict[str, Any] = {"steps": 2, "hidden": [64, 64], "context": 32}
#: The most flow steps a configuration may name.
MAX_STEPS = 64
MAX_CONTEXT = 1 << 16
#: The most values (weights and biases) the flow's networks may hold in all: the steps' masks are computed
#: on the CPU even when the model is built on the meta device (:func:`vaekit.store.model_files.check_shapes`),
#: so a configuration naming a huge flow is refused here, before anything is allocated.
MAX_FLOW_VALUES = 1 << 26
#: The largest latent dimension of an IAF: building a step's masks takes O(K (K + C)) memory (zuko's MADE).
MAX_IAF_LATENT = 4096


def _count(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"posterior_args.{name}: must be an integer from {lo} to {hi} for the iaf posterior, "
                          f"got {value!r}")
    return value


def check_iaf_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``posterior_args`` of ``iaf`` checked and completed with :data:`IAF_DEFAULTS` (JSON-ready)."""
    if "covariance" in args:
        raise ConfigError(f"posterior_args.covariance: the iaf posterior's base q0 is a diagonal Gaussian (the "
                          f"flow steps make z correlated), got covariance {args['covariance']!r}; for a "
                          "full-covariance Gaussian use --posterior full")
    unknown = sorted(set(args) - set(IAF_DEFAULTS))
    if unknown:
        raise ConfigError(f"posterior_args: unknown keys {unknown} for the iaf posterior; known keys are "
                          f"{sorted(IAF_DEFAULTS)}")
    out = {**IAF_DEFAULTS, **args}
    out["steps"] = _count("steps", out["steps"], 1, MAX_STEPS)
    out["context"] = _count("context", out["context"], 0, MAX_CONTEXT)
    hidden = sizes("posterior_args.hidden", out["hidden"], "a list of hidden widths")
    if not hidden:
        raise ConfigError("posterior_args.hidden: the iaf posterior's autoregressive networks need at least one "
                          "hidden layer, got []")
    out["hidden"] = list(hidden)
    return out


def _zero_output(step: nn.Module) -> None:
    """Zero the layer that outputs the step's shift and log-scale, so that the step starts as the identity."""
    linears = [m for m in step.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        if linears:
            linears[-1].weight.zero_()
            linears[-1].bias.zero_()
        else:                                   # one latent dimension, no context: the parameters themselves
            for p in step.parameters():
                p.zero_()


def flow_values(latent_dim: int, steps: int, hidden: Sequence[int], context: int) -> int:
    """The values of ``steps`` MADEs (K + C)-hidden-2K, weights and biases (an upper bound for K = 1)."""
    widths = [latent_dim + context, *hidden, 2 * latent_dim]
    return steps * sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


class IAFEncoder(nn.Module):
    """x (B, *data_shape) ↦ q_x(z) = T_{h(x)} # N(μ(x), diag σ²(x)), a :class:`~vaekit.prob.flows.FlowPosterior`
    with batch shape (B,) and event shape (latent_dim,). See the module docstring."""

    def __init__(self, trunk: nn.Module, trunk_dim: int, latent_dim: int, data_shape: Sequence[int], *,
                 steps: int = 2, hidden: Sequence[int] = (64, 64), context: int = 32):
        super().__init__()
        if latent_dim > MAX_IAF_LATENT:
            raise ConfigError(f"latent_dim: the iaf posterior takes at most {MAX_IAF_LATENT} latent dimensions (its "
                              f"autoregressive masks are K × K), got {latent_dim}")
        values = flow_values(latent_dim, steps, hidden, context)
        if values > MAX_FLOW_VALUES:
            raise ConfigError(f"posterior_args: the iaf posterior's networks would hold {values:,} values ({steps} "
                              f"steps of {latent_dim + context}-{'-'.join(map(str, hidden))}-{2 * latent_dim}), more "
                              f"than {MAX_FLOW_VALUES:,}; use fewer steps or narrower hidden layers or context")
        self.base = GaussianEncoder(trunk, trunk_dim, latent_dim, data_shape, "diagonal")
        self.latent_dim = int(latent_dim)
        self.context_dim = int(context)
        self.context = nn.Linear(trunk_dim, context) if context > 0 else None      # h(x)
        device = torch.empty(0).device
        with torch.device("cpu"):               # the masks need real values (torch.unique), also for a meta build
            ascending = torch.arange(latent_dim)
            self.steps = nn.ModuleList(
                MaskedAutoregressiveTransform(latent_dim, context, hidden_features=tuple(hidden),
                                              order=ascending if t % 2 == 0 else ascending.flip(0))
                for t in range(steps))
            for step in self.steps:
                _zero_output(step)
        self.steps.to(device)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """z0 = μ + σ ε with ε ~ N(0, I_K): one example's ε has shape (latent_dim,)."""
        return (self.latent_dim,)

    def transform(self, h: Tensor | None) -> FlowTransform:
        """T = step_T ∘ … ∘ step_1 for the context h (B, context) (None without context)."""
        return ComposedTransform(*(step(h) for step in self.steps))

    def forward(self, x: Tensor) -> FlowPosterior:
        return self.heads(self.features(x))

    def features(self, x: Tensor) -> Tensor:
        """The trunk's features of x (B, *data_shape), (B, trunk_dim)."""
        return self.base.features(x)

    def heads(self, hidden: Tensor) -> FlowPosterior:
        """q_x(z) from the trunk's features (B, trunk_dim): q0's heads, the context h and the flow (a
        conditional model joins its label to ``hidden``, :mod:`vaekit.models.conditional`)."""
        q0 = cast(DiagonalNormal, self.base.heads(hidden))                  # the base is built diagonal
        h = None if self.context is None else self.context(hidden)         # (B, context)
        return FlowPosterior(q0.loc, q0.scale, self.transform, h)
