"""Checks ``vaekit train`` makes before it trains: the run directory (another process's lock, a run
already there), options that cannot work together (free bits where they would not floor a KL), the
memory the sizes the options give need (:func:`check_memory`), and the warning for a KL warm-up longer
than training."""

from __future__ import annotations

import sys
from typing import Any

from vaekit.cli import train_options as options
from vaekit.errors import ConfigError
from vaekit.store.layout import RunLayout
from vaekit.store.lock import refuse_if_locked

__all__ = ["warn_long_warmup", "refuse_locked", "refuse_existing", "check_free_bits", "check_objective_model",
           "check_memory", "rank_values"]

#: Options that may differ between the ranks of one torchrun job: where each finds its data and writes, its
#: device, its progress bar.
PER_RANK = ("device", "data_dir", "download", "out", "no_progress")


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


def _size_option(model_config: Any, values: dict[str, Any], name: str, shape: tuple[int, ...]) -> str:
    """The option that sets the size of the parameter tensor ``name`` (of ``shape``)."""
    if name.startswith("prior_module.layers."):
        return "--layer-args"                         # the layers above the first: their sizes and widths
    if name.startswith("prior_module."):
        return "--prior-args"                         # components, pseudo-inputs
    if name.startswith(("encoder.steps.", "encoder.context.")):
        return "--posterior-args"                     # the flow's steps
    if shape and model_config.latent_dim == max(shape):
        return "--latent-dim"
    return "--hidden" if model_config.arch == "mlp" else "--arch-args"


def check_memory(model_config: Any, values: dict[str, Any], *, trust_code: bool = False, probe: bool = False) -> None:
    """A ConfigError naming the option at fault when training the model of ``model_config`` with the
    options' batch size and samples needs more memory than the device has available
    (:mod:`vaekit.cli.footprint`, estimated on the meta device: nothing is allocated). A ``probe``
    configuration (data of shape 1×1×1, before the data are read) of a user's --arch is not built."""
    from vaekit.models.custom import is_custom_arch

    if probe and is_custom_arch(model_config.arch):
        return
    import math
    import os

    import torch

    from vaekit.cli.footprint import available_memory, describe_bytes, estimate

    world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    batch, samples = math.ceil(values["batch_size"] / world), values["samples"]   # one process's share
    found = estimate(model_config, batch_size=batch, samples=samples, objective=values["objective"],
                     trust_code=trust_code)
    device = torch.device(options.train_device(values["device"]))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))
    have = available_memory(device) if found is not None else None
    if found is None or have is None or found.total_bytes <= have[0]:
        return
    draws = f"{batch} examples × {samples} draws" if samples > 1 else f"{batch} examples"
    alone = estimate(model_config, batch_size=1, samples=1, objective=values["objective"], trust_code=trust_code)
    if alone is None or alone.total_bytes > have[0]:  # not even one example fits: the model's sizes are at fault
        option = _size_option(model_config, values, found.largest, found.largest_shape)
    else:                                             # the model fits, a step of the batch does not
        option = f"--batch-size {values['batch_size']}" + (f", --samples {samples}" if samples > 1 else "")
    shape = "×".join(str(n) for n in found.largest_shape)
    raise ConfigError(f"{option}: training needs about {describe_bytes(found.total_bytes)}: the model "
                      f"{describe_bytes(found.parameter_bytes)} ({found.parameters:,} parameters with their gradients "
                      f"and Adam's moments; the largest, {found.largest}, is {shape}) and the activations of a step "
                      f"of {draws} {describe_bytes(found.activation_bytes)}; more than the "
                      f"{describe_bytes(have[0])} of memory {have[1]} on {device}; use smaller sizes")


def rank_values(values: dict[str, Any]) -> dict[str, str]:
    """The options every rank of a torchrun job must agree on, as the user writes them (flag -> value)."""
    return {options.flag(name): options.show(value) for name, value in values.items()
            if name in options.BY_NAME and name not in PER_RANK}
