"""Subcommands that read a run directory: evaluate, sample, reconstruct, encode, interpolate (and
figures, in :mod:`vaekit.cli.figures_cmd`).

Each loads the run and its examples as :mod:`vaekit.cli.run_access` describes (a run trained with
the user's own networks needs ``--trust-code``). Output files (``--out``) must end in an extension
the command knows (.png or .npy), are never overwritten without ``--force``, and are written
atomically. Arrays (.npy) hold values in the model's input space (images in [0, 1], tabular data
standardised as stored with the model).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import torch

from vaekit.cli import figures_cmd
from vaekit.cli import run_access as ra
from vaekit.errors import ConfigError
from vaekit.inference.evaluate import evaluate
from vaekit.inference.gaps import Refinement, refine_posterior
from vaekit.store.atomic import atomic_write_json
from vaekit.store.lock import run_lock
from vaekit.viz import plots
from vaekit.viz.figures import is_image_shape, to_display

__all__ = ["register"]


# --------------------------------------------------------------------------- evaluate


def _fmt(value: float | None, unit: str = "nats") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f} {unit}".rstrip()


def _cmd_evaluate(args: argparse.Namespace) -> int:
    run, device = ra.load(args)
    x, _, spec = ra.examples(run, args, device, args.limit)
    levels = run.preprocessing.levels if run.preprocessing.dequantize else None
    torch.manual_seed(args.seed)
    refinement = _refinement(args) if args.gap_decomposition else None
    with run_lock(run.layout.root, shared=True):     # no training run meanwhile
        result = evaluate(run.model, x, importance_samples=args.importance_samples, batch_size=args.batch_size,
                          levels=levels, progress=sys.stderr.isatty(), refinement=refinement,
                          gap_elbo_samples=args.gap_elbo_samples,
                          log_jacobian=run.preprocessing.log_jacobian)      # in the units of the data as given
        doc = {"run_dir": str(args.run_dir), "split": args.split, "data": spec.to_dict(), "limit": args.limit,
               "seed": args.seed, **result.to_dict()}
        out = atomic_write_json(run.layout.evaluation(args.split), doc)
    if args.json:
        print(json.dumps(doc, allow_nan=False, sort_keys=True))
        return 0
    r = result
    unsplit = spec.val_fraction == 0 and spec.test_fraction == 0           # --split all, or a --test-data file
    what = f"every example of {spec.spec}" if unsplit else f"{args.split} split of {spec.spec}"
    rows = [
        ("examples", f"{r.n} ({what})"),
        ("ELBO", _fmt(r.elbo)),
        ("  reconstruction E_q[log p(x|z)]", _fmt(r.reconstruction)),
        ("  KL(q(z|x) || p(z))", _fmt(r.kl)),
        (f"log p(x), K = {r.importance_samples}", f"{_fmt(r.log_likelihood)} ± {r.log_likelihood_se:.4f}"),
        ("posterior gap KL(q(z|x) || p(z|x))", _fmt(r.posterior_gap)),
    ]
    if r.amortisation_gap is not None and r.approximation_gap is not None:
        rows += [("  amortisation gap ELBO(q*) - ELBO(q)", f"{_fmt(r.amortisation_gap)} ± {r.amortisation_gap_se:.4f}"),
                 ("  approximation gap log p(x) - ELBO(q*)",
                  f"{_fmt(r.approximation_gap)} ± {r.approximation_gap_se:.4f}")]
    if r.exact_log_likelihood is not None:
        rows.append(("exact log p(x)", _fmt(r.exact_log_likelihood)))
    if r.exact_posterior_gap is not None:
        rows.append(("exact posterior gap", _fmt(r.exact_posterior_gap)))
    if r.bits_per_dim is not None:
        rows.append(("bits per dim", _fmt(r.bits_per_dim, "")))
    rows.append(("active units", f"{r.active_units} of {r.latent_dim}"))
    if r.log_jacobian:
        rows.append(("log-Jacobian of the standardisation", f"{_fmt(r.log_jacobian)} (included above)"))
    width = max(len(name) for name, _ in rows)
    print(f"evaluation of {args.run_dir} (nats per example, means over the examples; log-densities of the data "
          "as given)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"wrote {out}")
    return 0


def _add_evaluate(sub) -> None:
    p = ra.add_parser(sub, "evaluate", "ELBO, importance-sampled log-likelihood, posterior gap, active units",
                    "Evaluate a trained model on a split of its data: the ELBO and its two terms, log p(x) by "
                    "importance sampling with K draws (± its standard error), the posterior gap KL(q(z|x) || "
                    "p(z|x)), active units, bits per dim (continuous likelihood on dequantised images) and, "
                    "for a linear Gaussian model, the exact log p(x) and gap. All in nats per example; the "
                    "log-densities are of the data in the units the user gave them (a table's standardisation "
                    "is undone by its log-Jacobian; images stay on the [0, 1] scale). --data SPEC --split all "
                    "evaluates on every example of another file, with the run's preprocessing. Writes "
                    "RUN_DIR/evaluation-SPLIT.json (replacing it).",
                    "vaekit evaluate runs/table --data test.csv --split all --importance-samples 1000 --json")
    ra.add_data_options(p)
    p.add_argument("--importance-samples", metavar="K", type=ra.positive_int, default=5000,
                   help="importance samples per example for log p(x) (default: 5000)")
    p.add_argument("--batch-size", metavar="B", type=ra.positive_int, default=256,
                   help="examples per batch (default: 256)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    p.add_argument("--seed", type=ra.non_negative_int, default=0,
                   help="seed of the Monte Carlo draws (default: 0)")
    p.add_argument("--gap-decomposition", action="store_true",
                   help="split the posterior gap into the amortisation gap ELBO(q*) - ELBO(q) and the approximation "
                        "gap log p(x) - ELBO(q*), q* each example's best posterior of the family, found by "
                        "--refine-steps Adam steps of --refine-samples draws. Costs about STEPS x SAMPLES "
                        "decoder passes per example on top of the K importance samples: use --limit")
    _add_refine_options(p, default_steps=500)
    p.add_argument("--gap-elbo-samples", metavar="S", type=ra.positive_int, default=1000,
                   help="draws for ELBO(q) and ELBO(q*) in the gap decomposition (default: 1000)")
    p.set_defaults(func=_cmd_evaluate)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_refine_options(p: argparse.ArgumentParser, *, default_steps: int) -> None:
    what = "" if default_steps else "; 0: no refinement, the encoder's q"
    p.add_argument("--refine-steps", metavar="N", type=ra.non_negative_int, default=default_steps,
                   help=f"Adam steps of the per-example posterior refinement (default: {default_steps}{what})")
    p.add_argument("--refine-lr", metavar="LR", type=_positive_float, default=0.05,
                   help="learning rate of the refinement, decayed to 0 by a cosine (default: 0.05)")
    p.add_argument("--refine-samples", metavar="S", type=ra.positive_int, default=16,
                   help="draws of z per example and refinement step (default: 16)")


def _refinement(args: argparse.Namespace) -> Refinement:
    if args.refine_steps < 1:
        raise ConfigError("--refine-steps: the gap decomposition needs at least 1 step")
    return Refinement(steps=args.refine_steps, lr=args.refine_lr, samples=args.refine_samples)


# --------------------------------------------------------------------------- sample


def _cmd_sample(args: argparse.Namespace) -> int:
    path = ra.out_path(args, (".png", ".npy"), "samples.png")
    run, device = ra.load(args)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples = run.model.sample(args.n, generator=generator, mean=not args.raw)
    what = "draws x ~ p(x|z)" if args.raw else "means E[x|z]"
    ra.save_images(path, samples, run.config.data_shape)
    print(f"wrote {path}: {args.n} samples ({what}, z ~ N(0, I), seed {args.seed}), shape {tuple(samples.shape)}")
    return 0


def _add_sample(sub) -> None:
    p = ra.add_parser(sub, "sample", "draw examples from the model",
                    "Draw z ~ N(0, I) and decode: the decoder mean E[x|z] (default) or a draw x ~ p(x|z) "
                    "(--raw). PNG: a grid of images (tabular data: a heatmap); .npy: an array (N, *data_shape).",
                    "vaekit sample runs/digits --n 100 --out samples.png --seed 1")
    p.add_argument("--n", metavar="N", type=ra.positive_int, default=64, help="number of samples (default: 64)")
    ra.add_out_option(p, (".png", ".npy"), "samples.png")
    p.add_argument("--seed", type=ra.non_negative_int, default=0, help="seed of z (default: 0)")
    p.add_argument("--raw", action="store_true", help="draw x ~ p(x|z) instead of taking the mean E[x|z]")
    p.set_defaults(func=_cmd_sample)


# --------------------------------------------------------------------------- reconstruct


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    path = ra.out_path(args, (".png", ".npy"), f"reconstructions-{args.split}.png")
    run, device = ra.load(args)
    x, _, _ = ra.examples(run, args, device, args.n)
    recon = run.model.reconstruct(x)
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
    path = ra.out_path(args, (".npy",), None)
    run, device = ra.load(args)
    x, _, _ = ra.examples(run, args, device, args.limit)
    means, scales = [], []
    refinement = _refinement(args) if args.refine_steps > 0 else None
    torch.manual_seed(args.seed)
    with torch.no_grad():
        for start in range(0, x.shape[0], args.batch_size):
            xb = x[start:start + args.batch_size]
            if refinement is not None:                                        # q*: the best q of the family
                q = refine_posterior(run.model, xb, refinement)
                means.append(q.mean)
            else:
                means.append(run.model.summary(xb))                           # E_q[z], (B, K)
                q = run.model.encode(xb)
            if args.with_scale:
                scales.append(q.variance.sqrt())
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
    _add_refine_options(p, default_steps=0)
    p.add_argument("--seed", type=ra.non_negative_int, default=0,
                   help="seed of the refinement's draws (default: 0)")
    p.set_defaults(func=_cmd_encode)


# --------------------------------------------------------------------------- interpolate


def _cmd_interpolate(args: argparse.Namespace) -> int:
    path = ra.out_path(args, (".png", ".npy"), f"interpolations-{args.split}.png")
    run, device = ra.load(args)
    x, _, _ = ra.examples(run, args, device, 2 * args.pairs)
    if x.shape[0] < 2 * args.pairs:
        raise ConfigError(f"--pairs {args.pairs}: needs {2 * args.pairs} examples, the {args.split} split has "
                          f"{x.shape[0]}")
    model = run.model
    with torch.no_grad():
        z = model.summary(x)                                                  # E_q[z], (2P, K)
        start, end = z[0::2], z[1::2]                                         # (P, K)
        t = torch.linspace(0, 1, args.steps, device=z.device, dtype=z.dtype)[None, :, None]
        path_z = (1 - t) * start[:, None] + t * end[:, None]                 # (P, steps, K)
        decoded = model.decoder_mean(path_z)                                  # (P, steps, *shape)
    shape = run.config.data_shape
    if path.suffix.lower() == ".npy":
        ra.write_npy(path, decoded.to("cpu", torch.float32).numpy())
    else:
        flat = decoded.reshape(-1, *shape)
        title = None if is_image_shape(shape) else f"interpolations: {args.pairs} pairs x {args.steps} steps"
        ra.save_images(path, flat, shape, nrow=args.steps, title=title)
    print(f"wrote {path}: {args.pairs} interpolations of {args.steps} steps between the posterior means of "
          f"{args.split} examples (0, 1), (2, 3), ..., shape {tuple(decoded.shape)}")
    return 0


def _add_interpolate(sub) -> None:
    p = ra.add_parser(sub, "interpolate", "decode straight lines between posterior means",
                    "Take examples (0, 1), (2, 3), ... of a split, encode them to their posterior means z_a, "
                    "z_b, and decode E[x|z] along z = (1 - t) z_a + t z_b for STEPS values of t in [0, 1]. PNG: "
                    "one row per pair; .npy: an array (PAIRS, STEPS, *data_shape).",
                    "vaekit interpolate runs/digits --pairs 4 --steps 10 --out interp.png")
    ra.add_data_options(p, limit=False)
    p.add_argument("--steps", metavar="S", type=ra.positive_int, default=10, help="points per line (default: 10)")
    p.add_argument("--pairs", metavar="P", type=ra.positive_int, default=4, help="number of pairs (default: 4)")
    ra.add_out_option(p, (".png", ".npy"), "interpolations-SPLIT.png")
    p.set_defaults(func=_cmd_interpolate)


def register(subparsers: Any) -> None:
    """Add evaluate, sample, reconstruct, encode, interpolate and figures to ``subparsers``."""
    for add in (_add_evaluate, _add_sample, _add_reconstruct, _add_encode, _add_interpolate):
        add(subparsers)
    figures_cmd.register(subparsers)
