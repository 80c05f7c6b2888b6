"""Checks ``vaekit train`` makes before it trains: the run directory (another process's lock, a run
already there), options that cannot work together (free bits where they would not floor a KL), and the
warning for a KL warm-up longer than training."""

from __future__ import annotations

import sys
from typing import Any

from vaekit.cli import train_options as options
from vaekit.errors import ConfigError
from vaekit.store.layout import RunLayout
from vaekit.store.lock import refuse_if_locked

__all__ = ["warn_long_warmup", "refuse_locked", "refuse_existing", "check_free_bits"]


def warn_long_warmup(values: dict[str, Any]) -> None:
    """One line on stderr when the KL warm-up outlasts training: β_t = β min(1, t / (W steps_per_epoch))
    then ends at about β N / W instead of β."""
    warmup, epochs, beta = values["kl_warmup"], values["epochs"], values["beta"]
    if warmup > epochs:
        print(f"vaekit train: warning: --kl-warmup {warmup:g} is longer than --epochs {epochs}: the KL weight "
              f"reaches only about {beta * epochs / warmup:.3g} of --beta {beta:g} by the end", file=sys.stderr)


def refuse_locked(layout: RunLayout) -> None:
    from vaekit.training import distributed

    if distributed.env_rank() == 0:                   # under torchrun, rank 0 is the one writer
        refuse_if_locked(layout.root, option="--out ")


def refuse_existing(layout: RunLayout) -> None:
    if layout.config.exists() or layout.checkpoint.parent.exists():
        raise ConfigError(f"--out {layout.root}: already holds a run; pass --resume to continue it or choose "
                          "another directory")


def check_free_bits(model_config: Any, values: dict[str, Any]) -> None:
    """Free bits floor the KL of each stochastic layer (layers > 1) or of each latent dimension where the KL
    is their sum (:meth:`~vaekit.models.config.VAEConfig.free_bits_groups`); anything else is refused."""
    if values["free_bits"] > 0:
        try:
            model_config.free_bits_groups()
        except ConfigError as exc:
            raise ConfigError(f"--free-bits {options.show(values['free_bits'])}: "
                              f"{str(exc).partition(': ')[2]}") from None
