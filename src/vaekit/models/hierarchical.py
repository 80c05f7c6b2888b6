"""Models with several stochastic layers (``layers`` > 1 in a configuration): what ``layer_args`` mean.

With L layers the model is that of Burda et al. (2016, §5): q(z_1|x) q(z_2|z_1) ⋯ q(z_L|z_{L-1}) and
p(z_L) p(z_{L-1}|z_L) ⋯ p(z_1|z_2) p(x|z_1) (built by :mod:`vaekit.models.stacked`). The configuration's
``arch``/``arch_args`` and ``latent_dim`` describe the networks between x and z_1 as for one layer;
``layer_args`` describes the layers above:

* ``latent_dims``  [d_2, …, d_L], the sizes of z_2..z_L (default: each half the one below, at least 1);
* ``hidden``       [[widths of the MLPs between z_1 and z_2], …] (default for ``mlp``: each layer's widths
                   half the ones below, at least 1; required with ``conv``, ``resnet`` and a user architecture);
* ``activation``   of those MLPs (default: the architecture's, ``tanh`` for a user architecture).

The configuration's ``prior`` is the prior on z_L; ``inference`` (:data:`INFERENCE`) the direction of q.

``linear`` takes ``latent_dims`` only: its upper layers are affine. So ``--hidden 200,200 --latent-dim 100
--layers 2`` is the paper's MNIST model: 784-200-200-100 (z_1) and 100-100-50 (z_2), tanh.

The model's latent z is the concatenation (z_1, …, z_L), of size latent_dim + Σ latent_dims.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaekit.errors import ConfigError
from vaekit.models.architectures import Architecture, LinearArch, MLPArch, sizes
from vaekit.models.networks import ACTIVATIONS

__all__ = ["MAX_LAYERS", "INFERENCE", "check_layer_args", "check_inference", "latent_dims"]

#: The inference directions of a model with several stochastic layers (:mod:`vaekit.models.chain_layers`).
INFERENCE = ("bottom-up", "top-down")

#: The most stochastic layers a configuration may name.
MAX_LAYERS = 8
_KEYS = ("latent_dims", "hidden", "activation")


def check_layer_args(layers: int, args: Mapping[str, Any] | None, latent_dim: int,
                     architecture: Architecture | None = None) -> dict[str, Any]:
    """``layer_args`` checked and completed for ``layers`` stochastic layers above a first of size
    ``latent_dim`` built by ``architecture`` (see the module docstring); JSON-ready."""
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"layer_args: expected a JSON object of arguments, got {args!r}")
    args = dict(args or {})
    if layers == 1:
        if args:
            raise ConfigError(f"layer_args: apply to layers > 1 only, got {sorted(args)} with layers 1")
        return {}
    linear = isinstance(architecture, LinearArch)
    known = ("latent_dims",) if linear else _KEYS
    unknown = sorted(set(args) - set(known))
    if unknown:
        kind = "linear" if linear else "this architecture"
        raise ConfigError(f"layer_args: unknown {unknown} for {kind}; it takes {list(known)}")
    upper = layers - 1
    dims = _default_dims(latent_dim, upper) if "latent_dims" not in args else \
        sizes("layer_args.latent_dims", args["latent_dims"], f"a list of {upper} sizes (z_2..z_{layers})")
    if len(dims) != upper:
        raise ConfigError(f"layer_args.latent_dims: {layers} layers need {upper} sizes (z_2..z_{layers}), "
                          f"got {list(dims)}")
    out: dict[str, Any] = {"latent_dims": list(dims)}
    if linear:
        return out
    out["hidden"] = [list(h) for h in _hidden(args, architecture, upper, layers)]
    own = getattr(architecture, "activation", None)                      # mlp, conv: the networks' own
    activation = args.get("activation", own if isinstance(own, str) else "tanh")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ConfigError(f"layer_args.activation: unknown {activation!r}; choose one of {list(ACTIVATIONS)}")
    out["activation"] = activation
    return out


def check_inference(inference: Any, layers: int, posterior: str, prior: str) -> str:
    """``inference`` checked against the model: ``top-down`` needs several layers and a diagonal Gaussian
    q̂(z_1|x) to merge by precision; a VampPrior over several layers with bottom-up inference passes its
    pseudo-inputs through the means of q(z_1|u), which a flow posterior does not give."""
    if not isinstance(inference, str) or inference not in INFERENCE:
        raise ConfigError(f"inference: unknown {inference!r}; choose one of {list(INFERENCE)}")
    if inference == "top-down" and layers == 1:
        raise ConfigError("inference: top-down needs layers > 1 (with one layer there is no path to share)")
    if inference == "top-down" and posterior != "diagonal":
        raise ConfigError(f"inference: top-down merges diagonal Gaussians by precision; posterior {posterior!r} "
                          "is not one (use posterior diagonal, or inference bottom-up)")
    if layers > 1 and prior == "vamp" and posterior == "iaf":
        raise ConfigError("prior: vamp on several layers encodes its pseudo-inputs through the means of q(z_1|u), "
                          "which posterior 'iaf' does not give; use posterior diagonal or full")
    return inference


def latent_dims(latent_dim: int, layer_args: Mapping[str, Any]) -> tuple[int, ...]:
    """(d_1, …, d_L) of a configuration: ``latent_dim`` and the completed ``layer_args``' latent_dims."""
    return (int(latent_dim), *(int(d) for d in layer_args.get("latent_dims", ())))


def _default_dims(latent_dim: int, upper: int) -> tuple[int, ...]:
    dims, d = [], latent_dim
    for _ in range(upper):
        d = max(1, d // 2)
        dims.append(d)
    return tuple(dims)


def _hidden(args: Mapping[str, Any], architecture: Architecture | None, upper: int,
            layers: int) -> list[tuple[int, ...]]:
    """The hidden widths of each upper layer's networks: given, or halved from the mlp's layer by layer."""
    if "hidden" not in args:
        if not isinstance(architecture, MLPArch):
            name = getattr(architecture, "name", "custom")
            name = "a user architecture" if name == "custom" else f"arch {name!r}"
            raise ConfigError(f"layer_args.hidden: {name} builds the networks of z_1 only; give the widths of the "
                              f"{upper} upper layers' MLPs, e.g. {{\"hidden\": {[[100, 100]] * upper}}}")
        widths, out = architecture.hidden, []
        for _ in range(upper):
            widths = tuple(max(1, w // 2) for w in widths)
            out.append(widths)
        return out
    given = args["hidden"]
    if not isinstance(given, (list, tuple)) or len(given) != upper:
        raise ConfigError(f"layer_args.hidden: {layers} layers need {upper} lists of widths (one per upper "
                          f"layer), got {given!r}")
    out = [sizes(f"layer_args.hidden[{i}]", h, "a list of widths") for i, h in enumerate(given)]
    if any(not h for h in out):
        raise ConfigError(f"layer_args.hidden: every upper layer needs at least one hidden width, got {given!r}")
    return out
