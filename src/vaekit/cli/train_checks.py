"""Checks ``vaekit train`` makes before it trains: the run directory (another process's lock, a run
already there), options that cannot work together (free bits without a per-dimension KL), and the
warning for a KL warm-up longer than training."""

from __future__ import annotations

import sys
from typing import Any

from vaekit.cli import train_options as options
from vaekit.errors import ConfigError
from vaekit.store.layout import RunLayout
from vaekit.store.lock import refuse_if_locked

__all__ = ["warn_long_warmup", "refuse_locked", "refuse_existing", "check_free_bits", "check_objective_model"]


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
    """Free bits need KL(q_x(z_i) || p(z_i)) per latent dimension, which a flow posterior and a model of
    several stochastic layers have none of."""
    from vaekit.models.posteriors import POSTERIORS

    if values["free_bits"] > 0 and not POSTERIORS[model_config.posterior].per_dimension_kl:
        raise ConfigError(f"--free-bits {options.show(values['free_bits'])}: needs a KL per latent dimension, which "
                          f"the {model_config.posterior} posterior has none of (its z_i are dependent under q); "
                          "use --free-bits 0 or another --posterior")
    if values["free_bits"] > 0 and model_config.layers > 1:
        raise ConfigError(f"--free-bits {options.show(values['free_bits'])}: needs a KL per latent dimension, which "
                          f"a model of {model_config.layers} stochastic layers has none of (its prior p(z) is a "
                          "chain, p(z1|z2) p(z2)); use --free-bits 0 or --layers 1")


def check_objective_model(model_config: Any, values: dict[str, Any]) -> None:
    """--gradient stl/dreg stop q's parameters in log q, which needs a Gaussian posterior (diagonal or full)
    of one stochastic layer; --objective btcvae needs one too, and the standard normal prior (its
    dimension-wise terms)."""
    gradient, objective = values["gradient"], values["objective"]
    one_gaussian = model_config.posterior in ("diagonal", "full") and model_config.layers == 1
    if gradient != "reparam" and not one_gaussian:
        raise ConfigError(f"--gradient {gradient}: needs a Gaussian posterior (--posterior diagonal or full) of one "
                          f"stochastic layer, got --posterior {model_config.posterior} with --layers "
                          f"{model_config.layers}; use --gradient reparam")
    if objective == "btcvae" and not (one_gaussian and model_config.prior == "standard"):
        raise ConfigError(f"--objective btcvae: needs --posterior diagonal or full, --prior standard and --layers 1 "
                          f"(the per-dimension densities of q and p), got --posterior {model_config.posterior}, "
                          f"--prior {model_config.prior}, --layers {model_config.layers}")
