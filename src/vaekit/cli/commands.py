"""Subcommands that read a run directory: evaluate, sample, reconstruct, encode, interpolate, figures.

Each loads the run with :func:`vaekit.runs.load_run`. Those that need examples load the run's
own data (the stored DataSpec: same source, seed and splits) unless ``--data`` names other data,
which get the run's stored preprocessing; examples whose shape differs from the model's are an
error. Examples are prepared as for evaluation (:func:`vaekit.runs.eval_tensor`: binarised or
dequantised once with seed 0), so every command sees the same numbers.

Output files (``--out``) must end in an extension the command knows (.png or .npy), are never
overwritten without ``--force``, and are written atomically. Arrays (.npy) hold values in the
model's input space (images in [0, 1], tabular data standardised as stored with the model).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import plots
from ..errors import ConfigError, DataError, ShapeError
from ..evaluate import evaluate
from ..figures import is_image_shape, to_display, write_figures, write_run_report
from ..io import atomic_write_bytes, atomic_write_json
from ..runs import DataSpec, Run, eval_tensor, load_run, split_of

__all__ = ["EVAL_DATA_SEED", "register"]

#: Seed of the one-off binarisation / dequantisation of the examples every command uses.
EVAL_DATA_SEED = 0
SPLITS = ("test", "val", "train")


# --------------------------------------------------------------------------- argument helpers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _add_parser(subparsers, name: str, help_text: str, description: str, example: str) -> argparse.ArgumentParser:
    text = f"{textwrap.fill(description, 88)}\n\nexample:\n  {example}"
    p = subparsers.add_parser(name, help=help_text, description=text,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory written by 'vaekit train'")
    p.add_argument("--device", default="auto",
                   help="torch device, e.g. cpu, cuda, cuda:1 (default: auto = cuda when available, else cpu)")
    return p


def _add_data_options(p: argparse.ArgumentParser, *, limit: bool = True) -> None:
    p.add_argument("--data", metavar="SPEC", default=None,
                   help="other data to use (a dataset name or a .npy/.npz/.csv/IDX file or image folder); "
                        "default: the run's own data. The run's preprocessing is applied")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where mnist / fashion-mnist files are (default: as stored with the run)")
    p.add_argument("--split", choices=SPLITS, default="test", help="which split to use (default: test)")
    if limit:
        p.add_argument("--limit", metavar="N", type=_positive_int, default=None,
                       help="use only the first N examples of the split")


def _add_out_option(p: argparse.ArgumentParser, exts: tuple[str, ...], default: str | None) -> None:
    where = f" (default: RUN_DIR/{default})" if default else " (required)"
    p.add_argument("--out", metavar="FILE", type=Path, default=None, required=default is None,
                   help=f"output file, {' or '.join(exts)}{where}")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device: unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    return device


def _out_path(args: argparse.Namespace, exts: tuple[str, ...], default: str | None) -> Path:
    """``--out`` (or RUN_DIR/default), checked: a known extension, and no existing file unless --force."""
    path: Path = args.out if args.out is not None else args.run_dir / str(default)
    ext = path.suffix.lower()
    if ext not in exts:
        raise ConfigError(f"--out {path}: unknown extension {ext or '(none)'!r}; use {' or '.join(exts)}")
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a directory")
    if path.exists() and not args.force:
        raise ConfigError(f"--out {path}: file exists; pass --force to overwrite it")
    return path


def _write_npy(path: Path, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def _load(args: argparse.Namespace) -> tuple[Run, torch.device]:
    device = _device(args.device)
    run = load_run(args.run_dir, map_location=device)
    run.model.eval()
    return run, device


def _data_spec(run: Run, args: argparse.Namespace) -> DataSpec:
    spec = run.data
    if args.data is not None:
        image_size = None
        if Path(args.data).is_dir():                       # a folder of images: resize to the model's size
            shape = run.config.data_shape
            image_size = spec.image_size or (tuple(shape[-2:]) if len(shape) == 3 else None)
        return DataSpec(spec=args.data, data_dir=args.data_dir, seed=spec.seed, val_fraction=spec.val_fraction,
                        test_fraction=spec.test_fraction, image_size=image_size,
                        stream=spec.stream and Path(args.data).suffix.lower() == ".npy")
    if args.data_dir is not None:
        return replace(spec, data_dir=args.data_dir)
    return spec


def _examples(run: Run, args: argparse.Namespace, device: torch.device,
              limit: int | None = None) -> tuple[Tensor, np.ndarray | None, DataSpec]:
    """The chosen split's first ``limit`` examples, prepared for the model, with their labels."""
    spec = _data_spec(run, args)
    dataset = spec.load()
    model_shape = tuple(run.config.data_shape)
    if tuple(dataset.shape) != model_shape:
        raise ShapeError(f"--data {spec.spec}: examples of shape {tuple(dataset.shape)} do not match the "
                         f"model's data shape {model_shape}")
    x, labels = split_of(dataset, args.split, limit)
    try:
        tensor = eval_tensor(run.preprocessing, x, seed=EVAL_DATA_SEED, device=device)
    except DataError as exc:
        raise DataError(f"--data {spec.spec}: {exc}") from None
    return tensor, labels, spec


def _model_dtype(run: Run) -> torch.dtype:
    return next((p.dtype for p in run.model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def _save_images(path: Path, values: Tensor, data_shape: tuple[int, ...], *, nrow: int | None = None,
                 title: str | None = None) -> Path:
    """Values (N, *data_shape) as a PNG grid (images) or heatmap (tabular), or as a .npy array."""
    if path.suffix.lower() == ".npy":
        return _write_npy(path, values.detach().to("cpu", torch.float32).numpy())
    return plots.image_grid(to_display(values, data_shape), path, nrow=nrow, title=title)


# --------------------------------------------------------------------------- evaluate


def _fmt(value: float | None, unit: str = "nats") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f} {unit}".rstrip()


def _cmd_evaluate(args: argparse.Namespace) -> int:
    run, device = _load(args)
    x, _, spec = _examples(run, args, device, args.limit)
    x = x.to(_model_dtype(run))
    levels = run.preprocessing.levels if run.preprocessing.dequantize else None
    torch.manual_seed(args.seed)
    result = evaluate(run.model, x, importance_samples=args.importance_samples, batch_size=args.batch_size,
                      levels=levels, progress=sys.stderr.isatty())
    doc = {"run_dir": str(args.run_dir), "split": args.split, "data": spec.to_dict(), "limit": args.limit,
           "seed": args.seed, **result.to_dict()}
    out = atomic_write_json(args.run_dir / f"evaluation-{args.split}.json", doc)
    if args.json:
        print(json.dumps(doc, allow_nan=False, sort_keys=True))
        return 0
    r = result
    rows = [
        ("examples", f"{r.n} ({args.split} split of {spec.spec})"),
        ("ELBO", _fmt(r.elbo)),
        ("  reconstruction E_q[log p(x|z)]", _fmt(r.reconstruction)),
        ("  KL(q(z|x) || p(z))", _fmt(r.kl)),
        (f"log p(x), K = {r.importance_samples}", f"{_fmt(r.log_likelihood)} ± {r.log_likelihood_se:.4f}"),
        ("posterior gap KL(q(z|x) || p(z|x))", _fmt(r.posterior_gap)),
    ]
    if r.exact_log_likelihood is not None:
        rows.append(("exact log p(x)", _fmt(r.exact_log_likelihood)))
    if r.exact_posterior_gap is not None:
        rows.append(("exact posterior gap", _fmt(r.exact_posterior_gap)))
    if r.bits_per_dim is not None:
        rows.append(("bits per dim", _fmt(r.bits_per_dim, "")))
    rows.append(("active units", f"{r.active_units} of {r.latent_dim}"))
    width = max(len(name) for name, _ in rows)
    print(f"evaluation of {args.run_dir} (nats per example, means over the examples)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"wrote {out}")
    return 0


def _add_evaluate(sub) -> None:
    p = _add_parser(sub, "evaluate", "ELBO, importance-sampled log-likelihood, posterior gap, active units",
                    "Evaluate a trained model on a split of its data: the ELBO and its two terms, log p(x) by "
                    "importance sampling with K draws (± its standard error), the posterior gap KL(q(z|x) || "
                    "p(z|x)), active units, bits per dim (continuous likelihood on dequantised images) and, "
                    "for a linear Gaussian model, the exact log p(x) and gap. All in nats per example. Writes "
                    "RUN_DIR/evaluation-SPLIT.json (replacing it).",
                    "vaekit evaluate runs/digits --importance-samples 1000 --json")
    _add_data_options(p)
    p.add_argument("--importance-samples", metavar="K", type=_positive_int, default=5000,
                   help="importance samples per example for log p(x) (default: 5000)")
    p.add_argument("--batch-size", metavar="B", type=_positive_int, default=256,
                   help="examples per batch (default: 256)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the Monte Carlo draws (default: 0)")
    p.set_defaults(func=_cmd_evaluate)


# --------------------------------------------------------------------------- sample


def _cmd_sample(args: argparse.Namespace) -> int:
    path = _out_path(args, (".png", ".npy"), "samples.png")
    run, device = _load(args)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples = run.model.sample(args.n, generator=generator, mean=not args.raw)
    what = "draws x ~ p(x|z)" if args.raw else "means E[x|z]"
    _save_images(path, samples, run.config.data_shape)
    print(f"wrote {path}: {args.n} samples ({what}, z ~ N(0, I), seed {args.seed}), shape {tuple(samples.shape)}")
    return 0


def _add_sample(sub) -> None:
    p = _add_parser(sub, "sample", "draw examples from the model",
                    "Draw z ~ N(0, I) and decode: the decoder mean E[x|z] (default) or a draw x ~ p(x|z) "
                    "(--raw). PNG: a grid of images (tabular data: a heatmap); .npy: an array (N, *data_shape).",
                    "vaekit sample runs/digits --n 100 --out samples.png --seed 1")
    p.add_argument("--n", metavar="N", type=_positive_int, default=64, help="number of samples (default: 64)")
    _add_out_option(p, (".png", ".npy"), "samples.png")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of z (default: 0)")
    p.add_argument("--raw", action="store_true", help="draw x ~ p(x|z) instead of taking the mean E[x|z]")
    p.set_defaults(func=_cmd_sample)


# --------------------------------------------------------------------------- reconstruct


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    path = _out_path(args, (".png", ".npy"), f"reconstructions-{args.split}.png")
    run, device = _load(args)
    x, _, _ = _examples(run, args, device, args.n)
    x = x.to(_model_dtype(run))
    recon = run.model.reconstruct(x)
    if path.suffix.lower() == ".npy":
        _write_npy(path, recon.to("cpu", torch.float32).numpy())
    else:
        shape = run.config.data_shape
        plots.plot_reconstructions(to_display(x, shape), to_display(recon, shape), path)
    print(f"wrote {path}: reconstructions of the first {x.shape[0]} {args.split} examples, shape {tuple(recon.shape)}")
    return 0


def _add_reconstruct(sub) -> None:
    p = _add_parser(sub, "reconstruct", "reconstruct examples through the model",
                    "Encode the first N examples of a split and decode the posterior mean: E[x|z] at z = E_q[z]. "
                    "PNG: originals above reconstructions (at most 16 pairs); .npy: the reconstructions "
                    "(N, *data_shape).",
                    "vaekit reconstruct runs/digits --split test --n 16 --out recon.png")
    _add_data_options(p, limit=False)
    p.add_argument("--n", metavar="N", type=_positive_int, default=16, help="number of examples (default: 16)")
    _add_out_option(p, (".png", ".npy"), "reconstructions-SPLIT.png")
    p.set_defaults(func=_cmd_reconstruct)


# --------------------------------------------------------------------------- encode


def _cmd_encode(args: argparse.Namespace) -> int:
    path = _out_path(args, (".npy",), None)
    run, device = _load(args)
    x, _, _ = _examples(run, args, device, args.limit)
    x = x.to(_model_dtype(run))
    means, scales = [], []
    with torch.no_grad():
        for start in range(0, x.shape[0], args.batch_size):
            q = run.model.encode(x[start:start + args.batch_size])
            means.append(q.mean)
            if args.with_scale:
                scales.append(q.variance.sqrt())
    mean = torch.cat(means)
    out = torch.stack([mean, torch.cat(scales)], 1) if args.with_scale else mean
    _write_npy(path, out.to("cpu", torch.float32).numpy())
    print(f"wrote {path}: posterior {'means and standard deviations' if args.with_scale else 'means'} of "
          f"{x.shape[0]} {args.split} examples, shape {tuple(out.shape)}")
    return 0


def _add_encode(sub) -> None:
    p = _add_parser(sub, "encode", "write posterior means of examples",
                    "Encode the examples of a split: the posterior means E_q[z], an array (N, K). With "
                    "--with-scale the array is (N, 2, K): [:, 0] the means, [:, 1] the posterior standard "
                    "deviations (square roots of the variances).",
                    "vaekit encode runs/digits --split test --out latents.npy")
    _add_data_options(p)
    _add_out_option(p, (".npy",), None)
    p.add_argument("--with-scale", action="store_true", help="also write the posterior standard deviations")
    p.add_argument("--batch-size", metavar="B", type=_positive_int, default=256,
                   help="examples per batch (default: 256)")
    p.set_defaults(func=_cmd_encode)


# --------------------------------------------------------------------------- interpolate


def _cmd_interpolate(args: argparse.Namespace) -> int:
    path = _out_path(args, (".png", ".npy"), f"interpolations-{args.split}.png")
    run, device = _load(args)
    x, _, _ = _examples(run, args, device, 2 * args.pairs)
    if x.shape[0] < 2 * args.pairs:
        raise ConfigError(f"--pairs {args.pairs}: needs {2 * args.pairs} examples, the {args.split} split has "
                          f"{x.shape[0]}")
    x = x.to(_model_dtype(run))
    model = run.model
    with torch.no_grad():
        z = model.encode(x).mean                                              # (2P, K)
        start, end = z[0::2], z[1::2]                                         # (P, K)
        t = torch.linspace(0, 1, args.steps, device=z.device, dtype=z.dtype)[None, :, None]
        path_z = (1 - t) * start[:, None] + t * end[:, None]                 # (P, steps, K)
        decoded = model.decoder_mean(path_z)                                  # (P, steps, *shape)
    shape = run.config.data_shape
    if path.suffix.lower() == ".npy":
        _write_npy(path, decoded.to("cpu", torch.float32).numpy())
    else:
        flat = decoded.reshape(-1, *shape)
        title = None if is_image_shape(shape) else f"interpolations: {args.pairs} pairs x {args.steps} steps"
        _save_images(path, flat, shape, nrow=args.steps, title=title)
    print(f"wrote {path}: {args.pairs} interpolations of {args.steps} steps between the posterior means of "
          f"{args.split} examples (0, 1), (2, 3), ..., shape {tuple(decoded.shape)}")
    return 0


def _add_interpolate(sub) -> None:
    p = _add_parser(sub, "interpolate", "decode straight lines between posterior means",
                    "Take examples (0, 1), (2, 3), ... of a split, encode them to their posterior means z_a, "
                    "z_b, and decode E[x|z] along z = (1 - t) z_a + t z_b for STEPS values of t in [0, 1]. PNG: "
                    "one row per pair; .npy: an array (PAIRS, STEPS, *data_shape).",
                    "vaekit interpolate runs/digits --pairs 4 --steps 10 --out interp.png")
    _add_data_options(p, limit=False)
    p.add_argument("--steps", metavar="S", type=_positive_int, default=10, help="points per line (default: 10)")
    p.add_argument("--pairs", metavar="P", type=_positive_int, default=4, help="number of pairs (default: 4)")
    _add_out_option(p, (".png", ".npy"), "interpolations-SPLIT.png")
    p.set_defaults(func=_cmd_interpolate)


# --------------------------------------------------------------------------- figures


def read_history(path: Path) -> list[dict]:
    """The epochs recorded in a metrics.jsonl file (one JSON object per line); [] if it is missing."""
    if not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line")
        rows.append(row)
    return rows


def _report_metrics(run_dir: Path, history: list[dict]) -> dict:
    metrics: dict = {}
    if history:
        last = history[-1]
        for key, value in last.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"last epoch: {key}"] = value
    for split in SPLITS:
        path = run_dir / f"evaluation-{split}.json"
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        for key, value in doc.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("seed", "limit"):
                metrics[f"{split}: {key}"] = value
    return metrics


def _cmd_figures(args: argparse.Namespace) -> int:
    run, device = _load(args)
    x, labels, _ = _examples(run, args, device, args.limit)
    x = x.to(_model_dtype(run))
    history = read_history(args.run_dir / "metrics.jsonl")
    figures = write_figures(args.run_dir, model=run.model, x=x, labels=labels, history=history, seed=args.seed)
    prep = run.preprocessing
    config = {"model": run.config.to_dict(), "data": run.data.to_dict(), "train": run.train,
              "preprocessing": {"kind": prep.kind, "levels": prep.levels, "binarize": prep.binarize,
                                "dequantize": prep.dequantize, "standardised": prep.mean is not None}}
    report = write_run_report(args.run_dir, metrics=_report_metrics(args.run_dir, history), figures=figures,
                              config=config)
    for path in figures.values():
        print(f"wrote {path}")
    print(f"wrote {report}")
    return 0


def _add_figures(sub) -> None:
    p = _add_parser(sub, "figures", "redraw the figures and report.html of a run",
                    "Redraw RUN_DIR/figures/*.png (training curves from RUN_DIR/metrics.jsonl if present, "
                    "reconstructions, prior samples, latent scatter, latent traversals) from a split of the "
                    "data, and RUN_DIR/report.html with the metrics of the last epoch and of any "
                    "RUN_DIR/evaluation-SPLIT.json. Replaces the previous figures and report.",
                    "vaekit figures runs/digits")
    _add_data_options(p)
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the prior samples (default: 0)")
    p.set_defaults(func=_cmd_figures)


def register(subparsers) -> None:
    """Add evaluate, sample, reconstruct, encode, interpolate and figures to ``subparsers``."""
    for add in (_add_evaluate, _add_sample, _add_reconstruct, _add_encode, _add_interpolate, _add_figures):
        add(subparsers)
