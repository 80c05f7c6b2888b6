"""The model's configuration, :class:`VAEConfig`: everything needed to rebuild a model, stored as
JSON beside its weights. Names (architecture, likelihood, posterior, decoder variance) are checked
and resolved here, once, when the configuration is made or read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaekit.errors import ConfigError
from vaekit.models.architectures import MAX_SIZE, Architecture, resolve_arch, sizes
from vaekit.models.conditioning import check_conditioning
from vaekit.models.hierarchical import MAX_LAYERS, check_inference, check_layer_args
from vaekit.models.likelihoods import LIKELIHOODS, check_likelihood_args
from vaekit.models.posteriors import POSTERIORS, check_posterior_args
from vaekit.models.priors import check_prior_args
from vaekit.models.variance import parse_variance
from vaekit.prob.bounds import DECODER_LOG_VAR_MAX, DECODER_LOG_VAR_MIN

__all__ = ["VAEConfig"]

_FIELDS = ("data_shape", "latent_dim", "arch", "arch_args", "likelihood", "decoder_variance", "posterior",
           "initial_variance", "prior", "prior_args", "posterior_args", "likelihood_args", "layers", "layer_args",
           "num_classes", "class_names", "inference")
#: The decoder variance of a stored configuration that does not name one: c = 1, the default before
#: it became "optimal" (to_dict always writes the key; hand-written and older files may lack it).
_STORED_DEFAULT_VARIANCE = 1.0
#: Fields written by :meth:`VAEConfig.to_dict` only when they differ from these defaults, so that
#: the configuration of a seed model reads as it did before the model families.
_FAMILY_DEFAULTS: dict[str, Any] = {"prior": "standard", "prior_args": {}, "posterior_args": {},
                                    "likelihood_args": {}, "layers": 1, "layer_args": {}, "num_classes": 0,
                                    "class_names": (), "inference": "bottom-up"}


@dataclass(frozen=True, init=False)
class VAEConfig:
    """The seed's model: data shape, latent size K, the function families (``arch`` with its
    ``arch_args``), the decoder ``likelihood`` and its variance c, the posterior's covariance.

    ``arch``: ``"mlp"`` (``arch_args`` ``hidden``, ``activation``), ``"linear"`` (none),
    ``"conv"`` (``width``, ``stages``, ``activation``) and ``"resnet"`` (those and ``blocks``) for
    images (C, H, W) of any size, or
    ``"MODULE:FUNCTION"``, the user's builder (see :mod:`vaekit.models.custom`; building it needs
    ``trust_code=True``). ``hidden=`` and ``activation=`` may be given directly for ``mlp``.
    ``decoder_variance`` is the seed's c: a float > 0 (fixed), ``"learned"`` (one shared scalar),
    ``"learned-per-dim"`` (one per data dimension) or ``"optimal"`` (c* = mean squared error, the
    default, as on the command line). It is ignored by the Bernoulli likelihood.

    The model families: ``prior`` (``standard`` N(0, I), or a learned prior, :mod:`vaekit.models.priors`)
    with ``prior_args``; ``posterior`` (``diagonal``, ``full`` or a flow, :mod:`vaekit.models.posteriors`)
    with ``posterior_args``; ``likelihood_args`` for the likelihoods that take any; ``layers`` stochastic
    layers (1: the seed's model; more: :mod:`vaekit.models.hierarchical`) with ``layer_args``;
    ``num_classes`` C > 0 makes a conditional VAE, q(z|x, y) and p(x|z, y) for labels y in 0..C-1
    (:mod:`vaekit.models.conditional`), with optional ``class_names``. ``inference``: the direction of
    q(z|x) with several layers, ``bottom-up`` (default) or ``top-down`` (:mod:`vaekit.models.chain_layers`).
    """

    data_shape: tuple[int, ...]
    latent_dim: int = 16
    arch: str = "mlp"
    arch_args: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "gaussian"
    decoder_variance: float | str = "optimal"
    posterior: str = "diagonal"
    initial_variance: float = 1.0
    prior: str = "standard"
    prior_args: dict[str, Any] = field(default_factory=dict)
    posterior_args: dict[str, Any] = field(default_factory=dict)
    likelihood_args: dict[str, Any] = field(default_factory=dict)
    layers: int = 1
    layer_args: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    inference: str = "bottom-up"

    def __init__(self, data_shape: Sequence[int], latent_dim: int = 16, arch: str = "mlp",
                 arch_args: Mapping[str, Any] | None = None, likelihood: str = "gaussian",
                 decoder_variance: float | str = "optimal", posterior: str = "diagonal", initial_variance: float = 1.0,
                 prior: str = "standard", prior_args: Mapping[str, Any] | None = None,
                 posterior_args: Mapping[str, Any] | None = None, likelihood_args: Mapping[str, Any] | None = None,
                 layers: int = 1, layer_args: Mapping[str, Any] | None = None, num_classes: int = 0,
                 class_names: Sequence[str] = (), inference: str = "bottom-up", *,
                 hidden: Sequence[int] | None = None, activation: str | None = None):
        if arch_args is not None and not isinstance(arch_args, Mapping):
            raise ConfigError(f"arch_args: expected a JSON object of arguments, got {arch_args!r}")
        args = dict(arch_args or {})
        for name, value in (("hidden", hidden), ("activation", activation)):
            if value is not None:
                if arch != "mlp":
                    raise ConfigError(f"{name}: applies to arch 'mlp' only, not {arch!r} (use arch_args)")
                args[name] = value
        shape = sizes("data_shape", data_shape)
        if not shape:
            raise ConfigError("data_shape: expected at least one size, got []")
        if math.prod(shape) > MAX_SIZE:
            raise ConfigError(f"data_shape: {shape} has {math.prod(shape)} dimensions, more than {MAX_SIZE}")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or not 0 < latent_dim <= MAX_SIZE:
            raise ConfigError(f"latent_dim: must be an integer from 1 to {MAX_SIZE}, got {latent_dim!r}")
        for name, value, allowed in (("likelihood", likelihood, tuple(LIKELIHOODS)),
                                     ("posterior", posterior, tuple(POSTERIORS))):
            if not isinstance(value, str) or value not in allowed:
                raise ConfigError(f"{name}: unknown {value!r}; choose one of {list(allowed)}")
        ok = not isinstance(initial_variance, bool) and isinstance(initial_variance, (int, float))
        if not (ok and math.isfinite(initial_variance) and initial_variance > 0):
            raise ConfigError(f"initial_variance: must be a finite number > 0, got {initial_variance!r}")
        variance = parse_variance(decoder_variance)
        if variance in ("learned", "learned-per-dim") and likelihood == "gaussian" \
                and not DECODER_LOG_VAR_MIN < math.log(initial_variance) < DECODER_LOG_VAR_MAX:
            raise ConfigError(f"initial_variance: a learned c starts inside (e^{DECODER_LOG_VAR_MIN:g}, "
                              f"e^{DECODER_LOG_VAR_MAX:g}) = ({math.exp(DECODER_LOG_VAR_MIN):.3g}, "
                              f"{math.exp(DECODER_LOG_VAR_MAX):.3g}), got {initial_variance!r}")
        architecture = resolve_arch(arch, args)
        architecture.check_data_shape(shape)
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= MAX_LAYERS:
            raise ConfigError(f"layers: must be an integer from 1 to {MAX_LAYERS}, got {layers!r}")
        family = {"prior": prior, "prior_args": check_prior_args(prior, prior_args),
                  "posterior_args": check_posterior_args(posterior, posterior_args),
                  "likelihood_args": check_likelihood_args(likelihood, likelihood_args),
                  "layers": layers,
                  "layer_args": check_layer_args(layers, layer_args, latent_dim, architecture),
                  "inference": check_inference(inference, layers, posterior, prior)}
        family["num_classes"], family["class_names"] = check_conditioning(num_classes, class_names, layers=layers,
                                                                          prior=prior)
        values: dict[str, Any] = {
            "data_shape": shape, "latent_dim": latent_dim,
            "arch": getattr(architecture, "builder", None) or arch, "arch_args": architecture.to_args(),
            "likelihood": likelihood, "decoder_variance": variance,
            "posterior": posterior, "initial_variance": float(initial_variance), **family}
        for key, value in values.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_architecture", architecture)

    @property
    def architecture(self) -> Architecture:
        """The resolved architecture (:mod:`vaekit.models.architectures`)."""
        return self._architecture  # type: ignore[attr-defined]

    def free_bits_groups(self) -> str:
        """What free bits floor in this model (:func:`vaekit.inference.objectives.elbo_terms`): ``"layer"``
        with several stochastic layers (any posterior), ``"dimension"`` where the KL is a sum over latent
        dimensions (a diagonal posterior and the standard prior); otherwise a ConfigError that says why."""
        if self.layers > 1:
            return "layer"
        if self.posterior == "diagonal" and self.prior == "standard":
            return "dimension"
        why = (f"the {self.posterior} posterior's latent dimensions are dependent under q"
               if self.posterior != "diagonal" else f"against the {self.prior} prior the KL is no sum of "
               "per-dimension terms")
        raise ConfigError(f"free_bits: floor the KL of each latent dimension only where the KL is their sum, and {why} "
                          "(the floored objective would differ from the ELBO's KL by more than the floors); use "
                          "several stochastic layers (free bits per layer) or no free bits")

    @property
    def data_dim(self) -> int:
        """Number of dimensions of one example, D = prod(data_shape)."""
        return math.prod(self.data_shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists); the family fields only where they differ from the defaults."""
        d = {"data_shape": list(self.data_shape), "latent_dim": self.latent_dim, "arch": self.arch,
             "arch_args": dict(self.arch_args), "likelihood": self.likelihood,
             "decoder_variance": self.decoder_variance, "posterior": self.posterior,
             "initial_variance": self.initial_variance}
        for key, default in _FAMILY_DEFAULTS.items():
            value = getattr(self, key)
            if value != default:
                d[key] = dict(value) if isinstance(value, Mapping) else \
                    list(value) if isinstance(value, tuple) else value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VAEConfig:
        """Inverse of :meth:`to_dict`; also reads the flat format of vaekit 0.1 (``hidden`` and
        ``activation`` at the top level, kept for ``mlp`` and dropped for ``linear``). Unknown keys
        are a ConfigError. A stored configuration without ``decoder_variance`` was written when the
        default was c = 1 and keeps it (the default of a new configuration is ``"optimal"``)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"model config: expected a dict, got {type(d).__name__}")
        d = dict(d)
        legacy = {k: d.pop(k) for k in ("hidden", "activation") if k in d}
        if legacy and d.get("arch", "mlp") == "mlp" and "arch_args" not in d:
            d["arch_args"] = legacy
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"model config: unknown keys {unknown}; known keys are {sorted(_FIELDS)}")
        if "data_shape" not in d:
            raise ConfigError("model config: missing required key 'data_shape'")
        d.setdefault("decoder_variance", _STORED_DEFAULT_VARIANCE)
        return cls(**d)
