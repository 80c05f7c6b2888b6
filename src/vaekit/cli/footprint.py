"""The memory one training run needs, estimated before anything is allocated, and the memory there is.

:func:`estimate` builds the model of a configuration on PyTorch's ``meta`` device (shapes without
storage: nothing is allocated, whatever the sizes) and runs one forward pass of the objective there
on a batch of the training shape, counting the bytes of every tensor the pass makes. The estimate is

    parameters:  4 P s      (the weights, their gradients and Adam's two moments; P numbers of s bytes)
    activations: Σ_t |t| s  (every tensor t of the forward pass at B examples × S draws: an upper
                             bound of what autograd keeps for the backward pass)

Where the forward pass cannot run on ``meta`` (a user's network that looks at its values), the
activations are bounded from the model's layers instead: s B S (Σ out_features of the linear layers +
D × values per dimension) × 4. :func:`available_memory` is the smallest of the memory the system
reports available (``MemAvailable``), a cgroup's limit, the address-space limit (``ulimit -v``) less
what the process already maps and, on a GPU, its free memory.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from vaekit.errors import CheckpointError, ConfigError

__all__ = ["Footprint", "estimate", "decoding_bytes", "available_memory", "describe_bytes", "ADAM_COPIES"]

#: Copies of each parameter that training holds: the weights, their gradients and Adam's two moments.
ADAM_COPIES = 4


@dataclass(frozen=True)
class Footprint:
    """The memory estimate of one training process (module docstring), in bytes."""

    parameters: int                           # P, numbers in the model's parameters and buffers
    parameter_bytes: int                      # ADAM_COPIES P s
    activation_bytes: int                     # the forward pass of one step
    largest: str                              # the name of the largest parameter tensor ("" if none)
    largest_shape: tuple[int, ...]

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.activation_bytes


class _CountBytes(TorchDispatchMode):
    """Adds up the bytes of every tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.bytes += t.numel() * t.element_size()
        return out


@contextlib.contextmanager
def _no_validation() -> Iterator[None]:
    """Distributions check their arguments' values, which a meta tensor has none of."""
    old = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(old)


def _meta_model(config: Any, trust_code: bool) -> nn.Module | None:
    from vaekit.models.vae import build_vae

    try:
        with torch.device("meta"):
            return build_vae(config, trust_code=trust_code)
    except (ConfigError, CheckpointError):
        raise
    except Exception:  # noqa: BLE001 - a module that looks at its values while it is made: no estimate
        return None


def _activation_bytes(model: nn.Module, config: Any, batch_size: int, samples: int, objective: str) -> int | None:
    """Bytes of the tensors of one forward pass of ``objective`` on the meta device; None where it cannot run."""
    from vaekit.inference.training_objectives import make_objective
    from vaekit.models.protocol import LatentModel, with_labels

    if not isinstance(model, LatentModel):
        return None
    counter = _CountBytes()
    try:
        with torch.device("meta"), _no_validation(), counter:
            x = torch.empty(batch_size, *config.data_shape)
            y = torch.zeros(batch_size, dtype=torch.long) if config.num_classes else None
            make_objective(objective, samples=samples).terms(with_labels(model, y), x)
    except Exception:  # noqa: BLE001 - a step that looks at values (or sizes beyond int64): the bound below
        return None
    return counter.bytes


def _layer_bound(model: nn.Module, config: Any, batch_size: int, samples: int) -> int:
    """s B S (Σ out_features + D × values per dimension) × 4: the activations bounded from the layers."""
    widths = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    widths += sum(m.out_channels * config.data_dim for m in model.modules()
                  if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)))
    per_draw = widths + config.data_dim * int(getattr(model, "values_per_dim", 1))
    return 4 * batch_size * samples * per_draw * 4


def decoding_bytes(model: nn.Module, count: int) -> int:
    """A bound of the memory decoding ``count`` latent points takes (``vaekit sample``, ``interpolate``):
    s n (Σ out_features of the linear layers + out_channels D of the convolutions + 4 D × values per
    dimension), the 4 copies of the output being the decoder's values, the result, its display and image."""
    data_dim = math.prod(getattr(model, "data_shape", (1,)))
    widths = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    widths += sum(m.out_channels * data_dim for m in model.modules()
                  if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)))
    return 4 * count * (widths + 4 * data_dim * int(getattr(model, "values_per_dim", 1)))


def estimate(config: Any, *, batch_size: int, samples: int = 1, objective: str = "elbo",
             trust_code: bool = False) -> Footprint | None:
    """The memory training the model of ``config`` (a VAEConfig) needs, with batches of ``batch_size``
    examples and ``samples`` draws each (module docstring); None where the model cannot be built on
    the meta device. A configuration error is raised as the real build would raise it."""
    model = _meta_model(config, trust_code)
    if model is None:
        return None
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    numbers = sum(t.numel() for t in tensors.values())
    size = 4                                                   # float32 weights (bf16 and fp16 autocast keep them)
    largest = max(tensors, key=lambda k: tensors[k].numel(), default="")
    activations = _activation_bytes(model, config, batch_size, samples, objective)
    if activations is None:
        activations = _layer_bound(model, config, batch_size, samples)
    return Footprint(numbers, ADAM_COPIES * numbers * size, activations, largest,
                     tuple(tensors[largest].shape) if largest else ())


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            used = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def _address_space_available() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = 0
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    mapped = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - mapped)


def available_memory(device: torch.device | str = "cpu") -> tuple[int, str] | None:
    """(bytes, where the figure comes from) of the memory this process may still use on ``device``:
    the smallest of the limits in the module docstring; None where no figure is known. Processes that
    share the machine under torchrun (``LOCAL_WORLD_SIZE``) share its memory equally."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    found = [(v, what) for v, what in ((_meminfo_available(), "available"),
                                       (_cgroup_available(), "left under the cgroup's limit"),
                                       (_address_space_available(), "left under the address-space limit"))
             if v is not None]
    if not found:
        return None
    value, what = min(found)
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    if ranks > 1:
        value, what = value // ranks, f"{what}, shared by {ranks} processes"
    return value, what


def describe_bytes(n: float) -> str:
    """``n`` bytes as a short figure in decimal units (``12.3 GB``)."""
    if n < 1000:
        return f"{n:.0f} bytes"
    power = min(int(math.log10(n) // 3), 6)
    return f"{n / 1000 ** power:.1f} {('kB', 'MB', 'GB', 'TB', 'PB', 'EB')[power - 1]}"
