"""Priors p(z): modules that give the model's prior distribution, event shape (latent_dim,).

* ``standard``  :class:`StandardNormalPrior`: the seed's p(z) = N(0, I), nothing learned.
* ``mixture``   :class:`MixturePrior`: p(z) = Σ_c π_c N(z; μ_c, diag σ_c²), c = 1..C, all learned
                (``prior_args``: ``components`` C, default 10).
* ``vamp``      :class:`VampPrior`: p(z) = (1/C) Σ_c q_{u_c}(z), the encoder's posteriors at C learned
                pseudo-inputs u_c (Tomczak & Welling 2018; ``prior_args``: ``pseudo_inputs`` C, default
                500, ``init_mean``, ``init_std``).

A prior is an ``nn.Module`` whose ``forward(encode)`` returns p(z) on the module's device and dtype;
``encode`` is the model's q_x(z) (x ↦ distribution), which a prior defined through the encoder (the
VampPrior) calls. :data:`PRIORS` maps the configuration's ``prior`` names to classes with
``check_args(args)`` (the checked arguments, defaults filled in: what config.json stores) and a
constructor ``cls(latent_dim, data_shape, **args)``; :func:`check_prior_args` checks a name and its
arguments once, when a configuration is read.

The learned priors return a :class:`~vaekit.prob.mixtures.Mixture`: KL(q || p) has no closed form and
is the Monte Carlo estimate on the objective's own draws; ``sample_with(n, generator)`` makes
``VAE.sample`` reproducible; ``marginal_kl`` gives the per-dimension KL (free bits, the figures).
Nothing in them draws random numbers while training (only their initial values are random), so
data-parallel ranks compute the same p(z).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError
from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp
from vaekit.prob.distributions import DiagonalNormal, standard_normal
from vaekit.prob.flows import FlowPosterior
from vaekit.prob.mixtures import Mixture

__all__ = ["Prior", "StandardNormalPrior", "MixturePrior", "VampPrior", "PRIORS", "MAX_COMPONENTS",
           "check_prior_args", "build_prior"]

#: The most mixture components (``components``) or pseudo-inputs (``pseudo_inputs``) a prior may have.
MAX_COMPONENTS = 100_000

Encode = Callable[[Tensor], Distribution]


class Prior(nn.Module):
    """p(z) as a module: ``forward(encode)`` → a distribution with event shape (latent_dim,)."""

    name: ClassVar[str]
    latent_dim: int

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` checked and completed with the defaults (JSON-ready); a ConfigError names a bad one."""
        raise NotImplementedError

    def forward(self, encode: Encode) -> Distribution:  # noqa: D102 - see the class
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(0, I): the seed's prior."""

    name: ClassVar[str] = "standard"
    _anchor: Tensor

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...] = ()):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)   # tracks device and dtype

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        if args:
            raise ConfigError(f"prior_args: the standard prior takes none, got {sorted(args)}")
        return {}

    def forward(self, encode: Encode | None = None) -> DiagonalNormal:
        return standard_normal(self.latent_dim, device=self._anchor.device, dtype=self._anchor.dtype)


def _checked(args: Mapping[str, Any], name: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``args``; a key the prior does not take is a ConfigError."""
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        raise ConfigError(f"prior_args: the {name} prior takes {sorted(defaults)}, got unknown {unknown}")
    return {**defaults, **args}


def _count(args: dict[str, Any], key: str) -> int:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COMPONENTS:
        raise ConfigError(f"prior_args: {key} must be an integer from 1 to {MAX_COMPONENTS}, got {value!r}")
    return value


#: The largest magnitude of a prior's initial value (``init_mean``, ``init_std``): pseudo-inputs live in
#: the data's space, which is [0, 1] for images and standardised for tables; 1e308 would not train.
MAX_INIT = 1e4


def _real(args: dict[str, Any], key: str, *, minimum: float | None = None) -> float:
    value = args[key]
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not (-MAX_INIT if minimum is None else minimum) <= value <= MAX_INIT:
        bound = f">= {minimum:g} and <= {MAX_INIT:g}" if minimum is not None else f"in [-{MAX_INIT:g}, {MAX_INIT:g}]"
        raise ConfigError(f"prior_args: {key} must be a finite number {bound}, got {value!r}")
    return float(value)


class MixturePrior(Prior):
    """p(z) = Σ_c π_c N(z; μ_c, diag σ_c²), c = 1..C, every part learned: π = softmax(``logits``),
    μ_c = ``loc[c]``, log σ_c² = soft_clamp(``log_var[c]``) into the encoder's range [-20, 12]
    (:mod:`vaekit.prob.bounds`). At the start π is uniform, μ_c ~ N(0, I) (distinct components, so
    that they can move apart) and σ_c = 1. C = 1 is a learned diagonal Gaussian N(μ, diag σ²)."""

    name: ClassVar[str] = "mixture"

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...] = (), components: int = 10):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.logits = nn.Parameter(torch.zeros(components))                       # (C,)
        self.loc = nn.Parameter(torch.randn(components, self.latent_dim))          # (C, K)
        self.log_var = nn.Parameter(torch.zeros(components, self.latent_dim))      # (C, K)

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        checked = _checked(args, cls.name, {"components": 10})
        return {"components": _count(checked, "components")}

    def forward(self, encode: Encode | None = None) -> Mixture:
        log_var = soft_clamp(self.log_var, ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX)
        return Mixture(self.logits, DiagonalNormal(self.loc, torch.exp(0.5 * log_var)))


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018, eq. 9): p(z) = (1/C) Σ_c q_{u_c}(z), the model's own
    encoder q evaluated at C learned pseudo-inputs u_c of the data's shape (``pseudo_inputs``,
    (C, *data_shape)), with equal weights as in the paper.

    Initial values: random, u_c ~ N(``init_mean``, ``init_std``²) elementwise, near-constant
    mid-grey inputs by default (0.5, 0.01), which is what the paper's code does (its images start at
    sigmoid(N(-0.05, 0.01²)) ≈ 0.49); the paper's alternative of copying training examples needs the
    data when the model is built, which a configuration does not have. The pseudo-inputs are free
    parameters in the data's space (no squashing into the data range), so the same prior serves
    standardised tables.

    ``forward(encode)`` encodes the pseudo-inputs (one pass of the encoder on a batch of C, with
    gradients to the encoder and to u); any encoder whose q has batch shape (C,), event shape
    (latent_dim,) and a ``log_prob`` gives a mixture (Gaussian ones are also sampled and split into
    per-dimension KLs exactly); anything else is a ConfigError. An encoder with batch normalisation
    would treat the pseudo-inputs as a batch of their own (and, in training mode, fold them into
    its running statistics); vaekit's encoders have none, so the pass is a deterministic function
    of the parameters and every data-parallel rank computes the same prior.

    With a flow posterior (``--posterior iaf``: q_u = T_u # q0_u) the components are the flow's base
    Gaussians, p(z) = (1/C) Σ_c q0_{u_c}(z) = (1/C) Σ_c N(z; μ(u_c), diag σ²(u_c)): a mixture of diagonal
    Gaussians placed by the encoder at the pseudo-inputs, evaluated by one matrix product. The exact
    q_{u_c}(z) at a z the flow did not draw needs T_{u_c}⁻¹(z), K sequential passes of each autoregressive
    step for every (z, c) pair, which made a training step about a hundred times slower than either part.
    """

    name: ClassVar[str] = "vamp"

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...], pseudo_inputs: int = 500,
                 init_mean: float = 0.5, init_std: float = 0.01):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(s) for s in data_shape)
        if not self.data_shape:
            raise ConfigError("prior vamp: needs the data's shape for its pseudo-inputs, got ()")
        u = init_mean + init_std * torch.randn(pseudo_inputs, *self.data_shape)
        self.pseudo_inputs = nn.Parameter(u)                                          # (C, *data_shape)

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        checked = _checked(args, cls.name, {"pseudo_inputs": 500, "init_mean": 0.5, "init_std": 0.01})
        return {"pseudo_inputs": _count(checked, "pseudo_inputs"), "init_mean": _real(checked, "init_mean"),
                "init_std": _real(checked, "init_std", minimum=0.0)}

    def forward(self, encode: Encode | None = None) -> Mixture:
        if encode is None:
            raise ConfigError("prior vamp: needs the model's encoder (forward(encode)), got None")
        q_u = encode(self.pseudo_inputs)                                    # batch (C,), event (K,)
        c, k = self.pseudo_inputs.shape[0], self.latent_dim
        if not isinstance(q_u, Distribution) or tuple(q_u.batch_shape) != (c,) or tuple(q_u.event_shape) != (k,):
            got = (f"batch shape {tuple(q_u.batch_shape)}, event shape {tuple(q_u.event_shape)}"
                   if isinstance(q_u, Distribution) else type(q_u).__name__)
            raise ConfigError(f"prior vamp: the encoder must map the {c} pseudo-inputs to a distribution with batch "
                              f"shape ({c},) and event shape ({k},), got {got}")
        if type(q_u).log_prob is Distribution.log_prob:
            raise ConfigError(f"prior vamp: the encoder's {type(q_u).__name__} has no log_prob, so the mixture of "
                              "posteriors cannot be evaluated; use prior 'mixture' or 'standard'")
        if isinstance(q_u, FlowPosterior):       # its base Gaussians q0(z|u_c): no flow to invert (docstring)
            q_u = q_u.base
        logits = torch.zeros(c, dtype=self.pseudo_inputs.dtype, device=self.pseudo_inputs.device)
        return Mixture(logits, q_u)


#: Prior names (the configuration's ``prior``) and their classes, built as ``cls(latent_dim, data_shape, **args)``.
PRIORS: dict[str, type[Prior]] = {"standard": StandardNormalPrior, "mixture": MixturePrior, "vamp": VampPrior}


def check_prior_args(name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments of prior ``name``, checked and completed; an unknown name is a ConfigError."""
    if not isinstance(name, str) or name not in PRIORS:
        raise ConfigError(f"prior: unknown {name!r}; choose one of {list(PRIORS)}")
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"prior_args: expected a JSON object of arguments, got {args!r}")
    return PRIORS[name].check_args(dict(args or {}))


def build_prior(name: str, args: Mapping[str, Any], latent_dim: int, data_shape: tuple[int, ...]) -> Prior:
    """The prior module ``name`` with (checked) ``args``."""
    return PRIORS[name](latent_dim, data_shape, **check_prior_args(name, args))
