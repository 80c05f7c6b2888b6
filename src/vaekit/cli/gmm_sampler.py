"""``vaekit sample --sampler gmm``: samples decoded from a Gaussian mixture fitted on the aggregate
posterior of the run's training split (:mod:`vaekit.inference.latent_mixture`) instead of the prior."""

from __future__ import annotations

import argparse
from typing import Any

from vaekit.cli import run_access as ra
from vaekit.errors import ConfigError

__all__ = ["add_sampler_options", "gmm_samples"]


def add_sampler_options(p: argparse.ArgumentParser) -> None:
    """``--sampler``, ``--components``, ``--fit-on`` and ``--fit-limit``."""
    p.add_argument("--sampler", choices=("prior", "gmm"), default="prior",
                   help="where z comes from: the prior p(z) (default), or gmm: a Gaussian mixture fitted on the "
                        "aggregate posterior of the run's training split (Ghosh et al. 2020)")
    p.add_argument("--components", metavar="C", type=ra.positive_int, default=10,
                   help="with --sampler gmm: Gaussians of the mixture (default: 10)")
    p.add_argument("--fit-on", choices=("means", "draws"), default="means",
                   help="with --sampler gmm: fit on the posterior means E[z|x] of the training examples (default) "
                        "or on one draw z ~ q(z|x) of each")
    p.add_argument("--fit-limit", metavar="N", type=ra.positive_int, default=None,
                   help="with --sampler gmm: fit on the first N training examples only (default: all)")


def gmm_samples(run: Any, args: argparse.Namespace, device: Any) -> tuple[Any, str]:
    """(n samples (n, *data_shape) decoded from z ~ the fitted mixture, what was drawn)."""
    import torch

    from vaekit.inference.latent_mixture import fit_latent_gmm, sample_gmm

    if run.model.num_classes:
        raise ConfigError("--sampler gmm: applies to an unconditional run (a conditional run's latents are given "
                          "the labels); leave out --sampler gmm")
    if args.label is not None:
        raise ConfigError("--label: chooses the class of a conditional run's samples; leave it out with --sampler gmm")
    train = argparse.Namespace(data=None, data_dir=None, split="train")
    x, _, spec = ra.examples(run, train, device, args.fit_limit)
    gmm = fit_latent_gmm(run.model, x, components=args.components, fit_on=args.fit_on, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    samples = sample_gmm(run.model, gmm, args.n, generator=generator, mean=not args.raw)
    points = "posterior means" if args.fit_on == "means" else "posterior draws"
    return samples, (f"z ~ a mixture of {gmm.components} Gaussians fitted on the {points} of {gmm.n} training "
                     f"examples of {spec.spec}")
