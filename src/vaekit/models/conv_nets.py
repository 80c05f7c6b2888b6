"""Convolutional function families for images (C, H, W) of any size: the encoder trunk of g, h and the
decoder network f of the ``conv`` and ``resnet`` architectures (:mod:`vaekit.models.architectures`).

Every down-sampling stage is a 3×3 convolution with stride 2 and padding 1, which maps a side of n
pixels to floor((n + 2·1 − 3) / 2) + 1 = ⌈n / 2⌉ ≥ 1, so any size, square or not, odd or even, goes
through (:func:`down_sizes`). Stage i (1..S) has c_i = width · 2^(i−1) channels (c_0 = C). The decoder
mirrors it with 3×3 transposed convolutions of stride 2 and padding 1, which map n to
2n − 1 + p (p the output padding); the decoder takes p = n_{i−1} − (2 n_i − 1) ∈ {0, 1} per axis
from the encoder's recorded sizes, so its output has exactly the input's (H, W) by construction.

* encoder trunk  x (B, C, H, W) ↦ (B, c_S · h_S · w_S), (h_S, w_S) = (⌈H / 2^S⌉, ⌈W / 2^S⌉);
* decoder f      z (N, K) ↦ (N, C, H, W): a linear layer to (c_S, h_S, w_S), then the stages reversed;
  its output is the mean of a Gaussian decoder or the logits of a Bernoulli one (no final activation).

With ``blocks`` > 0 (``resnet``) each stage also has that many residual blocks
y = x + W₂ ∗ σ(W₁ ∗ σ(x)) (3×3 convolutions, same size and channels): in the encoder after the
stage's down-sampling, in the decoder before its up-sampling. No batch normalisation: a batch
statistic would couple the examples of a batch (and the ranks of a data-parallel run).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vaekit.errors import ConfigError, ShapeError
from vaekit.models.networks import ACTIVATIONS
from vaekit.ops.linear import Linear

__all__ = ["down_sizes", "stage_channels", "ResidualBlock", "ConvEncoder", "ConvDecoder"]


def down_sizes(height: int, width: int, stages: int) -> list[tuple[int, int]]:
    """[(H, W), (⌈H/2⌉, ⌈W/2⌉), …]: the spatial size before stage 1 and after each of ``stages`` stages
    (``stages + 1`` pairs); a stride-2, padding-1, 3×3 convolution maps a side n to ⌈n / 2⌉."""
    out = [(int(height), int(width))]
    for _ in range(stages):
        h, w = out[-1]
        out.append(((h + 1) // 2, (w + 1) // 2))
    return out


def stage_channels(in_channels: int, width: int, stages: int) -> list[int]:
    """[c_0, c_1, …, c_S] = [C, width, 2·width, …, width · 2^(S−1)]."""
    return [int(in_channels)] + [int(width) * 2**i for i in range(stages)]


def _check_image_shape(data_shape: Sequence[int], what: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in data_shape)
    if len(shape) != 3:
        raise ConfigError(f"arch: {what} needs images of shape (C, H, W), got data_shape {shape}")
    return shape


class ResidualBlock(nn.Module):
    """y = x + W₂ ∗ σ(W₁ ∗ σ(x)): two 3×3 convolutions (padding 1) keeping (B, channels, h, w)."""

    def __init__(self, channels: int, activation: str):
        super().__init__()
        self.act = ACTIVATIONS[activation]()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class ConvEncoder(nn.Module):
    """The encoder trunk: x (B, C, H, W) ↦ features (B, ``out_features``), ``out_features`` = c_S · h_S · w_S.

    ``sizes`` records the spatial sizes [(H, W), …, (h_S, w_S)] (:func:`down_sizes`) and ``channels`` the
    channels [C, c_1, …, c_S], which :class:`ConvDecoder` mirrors."""

    def __init__(self, data_shape: Sequence[int], width: int, stages: int, blocks: int = 0,
                 activation: str = "relu"):
        super().__init__()
        c, h, w = _check_image_shape(data_shape, "a convolutional encoder")
        self.data_shape = (c, h, w)
        self.sizes = down_sizes(h, w, stages)
        self.channels = stage_channels(c, width, stages)
        layers: list[nn.Module] = []
        for i in range(stages):
            layers += [nn.Conv2d(self.channels[i], self.channels[i + 1], 3, stride=2, padding=1),
                       ACTIVATIONS[activation]()]
            layers += [ResidualBlock(self.channels[i + 1], activation) for _ in range(blocks)]
        self.layers = nn.Sequential(*layers)
        last_h, last_w = self.sizes[-1]
        self.out_features = self.channels[-1] * last_h * last_w

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise ShapeError(f"conv encoder: input of shape {tuple(x.shape)} is not (B, *{self.data_shape})")
        return self.layers(x).flatten(1)                                  # (B, c_S, h_S, w_S) -> (B, H_trunk)


class ConvDecoder(nn.Module):
    """f: z (N, latent_dim) ↦ (N, C, H, W). A linear layer and σ to (c_S, h_S, w_S), then for stage
    i = S, …, 1: ``blocks`` residual blocks and a 3×3 stride-2 transposed convolution c_i → c_{i−1} whose
    output padding p = n_{i−1} − (2 n_i − 1) per axis gives the encoder's size n_{i−1} exactly; σ between
    stages, none after the last (f is a mean or logits)."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int, width: int, stages: int, blocks: int = 0,
                 activation: str = "relu"):
        super().__init__()
        c, h, w = _check_image_shape(data_shape, "a convolutional decoder")
        self.data_shape = (c, h, w)
        sizes = down_sizes(h, w, stages)
        channels = stage_channels(c, width, stages)
        last_h, last_w = sizes[-1]
        self.latent_dim = int(latent_dim)
        layers: list[nn.Module] = [Linear(latent_dim, channels[-1] * last_h * last_w), ACTIVATIONS[activation](),
                                   nn.Unflatten(1, (channels[-1], last_h, last_w))]
        for i in range(stages, 0, -1):
            layers += [ResidualBlock(channels[i], activation) for _ in range(blocks)]
            (h_out, w_out), (h_in, w_in) = sizes[i - 1], sizes[i]
            padding = (h_out - (2 * h_in - 1), w_out - (2 * w_in - 1))
            if not all(p in (0, 1) for p in padding):       # cannot happen with sizes from down_sizes
                raise ShapeError(f"conv decoder: no output padding takes {(h_in, w_in)} to {(h_out, w_out)}")
            layers.append(nn.ConvTranspose2d(channels[i], channels[i - 1], 3, stride=2, padding=1,
                                             output_padding=padding))
            if i > 1:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ShapeError(f"conv decoder: latent of shape {tuple(z.shape)} is not (N, {self.latent_dim})")
        return self.layers(z)                                             # (N, C, H, W)
