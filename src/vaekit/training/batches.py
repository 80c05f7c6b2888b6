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

:class:`Prefetcher` draws step b+1's batch in a worker thread while step b runs (on the CPU): the same
draws from the same generator in the same order, so training is the same bit for bit; only the batch's
time is hidden behind the step's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.data import Preprocessing
from vaekit.errors import ConfigError
from vaekit.training.distributed import shard

__all__ = ["LocalBatch", "BatchPlan", "Prefetcher", "background_batches"]


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


def background_batches(device: torch.device) -> bool:
    """Whether :class:`Prefetcher` draws batches in a worker thread: on the CPU, unless the environment
    sets ``VAEKIT_BACKGROUND_BATCHES=0`` (``1``, the default, or ``0``). On a GPU the step's kernels run
    asynchronously already, and a batch is drawn as its step begins."""
    value = os.environ.get("VAEKIT_BACKGROUND_BATCHES", "1").strip() or "1"
    if value not in ("0", "1"):
        raise ConfigError(f"VAEKIT_BACKGROUND_BATCHES: expected 0 or 1, got {value!r}")
    return value == "1" and device.type == "cpu"


class Prefetcher:
    """The batches of steps ``first`` .. ``last - 1`` of one epoch of ``plan``, drawn from ``generator``.

    ``background=True``: a worker thread draws batch b+1 (gathers its rows, draws the augmentation's
    uniforms and the ε) while the caller runs step b. The generator serves the same batches in the same
    order as when every batch is drawn as its step begins, and nothing else uses it meanwhile (a step's own
    draws come from torch's global RNG), so the batches are identical; on the CPU this hides the batch's
    time (the uniforms come from a serial generator) behind the step's, which leaves a core idle in
    its smaller operations. ``background=False`` draws each batch when it is asked for.

    :meth:`steps` yields (b, batch, state): ``state`` (with ``states=True``, else None) is the generator's
    state after batch b's draws, i.e. where batch b+1's begin: what a checkpoint taken after step b
    must hold. It is taken before batch b+1 is drawn, so it is never read while the worker draws.
    An error in the worker (a streamed file that fails to read) is raised where its batch is asked for.
    Use as a context manager: leaving it waits for the worker's draw in flight and stops the thread.
    """

    def __init__(self, plan: BatchPlan, generator: torch.Generator, *, background: bool, states: bool = False):
        self.plan, self.generator, self.states = plan, generator, states
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vaekit-batches") if background else None
        self._pending: Future[LocalBatch] | None = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw(self, step: int) -> Future[LocalBatch]:
        assert self._pool is not None
        return self._pool.submit(self.plan.batch, step, self.generator)

    def steps(self, first: int, last: int) -> Iterator[tuple[int, LocalBatch, Tensor | None]]:
        """(b, batch b, the generator's state after its draws) for b = first .. last - 1."""
        if first >= last:
            return
        if self._pool is not None:
            self._pending = self._draw(first)
        for b in range(first, last):
            if self._pending is not None:
                pending, self._pending = self._pending, None
                local = pending.result()
            else:
                local = self.plan.batch(b, self.generator)
            state = self.generator.get_state() if self.states else None
            if self._pool is not None and b + 1 < last:
                self._pending = self._draw(b + 1)
            yield b, local, state

    def close(self) -> None:
        """Wait for the draw in flight (its batch unused, its error dropped) and stop the worker."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
