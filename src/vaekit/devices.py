"""The one resolver of device names: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""

from __future__ import annotations

import torch

from vaekit.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device, *, option: str = "device") -> torch.device:
    """The torch device ``name`` means on this machine: ``auto`` is the GPU when there is one, else
    the CPU; ``cuda`` is the current CUDA device. A name that is not a device, or a device this
    machine lacks, is a ConfigError naming ``option``."""
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{option}: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option}: {name!r} requested but CUDA is not available on this machine")
        if device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"{option}: {name!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError):
            raise ConfigError(f"{option}: {name!r} is not available on this machine") from None
    return device
