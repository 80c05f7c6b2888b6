"""The architectures a configuration names: each is a small frozen config that builds the function
families of the seed, the encoder trunk shared by g and h and the decoder network f.

* ``mlp``             :class:`MLPArch`: MLP trunk of widths ``hidden``; f an MLP with the widths reversed;
* ``linear``          :class:`LinearArch`: g, h affine in x and f(z) = Wz + b (probabilistic PCA when Gaussian);
* ``conv``            :class:`ConvArch`: stride-2 convolutions down, transposed convolutions up, for
  images (C, H, W) of any size (:mod:`vaekit.models.conv_nets`);
* ``resnet``          :class:`ResNetArch`: the same stages with ``blocks`` residual blocks each;
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
from vaekit.models.conv_nets import ConvDecoder, ConvEncoder
from vaekit.models.custom import build_custom, is_custom_arch, normalise_builder
from vaekit.models.networks import ACTIVATIONS, MLP, Affine, Flatten

__all__ = ["Architecture", "MLPArch", "LinearArch", "ConvArch", "ResNetArch", "CustomArch", "ARCHITECTURES",
           "resolve_arch", "sizes", "MAX_SIZE"]

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
    """Builds (encoder trunk, trunk width H, decoder network f) for a data shape and latent size.

    ``params_per_dim`` P: the likelihood's values per data dimension; f then has P·prod(data_shape)
    outputs, read as (N, P, *data_shape) (:mod:`vaekit.models.decoders`). It is passed only when P > 1."""

    name: ClassVar[str]

    def to_args(self) -> dict[str, Any]:
        """The JSON-ready arguments that :func:`resolve_arch` turns back into this architecture."""
        raise NotImplementedError

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *, trust_code: bool = False,
              params_per_dim: int = 1) -> tuple[nn.Module, int, nn.Module]:
        raise NotImplementedError

    def check_data_shape(self, data_shape: tuple[int, ...]) -> None:
        """A ConfigError when this architecture cannot take examples of ``data_shape`` (any shape by default)."""

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

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *, trust_code: bool = False,
              params_per_dim: int = 1) -> tuple[nn.Module, int, nn.Module]:
        trunk = MLP(data_shape, self.hidden, None, self.activation)
        f = MLP(latent_dim, tuple(reversed(self.hidden)), params_per_dim * math.prod(data_shape), self.activation)
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

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *, trust_code: bool = False,
              params_per_dim: int = 1) -> tuple[nn.Module, int, nn.Module]:
        trunk = Flatten(data_shape)
        return trunk, trunk.out_features, Affine(latent_dim, params_per_dim * math.prod(data_shape))


#: Limits of the convolutional architectures' arguments (beyond them a model would not fit in memory).
MAX_STAGES, MAX_BLOCKS, MAX_CHANNELS = 8, 16, 8192


def _count(arch: str, name: str, value: object, low: int, high: int) -> int:
    """``value`` as an integer in [low, high], or a ConfigError naming the argument (floats, strings and
    booleans are refused, not converted)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)            # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"arch_args: {name} of arch {arch!r} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"arch_args: {name} of arch {arch!r} must be from {low} to {high}, got {number}")
    return number


class _StagedConv(Architecture):
    """Images (C, H, W) of any size: ``stages`` stride-2 3×3 convolutions with c_i = width · 2^(i−1)
    channels at stage i, each followed by ``blocks`` residual blocks, flattened, for g, h; f a linear
    layer then the stages mirrored with transposed convolutions whose output padding restores the
    encoder's sizes exactly (:mod:`vaekit.models.conv_nets`)."""

    width: int
    stages: int
    activation: str
    blocks: int
    #: The arguments ``arch_args`` may give, and the allowed numbers of residual blocks per stage.
    arg_names: ClassVar[tuple[str, ...]]
    block_range: ClassVar[tuple[int, int]]

    def __post_init__(self) -> None:
        width = _count(self.name, "width", self.width, 1, MAX_CHANNELS)
        stages = _count(self.name, "stages", self.stages, 1, MAX_STAGES)
        if width * 2 ** (stages - 1) > MAX_CHANNELS:
            raise ConfigError(f"arch_args: width {width} with {stages} stages gives the last stage "
                              f"{width * 2 ** (stages - 1)} channels, more than {MAX_CHANNELS}")
        if self.block_range == (0, 0) and self.blocks != 0:
            raise ConfigError(f"arch_args: arch {self.name!r} has no residual blocks, got blocks={self.blocks!r} "
                              "(use arch 'resnet')")
        blocks = _count(self.name, "blocks", self.blocks, *self.block_range)
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise ConfigError(f"arch_args: activation of arch {self.name!r}: unknown {self.activation!r}; "
                              f"choose one of {list(ACTIVATIONS)}")
        for name, value in (("width", width), ("stages", stages), ("blocks", blocks)):
            object.__setattr__(self, name, value)

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> _StagedConv:
        _check_keys(cls.name, args, cls.arg_names)
        return cls(**args)

    def to_args(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.arg_names}

    def check_data_shape(self, data_shape: tuple[int, ...]) -> None:
        if len(data_shape) != 3:
            raise ConfigError(f"arch: {self.name} needs images of shape (C, H, W), got data_shape "
                              f"{tuple(data_shape)}; use mlp for tables and vectors")

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *, trust_code: bool = False,
              params_per_dim: int = 1) -> tuple[nn.Module, int, nn.Module]:
        self.check_data_shape(data_shape)
        trunk = ConvEncoder(data_shape, self.width, self.stages, self.blocks, self.activation)
        out_shape = (params_per_dim * data_shape[0], *data_shape[1:])     # P·C output channels, parameter-major
        f = ConvDecoder(out_shape, latent_dim, self.width, self.stages, self.blocks, self.activation)
        return trunk, trunk.out_features, f


@dataclass(frozen=True)
class ConvArch(_StagedConv):
    """``conv``: the stages without residual blocks (defaults: width 32, 2 stages, relu)."""

    name: ClassVar[str] = "conv"
    arg_names: ClassVar[tuple[str, ...]] = ("width", "stages", "activation")
    block_range: ClassVar[tuple[int, int]] = (0, 0)
    width: int = 32
    stages: int = 2
    activation: str = "relu"
    blocks: int = 0


@dataclass(frozen=True)
class ResNetArch(_StagedConv):
    """``resnet``: ``blocks`` residual blocks y = x + W₂ ∗ σ(W₁ ∗ σ(x)) per stage (defaults: width 32,
    2 stages, 1 block, relu)."""

    name: ClassVar[str] = "resnet"
    arg_names: ClassVar[tuple[str, ...]] = ("width", "stages", "blocks", "activation")
    block_range: ClassVar[tuple[int, int]] = (1, MAX_BLOCKS)
    width: int = 32
    stages: int = 2
    activation: str = "relu"
    blocks: int = 1


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

    def build(self, data_shape: tuple[int, ...], latent_dim: int, *, trust_code: bool = False,
              params_per_dim: int = 1) -> tuple[nn.Module, int, nn.Module]:
        return build_custom(self.builder, dict(self.args), data_shape, latent_dim, trust_code=trust_code,
                            params_per_dim=params_per_dim)


#: Built-in architecture names and their classes (``MODULE:FUNCTION`` names user code instead).
ARCHITECTURES: dict[str, type[MLPArch] | type[LinearArch] | type[ConvArch] | type[ResNetArch]] = {
    "mlp": MLPArch, "linear": LinearArch, "conv": ConvArch, "resnet": ResNetArch}


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
