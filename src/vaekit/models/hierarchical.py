"""Models with several stochastic layers (``layers`` > 1 in a configuration)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaekit.errors import ConfigError

__all__ = ["MAX_LAYERS", "check_layer_args"]

#: The most stochastic layers a configuration may name.
MAX_LAYERS = 8


def check_layer_args(layers: int, args: Mapping[str, Any] | None, latent_dim: int) -> dict[str, Any]:
    """``layer_args`` checked and completed for ``layers`` stochastic layers."""
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"layer_args: expected a JSON object of arguments, got {args!r}")
    if layers == 1:
        if args:
            raise ConfigError(f"layer_args: apply to layers > 1 only, got {sorted(args)} with layers 1")
        return {}
    raise ConfigError(f"layers: {layers} stochastic layers are not built yet")
