"""The architectures a configuration names: each is a small frozen config that builds the function
families of the seed, the encoder trunk shared by g and h and the decoder network f.

* ``mlp``             :class:`MLPArch`: MLP trunk of widths ``hidden``; f an MLP with the widths reversed;
* ``linear``          :class:`LinearArch`: g, h affine in x and f(z) = Wz + b (probabilistic PCA when Gaussian);
* ``MODULE:FUNCTION`` :class:`CustomArch`: the user's own networks (:mod:`vaekit.models.custom`).

:data:`ARCHITECTURES` maps names to classes; :func:`resolve_arch` turns a (name, arguments) pair
into an architecture once, when a configuration is read.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from vaekit.errors import ConfigError
from vaekit.models.custom import build_custom, is_custom_arch, normalise_builder
from vaekit.models.networks import ACTIVATIONS, MLP, Affine, Flatten

__all__ = ["Architecture", "MLPArch", "LinearArch", "CustomArch", "ARCHITECTURES", "resolve_arch", "sizes",
           "MAX_SIZE"]

#: The largest size (a width, a dimension of the data, the latent size) a configuration may name.
MAX_SIZE = 2**31 - 1


def sizes(name: str, value: object, what: str = "a list of sizes") -> tuple[int, ...]:
    """``value`` as a tuple of integers from 1 to :data:`MAX_SIZE`, or a ConfigError naming ``name``.
    A list or tuple (any iterable) of integers is required: a string (``"32"`` is not ``(3, 2)``), a number, a
    float or a boolean is refused, not converted."""
    try:
        if isinstance(value, (str, bytes, Mapping)):
            raise TypeError
        items = list(value)                       # type: ignore[call-overload]
    except TypeError:
        raise ConfigError(f"{name}: expected {what}, got {value!r}") from None
    out = []
    for v in items:
        try:
            if isinstance(v, bool):
                raise TypeError
            out.append(operator.index(v))         # ints and numpy integers; not floats, strings, booleans
        except TypeError:
            raise ConfigError(f"{name}: expected {what} (integers), got {value!r}") from None
    if any(v <= 0 or v > MAX_SIZE for v in out):
        raise ConfigError(f"{name}: every size must be an integer from 1 to {MAX_SIZE}, got {tuple(out)}")
    return tuple(out)


class Architecture:
    """Builds (encoder trunk, trunk width H, decoder network f) for a data shape and latent size."""

    name: ClassVar[str]

    def to_args(self) -> dict[str, Any]:
        """The JSON-ready arguments that :func:`resolve_arch` turns back into this architecture."""
        raise NotImplementedError

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *,
              trust_code: bool = False) -> tuple[nn.Module, int, nn.Module]:
        raise NotImplementedError

    @property
    def imports_code(self) -> bool:
        """Whether building imports code named in the configuration."""
        return False


def _check_keys(name: str, args: Mapping[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ConfigError(f"arch_args: unknown {unknown} for arch {name!r}; it takes {list(known) or 'none'}")


@dataclass(frozen=True)
class MLPArch(Architecture):
    """g, h share an MLP trunk of widths ``hidden``; f is an MLP with the widths reversed."""

    name: ClassVar[str] = "mlp"
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        hidden = sizes("hidden", self.hidden, "a list of widths")
        if not hidden:
            raise ConfigError("hidden: the mlp architecture needs at least one hidden layer")
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation: unknown {self.activation!r}; choose one of {list(ACTIVATIONS)}")
        object.__setattr__(self, "hidden", hidden)

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> MLPArch:
        _check_keys(cls.name, args, ("hidden", "activation"))
        return cls(**args)

    def to_args(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), "activation": self.activation}

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *,
              trust_code: bool = False) -> tuple[nn.Module, int, nn.Module]:
        trunk = MLP(data_shape, self.hidden, None, self.activation)
        f = MLP(latent_dim, tuple(reversed(self.hidden)), math.prod(data_shape), self.activation)
        return trunk, trunk.out_features, f


@dataclass(frozen=True)
class LinearArch(Architecture):
    """g, h affine in x; f(z) = Wz + b."""

    name: ClassVar[str] = "linear"

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> LinearArch:
        _check_keys(cls.name, args, ())
        return cls()

    def to_args(self) -> dict[str, Any]:
        return {}

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *,
              trust_code: bool = False) -> tuple[nn.Module, int, nn.Module]:
        trunk = Flatten(data_shape)
        return trunk, trunk.out_features, Affine(latent_dim, math.prod(data_shape))


@dataclass(frozen=True)
class CustomArch(Architecture):
    """The user's ``builder`` (``MODULE:FUNCTION``) called with ``args``; see :mod:`vaekit.models.custom`."""

    name: ClassVar[str] = "custom"
    builder: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)

    def to_args(self) -> dict[str, Any]:
        return dict(self.args)

    @property
    def imports_code(self) -> bool:
        return True

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *,
              trust_code: bool = False) -> tuple[nn.Module, int, nn.Module]:
        return build_custom(self.builder, dict(self.args), data_shape, latent_dim, trust_code=trust_code)


#: Built-in architecture names and their classes (``MODULE:FUNCTION`` names user code instead).
ARCHITECTURES: dict[str, type[MLPArch] | type[LinearArch]] = {"mlp": MLPArch, "linear": LinearArch}


def resolve_arch(name: str, args: Mapping[str, Any] | None = None) -> Architecture:
    """The architecture ``name`` with arguments ``args`` (checked; nothing is imported here)."""
    if not isinstance(name, str):
        raise ConfigError(f"arch: expected a name, got {name!r}")
    args = dict(args or {})
    if is_custom_arch(name):
        return CustomArch(normalise_builder(name), args)
    if name not in ARCHITECTURES:
        raise ConfigError(f"arch: unknown {name!r}; choose one of {list(ARCHITECTURES)} or MODULE:FUNCTION")
    return ARCHITECTURES[name].from_args(args)
