"""Subcommands that read a run directory: sample, reconstruct, encode, interpolate (and evaluate and
figures, in :mod:`vaekit.cli.evaluate_cmd` and :mod:`vaekit.cli.figures_cmd`).

Each loads the run and its examples as :mod:`vaekit.cli.run_access` describes (a run trained with
the user's own networks needs ``--trust-code``). Output files (``--out``) must end in an extension
the command knows (.png or .npy), are never overwritten without ``--force``, and are written
atomically. Arrays (.npy) hold values in the model's input space (images in [0, 1], tabular data
standardised as stored with the model).

A conditional run (``vaekit train --conditional``) is given the examples' labels everywhere
(:func:`vaekit.cli.run_access.labelled`): evaluate reports log p(x|y) and the ELBO of x given y, reconstruct
and encode use q(z|x, y), interpolate decodes each pair's path in the class of its first example, and
sample draws the class of ``--label`` (default: the classes in turn).
"""

from __future__ import annotations

import argparse
from typing import Any

from vaekit.cli import evaluate_cmd, figures_cmd
from vaekit.cli import labels as label_options
from vaekit.cli import run_access as ra
from vaekit.cli.evaluate_cmd import add_refine_options, refinement_of
from vaekit.cli.gmm_sampler import add_sampler_options, gmm_samples
from vaekit.errors import ConfigError

__all__ = ["register"]


# --------------------------------------------------------------------------- sample


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    path = ra.out_path(args, (".png", ".npy"), "samples.png")
    run, device = ra.load(args)
    ra.check_decoding(run, args.n, f"--n {args.n}", device)
    bounds = _value_range(run) if args.clip else None
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if args.sampler == "gmm":                                  # z from a mixture fitted on the aggregate posterior
        (samples, drawn), per_row = gmm_samples(run, args, device), None
    else:
        samples, per_row, drawn = label_options.draw_samples(run.model, args.n, args.label, generator, not args.raw)
    what = "draws x ~ p(x|z)" if args.raw else "means E[x|z]"
    if bounds is not None:
        samples = samples.clamp(*bounds)
        what += f", clipped to [{bounds[0]:g}, {bounds[1]:g}]"
    from vaekit.viz.conditional import class_columns

    ra.save_images(path, samples, run.config.data_shape, nrow=per_row, col_labels=class_columns(run.model, per_row))
    print(f"wrote {path}: {args.n} samples ({what}, {drawn}, seed {args.seed}), shape {tuple(samples.shape)}, "
          f"values in [{float(samples.min()):.4g}, {float(samples.max()):.4g}]")
    return 0


def _value_range(run: Any) -> tuple[float, float]:
    """The range of the data as the model sees them, which ``--clip`` clips to: [0, 1] for images
    (the preprocessing scales every image to it) and for the binary data of a Bernoulli likelihood;
    tabular data of a continuous likelihood have no known range (a ConfigError naming --clip)."""
    from vaekit.models.likelihoods import build_likelihood

    if run.preprocessing.kind == "image":
        return 0.0, 1.0
    if build_likelihood(run.config.likelihood, run.config.data_shape).data_kind == "binary":
        return 0.0, 1.0
    raise ConfigError("--clip: this run's data are a table of continuous values, which have no known range to "
                      "clip to; leave out --clip")


def _add_sample(sub) -> None:
    p = ra.add_parser(sub, "sample", "draw examples from the model",
                    "Draw z ~ N(0, I) and decode: the decoder mean E[x|z] (default) or a draw x ~ p(x|z) "
                    "(--raw). PNG: a grid of images (tabular data: a heatmap; images are drawn clipped to [0, 1]); "
                    ".npy: an array (N, *data_shape) in the model's input space. The default values are the "
                    "unclipped mean E[x|z] of the decoder: a Gaussian decoder's mean is not bounded, so images "
                    "scaled to [0, 1] may get values below 0 or above 1; --clip clips them to the data's range "
                    "([0, 1] for images and binary data). A conditional run (trained with --conditional) decodes "
                    "E[x|z, y]: every sample of class --label Y, or by default the classes in turn, each row of C "
                    "one z in every class. --sampler gmm draws z from a mixture of --components Gaussians fitted on "
                    "the aggregate posterior (the posterior means of the run's training split) instead of the prior "
                    "(Ghosh et al. 2020): vaekit sample runs/mnist --sampler gmm --components 10.",
                    "vaekit sample runs/digits --n 100 --out samples.png --seed 1")
    p.add_argument("--n", metavar="N", type=ra.positive_int, default=64, help="number of samples (default: 64)")
    p.add_argument("--label", metavar="Y", default=None,
                   help="a conditional run (trained with --conditional): draw every sample of class Y, an index "
                        "0..C-1 or a class name (a folder's sub-folder); default: the classes in turn, each row "
                        "of C one z decoded in every class")
    ra.add_out_option(p, (".png", ".npy"), "samples.png")
    p.add_argument("--seed", type=ra.non_negative_int, default=0, help="seed of z (default: 0)")
    p.add_argument("--raw", action="store_true", help="draw x ~ p(x|z) instead of taking the mean E[x|z]")
    p.add_argument("--clip", action="store_true",
                   help="clip the values to the data's range, [0, 1] for images and binary data (default: the "
                        "unclipped mean E[x|z], which a Gaussian decoder does not keep within [0, 1])")
    add_sampler_options(p)
    p.set_defaults(func=_cmd_sample)


# --------------------------------------------------------------------------- reconstruct


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from vaekit.viz import plots
    from vaekit.viz.figures import to_display

    path = ra.out_path(args, (".png", ".npy"), f"reconstructions-{args.split}.png")
    run, device = ra.load(args)
    x, labels, spec = ra.examples(run, args, device, args.n)
    recon = ra.labelled(run, labels, spec, device).reconstruct(x)          # a conditional run: given the labels
    if path.suffix.lower() == ".npy":
        ra.write_npy(path, recon.to("cpu", torch.float32).numpy())
    else:
        shape = run.config.data_shape
        plots.plot_reconstructions(to_display(x, shape), to_display(recon, shape), path)
    print(f"wrote {path}: reconstructions of the first {x.shape[0]} {args.split} examples, shape {tuple(recon.shape)}")
    return 0


def _add_reconstruct(sub) -> None:
    p = ra.add_parser(sub, "reconstruct", "reconstruct examples through the model",
                    "Encode the first N examples of a split and decode the posterior mean: E[x|z] at z = E_q[z]. "
                    "PNG: originals above reconstructions (at most 16 pairs); .npy: the reconstructions "
                    "(N, *data_shape).",
                    "vaekit reconstruct runs/digits --split test --n 16 --out recon.png")
    ra.add_data_options(p, limit=False)
    p.add_argument("--n", metavar="N", type=ra.positive_int, default=16, help="number of examples (default: 16)")
    ra.add_out_option(p, (".png", ".npy"), "reconstructions-SPLIT.png")
    p.set_defaults(func=_cmd_reconstruct)


# --------------------------------------------------------------------------- encode


def _cmd_encode(args: argparse.Namespace) -> int:
    import torch

    from vaekit.inference.gaps import refine_posterior
    from vaekit.models.protocol import with_labels

    path = ra.out_path(args, (".npy",), None)
    run, device = ra.load(args)
    x, labels, spec = ra.examples(run, args, device, args.limit)
    y = ra.labels_for(run, labels, spec, device)                             # a conditional run's: q(z|x, y)
    means, scales = [], []
    refinement = refinement_of(args) if args.refine_steps > 0 else None
    torch.manual_seed(args.seed)
    with torch.no_grad():
        for start in range(0, x.shape[0], args.batch_size):
            xb = x[start:start + args.batch_size]
            model = with_labels(run.model, None if y is None else y[start:start + args.batch_size])
            if refinement is not None:                                        # q*: the best q of the family
                q = refine_posterior(model, xb, refinement)
                means.append(q.mean)
            else:
                means.append(model.summary(xb))                               # E_q[z], (B, K)
                q = model.encode(xb)
            if args.with_scale:
                try:
                    scales.append(q.variance.sqrt())
                except NotImplementedError:
                    raise ConfigError(f"--with-scale: the posterior of this model ({type(q).__name__}) has no "
                                      "standard deviations in closed form; leave --with-scale out") from None
    mean = torch.cat(means)
    out = torch.stack([mean, torch.cat(scales)], 1) if args.with_scale else mean
    ra.write_npy(path, out.to("cpu", torch.float32).numpy())
    print(f"wrote {path}: posterior {'means and standard deviations' if args.with_scale else 'means'} of "
          f"{x.shape[0]} {args.split} examples, shape {tuple(out.shape)}")
    return 0


def _add_encode(sub) -> None:
    p = ra.add_parser(sub, "encode", "write posterior means of examples",
                    "Encode the examples of a split: the posterior means E_q[z], an array (N, K); with "
                    "--refine-steps N, those of each example's best posterior of the family (q refined by N "
                    "Adam steps on its ELBO, the model fixed) instead of the encoder's. With "
                    "--with-scale the array is (N, 2, K): [:, 0] the means, [:, 1] the posterior standard "
                    "deviations (square roots of the variances).",
                    "vaekit encode runs/digits --split test --out latents.npy")
    ra.add_data_options(p)
    ra.add_out_option(p, (".npy",), None)
    p.add_argument("--with-scale", action="store_true", help="also write the posterior standard deviations")
    p.add_argument("--batch-size", metavar="B", type=ra.positive_int, default=256,
                   help="examples per batch (default: 256)")
    add_refine_options(p, default_steps=0)
    p.add_argument("--seed", type=ra.non_negative_int, default=0,
                   help="seed of the refinement's draws (default: 0)")
    p.set_defaults(func=_cmd_encode)


# --------------------------------------------------------------------------- interpolate


def _cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from vaekit.models.protocol import with_labels
    from vaekit.viz import plots
    from vaekit.viz.figures import is_image_shape, to_display

    path = ra.out_path(args, (".png", ".npy"), f"interpolations-{args.split}.png")
    run, device = ra.load(args)
    ra.check_decoding(run, args.pairs * args.steps, f"--pairs {args.pairs}, --steps {args.steps}", device)
    x, labels, spec = ra.examples(run, args, device, 2 * args.pairs)
    if x.shape[0] < 2 * args.pairs:
        raise ConfigError(f"--pairs {args.pairs}: needs {2 * args.pairs} examples, the {args.split} split has "
                          f"{x.shape[0]}")
    y = ra.labels_for(run, labels, spec, device)           # a conditional run: q(z|x, y), the path decoded with y_a
    model = with_labels(run.model, y)
    with torch.no_grad():
        z = model.summary(x)                                                  # E_q[z], (2P, K)
        start, end = z[0::2], z[1::2]                                         # (P, K)
        t = torch.linspace(0, 1, args.steps, device=z.device, dtype=z.dtype)[None, :, None]
        path_z = (1 - t) * start[:, None] + t * end[:, None]                 # (P, steps, K)
        if y is None:
            decoded = model.decoder_mean(path_z)                              # (P, steps, *shape)
        else:                                                                 # each pair's path in x_a's class
            decoded = with_labels(run.model, y[0::2].repeat_interleave(args.steps)).decoder_mean(
                path_z.reshape(-1, path_z.shape[-1])).reshape(*path_z.shape[:2], *run.config.data_shape)
    shape = run.config.data_shape
    if path.suffix.lower() == ".npy":
        ra.write_npy(path, decoded.to("cpu", torch.float32).numpy())
    elif is_image_shape(shape):                                           # originals x_a, x_b at both ends
        plots.plot_interpolations(to_display(decoded.reshape(-1, *shape), shape).reshape(decoded.shape), path,
                                  starts=to_display(x[0::2], shape), ends=to_display(x[1::2], shape),
                                  values=t.reshape(-1).cpu().numpy())
    else:                                                                 # heatmap rows: x_a, the path, x_b
        rows = torch.cat([x[0::2, None], decoded, x[1::2, None]], 1)        # (P, steps + 2, *shape)
        ra.save_images(path, rows.reshape(-1, *shape), shape, nrow=args.steps + 2,
                       title=f"interpolations: {args.pairs} pairs, rows x_a, {args.steps} steps, x_b")
    print(f"wrote {path}: {args.pairs} interpolations of {args.steps} steps between the posterior means of "
          f"{args.split} examples (0, 1), (2, 3), ..., shape {tuple(decoded.shape)}")
    return 0


def _add_interpolate(sub) -> None:
    p = ra.add_parser(sub, "interpolate", "decode straight lines between posterior means",
                    "Take examples (0, 1), (2, 3), ... of a split, encode them to their posterior means z_a, "
                    "z_b, and decode E[x|z] along z = (1 - t) z_a + t z_b for STEPS values of t in [0, 1]. PNG: "
                    "one row per pair, the original examples x_a and x_b at its two ends; .npy: the decodings, "
                    "an array (PAIRS, STEPS, *data_shape).",
                    "vaekit interpolate runs/digits --pairs 4 --steps 10 --out interp.png")
    ra.add_data_options(p, limit=False)
    p.add_argument("--steps", metavar="S", type=ra.positive_int, default=10, help="points per line (default: 10)")
    p.add_argument("--pairs", metavar="P", type=ra.positive_int, default=4, help="number of pairs (default: 4)")
    ra.add_out_option(p, (".png", ".npy"), "interpolations-SPLIT.png")
    p.set_defaults(func=_cmd_interpolate)


def register(subparsers: Any) -> None:
    """Add evaluate, sample, reconstruct, encode, interpolate and figures to ``subparsers``."""
    evaluate_cmd.register(subparsers)
    for add in (_add_sample, _add_reconstruct, _add_encode, _add_interpolate):
        add(subparsers)
    figures_cmd.register(subparsers)
