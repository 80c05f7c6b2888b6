"""``vaekit evaluate``: the ELBO, log p(x) with K importance samples, the posterior gap (optionally split into
the amortisation and approximation gaps), active units and bits/dim of a run on a split or a file; it prints,
and writes into the run only with ``--save``. The refinement options are shared with ``vaekit encode``
(:mod:`vaekit.cli.commands`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.cli import run_access as ra
from vaekit.cli.plain_progress import progress_for
from vaekit.errors import ConfigError

if TYPE_CHECKING:                      # imported where used: building the parsers imports no torch
    from vaekit.inference.gaps import Refinement

__all__ = ["register", "add_refine_options", "refinement_of"]


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
    refinement = refinement_of(args) if args.gap_decomposition else None
    with run_lock(run.layout.root, shared=True):     # no training run meanwhile
        result = evaluate(run.model, x, importance_samples=args.importance_samples, batch_size=args.batch_size,
                          levels=levels, progress=progress_for(True), refinement=refinement,
                          gap_elbo_samples=args.gap_elbo_samples,
                          log_jacobian=run.preprocessing.log_jacobian, y=y)  # in the units of the data as given
        doc = {"run_dir": str(args.run_dir), "split": args.split, "data": spec.to_dict(), "limit": args.limit,
               "seed": args.seed, **result.to_dict(), **({"given_labels": True} if y is not None else {})}
        if save_path is not None:
            _saved_evaluation(run.layout.root, args)        # again: none appeared meanwhile
            atomic_write_json(save_path, doc)
    if args.json:
        warn_unreliable(result)
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
        *weight_rows(r),
        (f"posterior gap KL(q(z|x) || p(z|x)), K = {r.importance_samples}", _fmt(r.posterior_gap)),
    ]
    rows += _decomposition_rows(r)
    if r.exact_log_likelihood is not None:
        rows.append(("exact log p(x)", _fmt(r.exact_log_likelihood)))
    if r.exact_posterior_gap is not None:
        rows.append(("exact posterior gap", _fmt(r.exact_posterior_gap)))
    if r.bits_per_dim is not None:
        rows.append(("bits per dim", _fmt(r.bits_per_dim, "")))
    if r.exact_elbo is not None:
        rows.append(("exact ELBO", _fmt(r.exact_elbo)))
    if r.exact:
        closed = "the exact rows" + (" and both gaps (± their spread over the examples)"
                                     if "approximation_gap" in r.exact else "")
        rows.append(("closed forms", f"{closed}; the rest are Monte Carlo estimates"))
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
    warn_unreliable(r)
    return 0


def weight_rows(r) -> list[tuple[str, str]]:
    """The importance weights' diagnostics of an Evaluation ``r``: PSIS k̂ and the effective sample size."""
    rows = []
    if r.pareto_k_max is not None:
        rows.append(("  Pareto k of the weights (max, mean)", f"{r.pareto_k_max:.2f}, {r.pareto_k_mean:.2f} "
                     f"({r.unreliable_examples} of {r.n} examples above 0.7)"))
    if r.effective_sample_size_mean is not None:
        ess = f"{r.effective_sample_size_mean:.1f}, {r.effective_sample_size_min:.1f}"
        rows.append(("  effective sample size (mean, min)", f"{ess} of {r.importance_samples}"))
    return rows


def warn_unreliable(r) -> None:
    """A warning on stderr when some examples' importance weights have PSIS k̂ > 0.7."""
    if r.unreliable_examples:
        print(f"warning: Pareto k̂ > 0.7 for {r.unreliable_examples} of {r.n} examples (max {r.pareto_k_max:.2f}): "
              "their importance weights are heavy-tailed, so log p(x) and its standard error are unreliable "
              "(Vehtari et al. 2024, PSIS); raise --importance-samples or improve the posterior", file=sys.stderr)


def _decomposition_rows(r: Any) -> list[tuple[str, str]]:
    """The gap decomposition as a sum that adds up: its own ELBO(q) (S draws) and log p(x) (K draws, the tighter
    proposal), their difference, and the two gaps that make it (vaekit.inference.evaluate)."""
    if r.amortisation_gap is None or r.approximation_gap is None or r.gap_elbo is None:
        return []
    draws, k = (r.refinement or {}).get("elbo_samples"), r.importance_samples
    return [("gap decomposition, on its own draws:", ""),
            (f"  ELBO(q), S = {draws} draws", _fmt(r.gap_elbo)),
            ("  ELBO(q*), q* refined per example", _fmt(r.refined_elbo)),
            (f"  log p(x), K = {k}, proposal {r.gap_proposal}", _fmt(r.gap_log_likelihood)),
            ("  log p(x) - ELBO(q)", _fmt(r.gap_log_likelihood - r.gap_elbo)),
            ("    = amortisation gap ELBO(q*) - ELBO(q)", f"{_fmt(r.amortisation_gap)} ± {r.amortisation_gap_se:.4f}"),
            ("    + approximation gap log p(x) - ELBO(q*)",
             f"{_fmt(r.approximation_gap)} ± {r.approximation_gap_se:.4f}")]


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
    add_refine_options(p, default_steps=500)
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


def add_refine_options(p: argparse.ArgumentParser, *, default_steps: int) -> None:
    what = "" if default_steps else "; 0: no refinement, the encoder's q"
    p.add_argument("--refine-steps", metavar="N", type=ra.non_negative_int, default=default_steps,
                   help=f"Adam steps of the per-example posterior refinement (default: {default_steps}{what})")
    p.add_argument("--refine-lr", metavar="LR", type=_positive_float, default=0.05,
                   help="learning rate of the refinement, decayed to 0 by a cosine (default: 0.05)")
    p.add_argument("--refine-samples", metavar="S", type=ra.positive_int, default=16,
                   help="draws of z per example and refinement step (default: 16)")


def refinement_of(args: argparse.Namespace) -> Refinement:
    from vaekit.inference.gaps import Refinement

    if args.refine_steps < 1:
        raise ConfigError("--refine-steps: the gap decomposition needs at least 1 step")
    return Refinement(steps=args.refine_steps, lr=args.refine_lr, samples=args.refine_samples)


def register(subparsers) -> None:
    """Add ``evaluate`` to ``subparsers``."""
    _add_evaluate(subparsers)
