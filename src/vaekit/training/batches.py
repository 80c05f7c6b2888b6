"""Where each training step's examples and random numbers come from (used by :func:`vaekit.training.loop.fit`).

An epoch visits every training example exactly once, in an order drawn from the epoch's
permutation generator: a uniform permutation for examples held in memory, the block-shuffled
order of :meth:`vaekit.data.stream.NpyStream.block_order` for a streamed ``.npy`` file. Step b
takes the global batch of positions ``order[b B : (b+1) B]`` (the last one may be smaller).

With R data-parallel ranks, rank r takes the r-th of R contiguous parts of the global batch
(:func:`vaekit.training.distributed.shard`). The random numbers of a step are drawn for the *global*
batch from a generator every rank seeds alike, and each rank keeps its part's share:

* U[0, 1) draws for the preprocessing's augmentation (binarisation, dequantisation), and
* the standard-normal ε of the reparameterisation z = g(x) + L ε, shape (S, B, *noise_shape)
  (the model's ``noise_shape``),

so a step's examples, augmentations and ε are the same whatever the number of ranks, and so is
the update, up to float rounding in the gradient sums. A rank whose part is empty (a last batch
smaller than R) repeats the batch's first example with weight 0: it contributes nothing, and
keeps DDP's collective calls in step.

A conditional model's labels (N,) are held on the device beside the examples and gathered by the same
positions, so that every example keeps its label on any number of ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.data import Preprocessing
from vaekit.training.distributed import shard

__all__ = ["LocalBatch", "BatchPlan"]


@dataclass(frozen=True)
class LocalBatch:
    """This rank's part of one step: augmented examples (b, *shape) on the device, the ε draws
    (S, b, *noise_shape) or None, ``weight`` (1, or 0 for a stand-in), the global batch size and the
    examples' labels (b,) (a conditional model's; else None)."""

    x: Tensor
    eps: Tensor | None
    weight: float
    global_size: int
    y: Tensor | None = None


class BatchPlan:
    """The batches of every epoch for one rank.

    ``examples``: a prepared tensor (N, *shape) (moved to ``device`` once) or a
    :class:`vaekit.data.stream.NpyStream` of raw rows (read, prepared and moved batch by batch).
    ``latent``: (S, noise_shape, dtype) to draw ε for, or None to let the model draw its own.
    ``labels``: the examples' labels (N,) (in memory only), gathered with them, or None.
    """

    def __init__(self, examples, preprocessing: Preprocessing, batch_size: int, device: torch.device, *,
                 rank: int = 0, world: int = 1, latent: tuple[int, tuple[int, ...], torch.dtype] | None = None,
                 labels: Tensor | None = None):
        self.streamed = not isinstance(examples, Tensor)
        self.examples = examples if self.streamed else examples.to(device)
        self.preprocessing = preprocessing
        self.n = len(examples)
        self.batch_size = batch_size
        self.device = device
        self.rank, self.world = rank, world
        self.latent = latent
        self.labels = None if labels is None else labels.to(device)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self._order: Tensor | None = None

    def start_epoch(self, generator: torch.Generator) -> None:
        """Draw the epoch's order of examples from ``generator`` (a CPU generator)."""
        if self.streamed:
            self._order = self.examples.block_order(generator)
        else:
            self._order = torch.randperm(self.n, generator=generator).to(self.device)

    def _rows(self, positions: Tensor) -> Tensor:
        if not self.streamed:
            return self.examples.index_select(0, positions)     # several times faster than x[positions] on CPU
        raw = self.examples.read(positions.numpy())
        return self.preprocessing.prepare(raw).to(self.device, non_blocking=True)

    def batch(self, step: int, generator: torch.Generator) -> LocalBatch:
        """Step ``step`` of the epoch (0-based); ``generator`` (on the device) draws the randomness."""
        if self._order is None:
            raise RuntimeError("BatchPlan.batch: call start_epoch first")
        start = step * self.batch_size
        size = min(self.n, start + self.batch_size) - start
        lo, hi = shard(size, self.world, self.rank)
        weight = 1.0
        if hi == lo:                                        # nothing left for this rank: a weight-0 stand-in
            lo, hi, weight = 0, 1, 0.0
        positions = self._order[start + lo:start + hi]
        x = self._rows(positions)
        y = None if self.labels is None else self.labels.index_select(0, positions)
        if self.preprocessing.random:
            u = torch.rand((size, *x.shape[1:]), generator=generator, device=self.device, dtype=x.dtype)
            x = self.preprocessing.augment(x, uniform=u[lo:hi])
        eps = None
        if self.latent is not None:
            samples, shape, dtype = self.latent
            eps = torch.randn((samples, size, *shape), generator=generator, device=self.device, dtype=dtype)[:, lo:hi]
        return LocalBatch(x, eps, weight, size, y)
