"""Data-parallel training across processes with ``torch.distributed`` (started by ``torchrun``).

``torchrun --nproc-per-node R -m vaekit train ...`` starts R processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each; :func:`init_from_env`
joins them into one process group (backend ``nccl`` for CUDA devices, ``gloo`` for the CPU) and
:func:`vaekit.training.loop.fit` then trains with :class:`torch.nn.parallel.DistributedDataParallel`:

* every step's global batch of B examples is split into R contiguous parts (sizes differ by at
  most one, :func:`shard`), one per rank;
* each rank's loss is its part's sum of per-example losses times R / B, and DDP averages the
  gradients over the ranks, so the update is the one a single process makes with the whole batch;
* the metrics are summed over the ranks; only rank 0 (:func:`is_main`) writes files.

Without torchrun (or with ``WORLD_SIZE=1``) every function here is the single-process identity.

Stalls: every collective (and joining the group) waits at most ``timeout_s`` of :func:`init_from_env`
(``vaekit train --dist-timeout``, default :data:`DEFAULT_TIMEOUT_S`) for the other ranks; then it
fails on the ranks still waiting, which end, and torchrun stops (or restarts) the group. In vaekit
the longest legitimate wait between two collectives is rank 0 writing the epoch's files (the model,
metrics and checkpoint: seconds) or a rank loading its data before the first one; the evaluation and
figures at the end run after the group is left, so they never count against it.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable

import torch
import torch.distributed as dist

from vaekit.errors import ConfigError

#: Seconds a rank waits for the others at a collective before it fails (``--dist-timeout``):
#: torch's own default for NCCL (10 minutes) rather than its 30 minutes for gloo. Long enough for any
#: rank to load its data and for rank 0 to write an epoch's files on a slow shared file system;
#: short enough that a frozen rank (a hung GPU, a stopped process) frees the others within minutes.
DEFAULT_TIMEOUT_S = 600.0

__all__ = ["DEFAULT_TIMEOUT_S", "init_from_env", "is_distributed", "rank", "world_size", "is_main", "backend_for",
           "shard", "global_mean", "all_reduce_sum", "broadcast_flag", "barrier", "shutdown", "launched_by_torchrun",
           "env_rank", "gather_texts", "check_agreement", "RankDisagreement"]


class RankDisagreement(ConfigError):
    """The ranks were started with different configurations (:func:`check_agreement`); ``rank`` is this
    process's rank, so that rank 0 alone needs to say it."""

    def __init__(self, message: str, rank: int) -> None:
        super().__init__(message)
        self.rank = rank


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1") or "1") > 1


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device_name: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Join the process group torchrun describes (no-op for a single process); return the device
    this rank uses: ``device_name``, or ``cuda:LOCAL_RANK`` when it names CUDA without an index.
    ``timeout_s``: how long a collective waits for the other ranks before it fails."""
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ConfigError(f"dist_timeout: must be a positive number of seconds, got {timeout_s!r}")
    if not launched_by_torchrun() or not dist.is_available():
        return device_name
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device_name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: rank with LOCAL_RANK={local_rank} needs {device}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); start at most that many processes "
                              "per node")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), timeout=datetime.timedelta(seconds=timeout_s))
    return str(device)


def env_rank() -> int:
    """This process's rank as torchrun's environment gives it (``RANK``), before the group is
    joined; 0 without torchrun."""
    if not launched_by_torchrun():
        return 0
    try:
        return int(os.environ.get("RANK", "0") or "0")
    except ValueError:
        return 0


def is_distributed() -> bool:
    """Whether a process group of more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints, metrics, figures and logs."""
    return rank() == 0


def shard(count: int, parts: int, index: int) -> tuple[int, int]:
    """The half-open range [lo, hi) of part ``index`` when ``count`` items are split into ``parts``
    contiguous parts whose sizes differ by at most one (the first ``count % parts`` get one more),
    as :func:`torch.tensor_split` splits them. Parts may be empty when count < parts."""
    base, extra = divmod(count, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place (no-op for a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's value of ``flag`` on every rank (so that all ranks take the same branch)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if is_distributed():
        dist.barrier()


def shutdown(*, wait: bool = True) -> None:
    """Leave the process group, if one was joined. With ``wait`` (a normal end) first wait until
    every rank gets here, so that no rank tears its connections down while a peer still uses them;
    after an error, leave at once (the peers may never arrive)."""
    if dist.is_available() and dist.is_initialized():
        if wait and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def global_mean(weight: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A :data:`~vaekit.prob.distributions.Reduction` over the global batch: the mean of a statistic
    over every rank's elements (a weight-0 stand-in contributes nothing), as one process computes it.
    The optimal decoder variance c* takes it, so that c* does not depend on the number of ranks."""
    def reduce(values: torch.Tensor) -> torch.Tensor:
        total = torch.stack([values.sum(dtype=torch.float64),
                             torch.tensor(float(values.numel()), dtype=torch.float64, device=values.device)]) * weight
        all_reduce_sum(total)
        return (total[0] / total[1]).to(values.dtype)
    return reduce


def gather_texts(text: str, device: torch.device | str = "cpu") -> list[str]:
    """Every rank's ``text``, in rank order (``[text]`` for a single process), sent as UTF-8 bytes in
    tensors (no pickling, unlike ``all_gather_object``)."""
    if not is_distributed():
        return [text]
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64, device=device))
    longest = max(int(n.item()) for n in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:data.numel()] = data
    parts = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return [bytes(p[:int(n.item())].tolist()).decode("utf-8") for p, n in zip(parts, sizes, strict=True)]


def check_agreement(values: dict[str, str], device: torch.device | str = "cpu") -> None:
    """Compare ``values`` (name -> text) with rank 0's; the first name whose text differs on some rank
    is a :class:`RankDisagreement` on every rank, ``NAME: rank R has A, rank 0 has B``. Without a
    process group, nothing to compare."""
    if not is_distributed():
        return
    import json

    texts = gather_texts(json.dumps(values, sort_keys=True), device)
    first = json.loads(texts[0])
    for other, text in enumerate(texts[1:], 1):
        theirs = json.loads(text)
        for name in sorted(set(first) | set(theirs)):
            if first.get(name) != theirs.get(name):
                raise RankDisagreement(f"{name}: rank {other} has {theirs.get(name)}, rank 0 has {first.get(name)}; "
                                       "every rank must be started with the same configuration", rank())
