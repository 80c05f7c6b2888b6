"""Your own networks for `vaekit train --arch ./my_nets.py:build` (the README's example).

vaekit calls ``build(data_shape, latent_dim, **arch_args)`` with the data's example shape (C, H, W) and the
latent dimension K, and the JSON of ``--arch-args`` as keyword arguments (here ``width``). It returns

* the encoder trunk, called on x of shape (N, C, H, W); vaekit adds the heads g(x) (the mean) and h(x) (the
  variances) on its flattened output, whose size it finds by a dry run;
* the decoder network f, called on z of shape (N, K) and returning (N, C, H, W): the mean of p(x|z).

Importing a file runs its code, so vaekit refuses it without ``--trust-code``.

    vaekit train --arch ./my_nets.py:build --arch-args '{"width": 32}' --trust-code --out runs/conv
"""

from __future__ import annotations

from torch import nn


def build(data_shape: tuple[int, ...], latent_dim: int, width: int = 16) -> tuple[nn.Module, nn.Module]:
    """Two 3x3 convolutions down (the second of stride 2) and one 4x4 transposed convolution up, for
    images (C, H, W) of even H and W."""
    channels, height, breadth = data_shape
    if height % 2 or breadth % 2:
        raise ValueError(f"my_nets.build: needs even image sides, got {height}x{breadth}")
    encoder_trunk = nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten())                                                      # (N, width · H/2 · W/2)
    decoder_net = nn.Sequential(
        nn.Linear(latent_dim, width * (height // 2) * (breadth // 2)), nn.ReLU(),
        nn.Unflatten(1, (width, height // 2, breadth // 2)),               # (N, width, H/2, W/2)
        nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1))       # (N, C, H, W)
    return encoder_trunk, decoder_net
