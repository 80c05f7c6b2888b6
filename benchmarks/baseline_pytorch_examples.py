"""BASELINE (not vaekit): the classic PyTorch-examples VAE training loop, re-written from memory.

This mirrors the structure of github.com/pytorch/examples ``vae/main.py`` -- it is NOT vaekit code
and vaekit does not use it. It exists only as a speed reference for ``benchmarks/speed_training.py``.

* model: 784-400-20 MLP, ReLU; fc1 784->400 (here ``enc[0]``), fc21/fc22 400->20 (mean, log-variance),
  fc3 20->400 (``dec[0]``), fc4 400->784, sigmoid output (other widths and activations by argument);
* loss: ``binary_cross_entropy(recon, x, reduction='sum')`` + KL(q(z|x) || N(0, I)) summed over the batch;
* Adam, lr 1e-3, batch 128;
* data: a ``DataLoader(TensorDataset(x), batch_size=128, shuffle=True)`` over the MNIST training
  images scaled to [0, 1] (grey levels used as Bernoulli targets, no binarisation -- as in the
  original, which feeds ``ToTensor()`` images). The original reads images through torchvision's
  ``datasets.MNIST`` + ``ToTensor()`` (a PIL conversion per image); here the images are already
  one tensor, which makes the baseline *faster* than the original, not slower.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCH_SIZE = 128
LR = 1e-3
WARMUP_STEPS = 5


class ExamplesVAE(nn.Module):
    """The pytorch/examples VAE: 784-400-20, ReLU, sigmoid decoder output. ``hidden``, ``latent`` and
    ``activation`` give the same loop other MLPs (e.g. (200, 200), 50, torch.tanh: the IWAE paper's
    one-layer model): the encoder's hidden layers, then fc21/fc22, the decoder's in reverse."""

    def __init__(self, hidden: tuple[int, ...] = (400,), latent: int = 20, activation=F.relu) -> None:
        super().__init__()
        self.act = activation
        widths = [784, *hidden]
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=False))
        self.fc21 = nn.Linear(widths[-1], latent)
        self.fc22 = nn.Linear(widths[-1], latent)
        back = [latent, *reversed(hidden)]
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip(back[:-1], back[1:], strict=False))
        self.fc4 = nn.Linear(back[-1], 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for layer in self.enc:
            h = self.act(layer(h))
        return self.fc21(h), self.fc22(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in self.dec:
            h = self.act(layer(h))
        return torch.sigmoid(self.fc4(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def _batches(loader: DataLoader):
    """Endless iteration over the loader (a new shuffled epoch whenever one ends)."""
    while True:
        yield from loader


def run(x_train: torch.Tensor, steps: int, *, seed: int = 0, hidden: tuple[int, ...] = (400,), latent: int = 20,
        activation=F.relu) -> float:
    """Train a fresh baseline model (``ExamplesVAE(hidden, latent, activation)``) for ``WARMUP_STEPS`` +
    ``steps`` steps on ``x_train`` (float images in [0, 1], any shape with 784 values per example); return
    the training speed in examples/second over the ``steps`` timed steps (data loading included, warm-up
    excluded)."""
    torch.manual_seed(seed)
    model = ExamplesVAE(hidden, latent, activation)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x_train), batch_size=BATCH_SIZE, shuffle=True)
    it = _batches(loader)
    examples = 0
    t0 = 0.0
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            examples = 0
            t0 = time.perf_counter()
        (data,) = next(it)
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        loss = loss_function(recon, data, mu, logvar)
        loss.backward()
        optimizer.step()
        examples += data.shape[0]
    return examples / (time.perf_counter() - t0)


if __name__ == "__main__":  # tiny smoke run on random data
    print(f"{run(torch.rand(2048, 1, 28, 28), 20):.0f} examples/s")
