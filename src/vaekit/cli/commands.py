"""Subcommands that read a run directory: evaluate, sample, reconstruct, encode, interpolate (and
figures, in :mod:`vaekit.cli.figures_cmd`).

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
import json
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.cli import figures_cmd
from vaekit.cli import labels as label_options
from vaekit.cli import run_access as ra
from vaekit.errors import ConfigError

if TYPE_CHECKING:                      # imported where used: building the parsers imports no torch
    from vaekit.inference.gaps import Refinement

__all__ = ["register"]


# --------------------------------------------------------------------------- evaluate


def _fmt(value: float | None, unit: str = "nats") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f} {unit}".rstrip()


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from vaekit.inference.evaluate import evaluate
    from vaekit.store.atomic import atomic_write_json
    from vaekit.store.lock import run_lock

    if args.force and not args.save:
        raise ConfigError("--force: replaces a saved evaluation; it applies with --save only")
    run, device = ra.load(args)
    save_path = _saved_evaluation(run.layout.root, args) if args.save else None
    x, labels, spec = ra.examples(run, args, device, args.limit)
    y = ra.labels_for(run, labels, spec, device)           # a conditional run: every number is given y
    levels = run.preprocessing.levels if run.preprocessing.dequantize else None
    torch.manual_seed(args.seed)
    refinement = _refinement(args) if args.gap_decomposition else None
    with run_lock(run.layout.root, shared=True):     # no training run meanwhile
        result = evaluate(run.model, x, importance_samples=args.importance_samples, batch_size=args.batch_size,
                          levels=levels, progress=sys.stderr.isatty(), refinement=refinement,
                          gap_elbo_samples=args.gap_elbo_samples,
                          log_jacobian=run.preprocessing.log_jacobian, y=y)  # in the units of the data as given
        doc = {"run_dir": str(args.run_dir), "split": args.split, "data": spec.to_dict(), "limit": args.limit,
               "seed": args.seed, **result.to_dict(), **({"given_labels": True} if y is not None else {})}
        if save_path is not None:
            _saved_evaluation(run.layout.root, args)        # again: none appeared meanwhile
            atomic_write_json(save_path, doc)
    if args.json:
        print(json.dumps(doc, allow_nan=False, sort_keys=True))
        if save_path is not None:
            print(f"wrote {save_path}", file=sys.stderr)
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
    if y is not None:
        rows.append(("labels", "given: each number is of x given its label y (log p(x|y), q(z|x,y))"))
    if r.log_jacobian:
        rows.append(("log-Jacobian of the standardisation", f"{_fmt(r.log_jacobian)} (included above)"))
    width = max(len(name) for name, _ in rows)
    print(f"evaluation of {args.run_dir} (nats per example, means over the examples; log-densities of the data "
          "as given)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if save_path is not None:
        print(f"wrote {save_path}")
    return 0


def _saved_evaluation(run_dir: Path, args: argparse.Namespace) -> Path:
    """Where ``--save`` writes: RUN_DIR/evaluation-SPLIT-K{K}-seed{S}[-limit{N}][-gaps][-data-NAME].json,
    a name carrying the options, so that it never replaces the evaluation-SPLIT.json of training nor
    one made with other options; an existing file is a ConfigError unless ``--force``."""
    parts = [f"evaluation-{args.split}", f"K{args.importance_samples}", f"seed{args.seed}"]
    if args.limit is not None:
        parts.append(f"limit{args.limit}")
    if args.gap_decomposition:
        parts.append("gaps")
    if args.data is not None:
        name = re.sub(r"[^A-Za-z0-9._]+", "_", Path(args.data).name).strip("._") or "data"
        parts.append(f"data-{name[:40]}")
    path = run_dir / ("-".join(parts) + ".json")
    if path.exists() and not args.force:
        raise ConfigError(f"--save: {path} exists (an evaluation with these options); pass --force to replace it")
    return path


def _add_evaluate(sub) -> None:
    p = ra.add_parser(sub, "evaluate", "ELBO, log p(x), posterior gap and active units of a split",
                    "Evaluate a trained model on a split of its data: the ELBO and its two terms, log p(x) by "
                    "importance sampling with K draws (± its standard error), the posterior gap KL(q(z|x) || "
                    "p(z|x)), active units, bits per dim (continuous likelihood on dequantised images, or "
                    "exact for the discretized likelihoods) and, for a linear Gaussian model, the exact log p(x) "
                    "and gap. All in nats per example; the "
                    "log-densities are of the data in the units the user gave them (a table's standardisation "
                    "is undone by its log-Jacobian; images stay on the [0, 1] scale). --data SPEC --split all "
                    "evaluates on every example of another file, with the run's preprocessing. Prints the "
                    "results and writes nothing, unless --save: then also "
                    "RUN_DIR/evaluation-SPLIT-K<K>-seed<SEED>.json, e.g. evaluation-test-K5000-seed0.json (with "
                    "-limit<N>, -gaps, -data-<NAME> for those options), a name carrying the options, so that the "
                    "evaluation-SPLIT.json 'vaekit train' wrote is never replaced; an existing file of that name is "
                    "replaced only with --force.",
                    "vaekit evaluate runs/table --data test.csv --split all --importance-samples 1000 --json")
    ra.add_data_options(p)
    p.add_argument("--importance-samples", metavar="K", type=ra.positive_int, default=5000,
                   help="importance samples per example for log p(x) (default: 5000)")
    p.add_argument("--batch-size", metavar="B", type=ra.positive_int, default=256,
                   help="examples per batch (default: 256)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    p.add_argument("--save", action="store_true",
                   help="also write the results into the run, as RUN_DIR/evaluation-SPLIT-K<K>-seed<SEED>[...].json "
                        "(never the evaluation-SPLIT.json of training)")
    p.add_argument("--force", action="store_true", help="with --save: replace a saved evaluation of the same name")
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
    from vaekit.inference.gaps import Refinement

    if args.refine_steps < 1:
        raise ConfigError("--refine-steps: the gap decomposition needs at least 1 step")
    return Refinement(steps=args.refine_steps, lr=args.refine_lr, samples=args.refine_samples)


# --------------------------------------------------------------------------- sample


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    path = ra.out_path(args, (".png", ".npy"), "samples.png")
    run, device = ra.load(args)
    bounds = _value_range(run) if args.clip else None
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples, per_row, drawn = label_options.draw_samples(run.model, args.n, args.label, generator, not args.raw)
    what = "draws x ~ p(x|z)" if args.raw else "means E[x|z]"
    if bounds is not None:
        samples = samples.clamp(*bounds)
        what += f", clipped to [{bounds[0]:g}, {bounds[1]:g}]"
    ra.save_images(path, samples, run.config.data_shape, nrow=per_row)
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
                    "one z in every class.",
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
    refinement = _refinement(args) if args.refine_steps > 0 else None
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
    _add_refine_options(p, default_steps=0)
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
    for add in (_add_evaluate, _add_sample, _add_reconstruct, _add_encode, _add_interpolate):
        add(subparsers)
    figures_cmd.register(subparsers)
