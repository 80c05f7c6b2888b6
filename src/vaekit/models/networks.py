"""Function families F (decoder f), G and H (encoder g, h): multilayer perceptrons and affine maps.

Any ``nn.Module`` can take their place (see :class:`vaekit.models.encoders.GaussianEncoder` and
:mod:`vaekit.models.decoders`); these are the ones the configuration and the command line build.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from vaekit.errors import ConfigError, ShapeError
from vaekit.ops.linear import FUSED_ACTIVATIONS, Linear, linear

__all__ = ["ACTIVATIONS", "MLP", "Affine", "Flatten"]

#: Activation names accepted by :class:`MLP` (the one name→class table of this module).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


def _flatten_trailing(x: Tensor, in_shape: tuple[int, ...]) -> Tensor:
    """(*lead, *in_shape) -> (*lead, prod(in_shape)); a ShapeError names both shapes otherwise."""
    n = len(in_shape)
    if tuple(x.shape[x.ndim - n:]) != in_shape or x.ndim < n:
        raise ShapeError(f"input of shape {tuple(x.shape)} does not end with the expected shape {in_shape}")
    return x.reshape(*x.shape[: x.ndim - n], math.prod(in_shape))


class Flatten(nn.Module):
    """Identity on the values: (*lead, *in_shape) -> (*lead, prod(in_shape)), shape-checked."""

    def __init__(self, in_shape: Sequence[int]):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_features = math.prod(self.in_shape)

    def forward(self, x: Tensor) -> Tensor:
        return _flatten_trailing(x, self.in_shape)


class MLP(nn.Module):
    """x ↦ W_L σ(… σ(W_1 x + b_1) …) + b_L, with the input's trailing ``in_shape`` flattened.

    ``hidden`` lists the hidden widths; ``out_features=None`` ends on the last hidden layer (with
    its activation), which is how an encoder trunk shared by g and h is built.
    """

    def __init__(self, in_shape: int | Sequence[int], hidden: Sequence[int], out_features: int | None,
                 activation: str = "tanh"):
        super().__init__()
        in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation: unknown {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        widths = [int(w) for w in hidden]
        if any(w <= 0 for w in widths) or any(s <= 0 for s in in_shape):
            raise ConfigError(f"MLP: sizes must be positive, got input {in_shape} and hidden {widths}")
        if out_features is None and not widths:
            raise ConfigError("MLP: a trunk (out_features=None) needs at least one hidden layer")
        self.flatten = Flatten(in_shape)
        layers: list[nn.Module] = []
        width = self.flatten.out_features
        for w in widths:
            layers += [Linear(width, w), ACTIVATIONS[activation]()]
            width = w
        if out_features is not None:
            layers.append(Linear(width, int(out_features)))
            width = int(out_features)
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        """The layers in order; a :class:`Linear` followed by a tanh or ReLU runs as one fused
        :func:`~vaekit.ops.linear.linear` call (the same values; hooks on that activation module
        are not called)."""
        h = self.flatten(x)
        layers = list(self.layers)
        i = 0
        while i < len(layers):
            layer = layers[i]
            fused = _fusable_activation(layers[i + 1]) if i + 1 < len(layers) and type(layer) is Linear else None
            if fused is not None and isinstance(layer, Linear):
                h = linear(h, layer.weight, layer.bias, fused)
                i += 2
            else:
                h = layer(h)
                i += 1
        return h


def _fusable_activation(module: nn.Module) -> str | None:
    """The :data:`~vaekit.ops.linear.FUSED_ACTIVATIONS` name of ``module``, or None."""
    for name, cls in FUSED_ACTIVATIONS.items():
        if type(module) is cls and not getattr(module, "inplace", False):
            return name
    return None


class Affine(nn.Module):
    """f(z) = W z + b with W of shape (out_features, in_features): the probabilistic-PCA decoder."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = Linear(in_features, out_features)
        self.out_features = out_features

    @property
    def weight(self) -> Tensor:
        """W, shape (out_features, in_features)."""
        return self.linear.weight

    @property
    def bias(self) -> Tensor:
        """b, shape (out_features,)."""
        return self.linear.bias

    def forward(self, z: Tensor) -> Tensor:
        if z.shape[-1] != self.linear.in_features:
            raise ShapeError(f"Affine: latent of shape {tuple(z.shape)} does not end with {self.linear.in_features}")
        return self.linear(z)
