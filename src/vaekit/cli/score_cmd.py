"""``vaekit score``: anomaly and novelty scores per example (:mod:`vaekit.inference.scores`), written as a
table (CSV or Parquet, :mod:`vaekit.cli.score_output`) in input order, with an optional flag column from
a threshold: a quantile of a reference split's scores (``--reference SPLIT --quantile Q``) or a value
(``--threshold T``).

The examples are those of the other commands (:mod:`vaekit.cli.run_access`), except that ``--data``
without ``--split`` means every example of the file, and that a ``.npy`` file scored whole is read as a
stream (:class:`vaekit.data.stream.NpyStream`): block by block, so a file larger than memory is scored
with about one block of rows resident. The draws are those of ``vaekit evaluate`` with the same
``--seed``, ``--batch-size`` and ``--importance-samples``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from vaekit.cli import run_access as ra
from vaekit.errors import ConfigError, ShapeError

__all__ = ["register"]

_EXTS = (".csv", ".parquet")


def _quantile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _check_options(args: argparse.Namespace) -> None:
    if args.quantile is not None and args.reference is None:
        raise ConfigError("--quantile: sets the threshold from a reference split; give --reference SPLIT too")
    if args.reference is not None and args.threshold is not None:
        raise ConfigError("--threshold: a fixed threshold and --reference (a threshold from a quantile) exclude "
                          "each other; give one")
    if args.split is None:
        args.split = "all" if args.data is not None else "test"


def _examples(run: Any, args: argparse.Namespace, device: Any) -> tuple[Any, Any, str]:
    """(the examples: a tensor or an NpyStream of raw rows, their labels or None, what they are)."""
    import numpy as np

    from vaekit.data.stream import NpyStream

    if args.data is not None and args.split == "all" and Path(args.data).suffix.lower() == ".npy":
        stream = NpyStream(args.data)
        if tuple(stream.shape) != tuple(run.config.data_shape):
            raise ShapeError(f"--data {args.data}: examples of shape {tuple(stream.shape)} do not match the "
                             f"model's data shape {tuple(run.config.data_shape)}")
        if args.limit is not None and args.limit < len(stream):
            stream = NpyStream(args.data, rows=np.arange(args.limit))
        if run.model.num_classes:
            raise ConfigError(f"--data {args.data}: a conditional run needs the examples' labels, which a .npy "
                              "file does not hold; give a .csv file with the label column, or a folder of classes")
        return stream, None, f"every example of {args.data}, streamed"
    x, labels, spec = ra.examples(run, args, device, args.limit)
    unsplit = spec.val_fraction == 0 and spec.test_fraction == 0
    return x, ra.labels_for(run, labels, spec, device), \
        f"every example of {spec.spec}" if unsplit else f"the {args.split} split of {spec.spec}"


def _reference_cutoff(run: Any, args: argparse.Namespace, device: Any, options: dict) -> float | None:
    """The threshold: ``--threshold``, or the ``--quantile`` of the ``--reference`` split's scores, or None."""
    import torch

    from vaekit.inference.scores import score, threshold

    if args.threshold is not None:
        return float(args.threshold)
    if args.reference is None:
        return None
    ref_args = argparse.Namespace(**{**vars(args), "data": None, "split": args.reference})
    x, labels, spec = ra.examples(run, ref_args, device)
    torch.manual_seed(args.seed)
    ref = score(run.model, x, y=ra.labels_for(run, labels, spec, device), progress=sys.stderr.isatty(), **options)
    return threshold(ref, args.score, args.quantile if args.quantile is not None else 0.99)


def _cmd_score(args: argparse.Namespace) -> int:
    from vaekit.cli.score_output import ScoreTable, check_format

    _check_options(args)                              # the options' errors come before torch is imported
    path = ra.out_path(args, _EXTS, None)
    check_format(path)

    import torch
    from tqdm.auto import tqdm

    from vaekit.inference.scores import flags, iter_scores, score_batches
    from vaekit.store.lock import run_lock

    run, device = ra.load(args)
    prep = run.preprocessing
    options = {"importance_samples": args.importance_samples, "levels": prep.levels if prep.dequantize else None,
               "log_jacobian": prep.log_jacobian}
    batching = {"batch_size": args.batch_size, "preprocessing": prep, "data_seed": ra.EVAL_DATA_SEED}
    flagged, n, sums = 0, 0, dict[str, float]()
    with run_lock(run.layout.root, shared=True):     # no training run meanwhile
        cutoff = _reference_cutoff(run, args, device, {**options, **batching})
        x, y, what = _examples(run, args, device)
        torch.manual_seed(args.seed)
        batches, total = score_batches(run.model, x, y=y, **batching)
        parts = iter_scores(run.model, batches, **options)
        with tqdm(total=total, desc="score", unit="ex", disable=not sys.stderr.isatty(), leave=False) as bar:
            first = next(parts)
            names = [*first.columns(), *(["flag"] if cutoff is not None else [])]
            with ScoreTable(path, names) as table:
                for part in _chain(first, parts):
                    columns = part.columns()
                    if cutoff is not None:
                        columns["flag"] = flags(part, args.score, cutoff)
                        flagged += int(columns["flag"].sum())
                    table.write(columns)
                    for name, values in columns.items():
                        sums[name] = sums.get(name, 0.0) + float(values.sum())
                    n += len(part)
                    bar.update(len(part))
    doc = {"out": str(path), "examples": what, "n": n, "importance_samples": args.importance_samples,
           "seed": args.seed, "columns": ["index", *names],
           "means": {name: value / n for name, value in sums.items() if name != "flag"},
           "score": args.score if cutoff is not None else None, "threshold": cutoff,
           "reference": args.reference, "quantile": args.quantile if args.reference else None,
           "flagged": flagged if cutoff is not None else None}
    _report(args, doc)
    return 0


def _report(args: argparse.Namespace, doc: dict) -> None:
    """One JSON object (``--json``) or a line (and one for the threshold) on stdout."""
    if args.json:
        print(json.dumps(doc, allow_nan=False, sort_keys=True))
        return
    print(f"wrote {doc['out']}: scores of {doc['n']} examples ({doc['examples']}), K = {args.importance_samples}, "
          f"seed {args.seed}; mean log p(x) {doc['means']['log_likelihood']:.4f} nats")
    if doc["threshold"] is not None:
        source = (f"the {args.quantile if args.quantile is not None else 0.99} quantile of the {args.reference} "
                  "split" if args.reference else "--threshold")
        print(f"  threshold on {args.score}: {doc['threshold']:.6g} ({source}); flagged {doc['flagged']} of "
              f"{doc['n']}")


def _chain(first: Any, rest: Any) -> Any:
    yield first
    yield from rest


def _add_score(sub: Any) -> None:
    p = ra.add_parser(sub, "score", "anomaly scores per example: log p(x), ELBO, KL, bits/dim",
                      "Score every example, in input order: log p(x) importance-sampled with K draws and its "
                      "standard error, the ELBO, its reconstruction term E_q[log p(x|z)] and KL(q(z|x) || p(z)), "
                      "the posterior gap and, where they apply, bits per dim; nats, log-densities of the data as "
                      "given (as 'vaekit evaluate' reports them, whose numbers these are per example for the same "
                      "--seed, --batch-size and --importance-samples). Writes a table, --out FILE.csv or "
                      "FILE.parquet (Parquet needs pyarrow: pip install 'vaekit[parquet]'), with a column 'index' "
                      "(the row number in the input). --data FILE scores every example of FILE (default --split "
                      "all; without --data: the run's test split); a .npy file is read as a stream, so it may be "
                      "larger than memory. --reference SPLIT --quantile Q sets a threshold on --score (default "
                      "log_likelihood) that leaves the fraction Q of the run's SPLIT examples unflagged, and adds "
                      "a column 'flag' (1: unusual: log p(x), ELBO or reconstruction below it; KL, gap or bits/dim "
                      "above it); --threshold T gives the threshold itself.",
                      "vaekit score runs/mnist --data new.npy --out scores.csv --reference val --quantile 0.99")
    ra.add_data_options(p)
    p.set_defaults(split=None)
    p._option_string_actions["--split"].help = ("which split to use (default: all with --data, every example of the "
                                                "file; test without it)")
    p.add_argument("--out", metavar="FILE", type=Path, required=True, help="output table, .csv or .parquet (required)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--importance-samples", metavar="K", type=ra.positive_int, default=5000,
                   help="importance samples per example for log p(x) (default: 5000, as evaluate)")
    p.add_argument("--batch-size", metavar="B", type=ra.positive_int, default=256,
                   help="examples per batch (default: 256)")
    p.add_argument("--seed", type=ra.non_negative_int, default=0, help="seed of the Monte Carlo draws (default: 0)")
    p.add_argument("--reference", choices=("train", "val", "test"), default=None,
                   help="a split of the run's own data whose scores set the threshold (with --quantile)")
    p.add_argument("--quantile", metavar="Q", type=_quantile, default=None,
                   help="with --reference: the fraction of the reference examples left unflagged (default: 0.99)")
    p.add_argument("--threshold", metavar="T", type=_finite, default=None,
                   help="flag the examples beyond this value of --score (instead of --reference)")
    p.add_argument("--score", choices=("log_likelihood", "elbo", "reconstruction", "kl", "posterior_gap",
                                       "bits_per_dim"), default="log_likelihood",
                   help="the score the threshold applies to (default: log_likelihood)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the file, the means, the threshold, the count flagged)")
    p.set_defaults(func=_cmd_score)


def register(subparsers: Any) -> None:
    """Add ``score`` to ``subparsers``."""
    _add_score(subparsers)
