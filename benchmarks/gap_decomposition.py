"""The posterior gap of MNIST VAEs split into amortisation and approximation gaps (Cremer et al. 2018).

    python benchmarks/gap_decomposition.py

(the recorded run; every option has a default, see ``--help``). One command trains five VAEs that
share the decoder and differ in the encoder, then splits each one's posterior gap
KL(q_x(z) || p(z|x)) = log p(x) - ELBO(q_x) on test images into

* the amortisation gap ELBO(q*_x) - ELBO(q_x): what a better encoder could recover, and
* the approximation gap log p(x) - ELBO(q*_x): what only a richer posterior family could,

with q*_x each image's best posterior of the model's family, found by refining q_x (Adam on its ELBO,
the model fixed; :mod:`vaekit.inference.gaps`).

Data: real MNIST from ``../shared/data/mnist`` (54,000 train / 6,000 validation / 10,000 test),
dynamically binarised for training (Bernoulli decoder); the first ``--test-n`` test images,
binarised once with seed 0, are evaluated.

Models (latent dimension ``--latent-dim``, ReLU, the same decoder f = MLP K-200-200-784 with
Bernoulli logits; seed 0): encoders
``diagonal 784-200-200`` (the IWAE paper's size), ``diagonal 784-32`` (a small encoder),
``diagonal 784-500-500`` (a wide one), ``full 784-200-200`` (full-covariance q, h = L Lᵀ) and
``iaf 784-200-200`` (an inverse autoregressive flow posterior, :mod:`vaekit.models.iaf`, with its default
``posterior_args``: 2 steps, MADE widths 64-64, context h(x) of width 32; its family for q*_x is every
(μ, σ, h) with the flow's networks fixed, :meth:`vaekit.prob.flows.FlowPosterior.free_parameters`).
Training: Adam lr 1e-3, batch 100, ``--epochs`` epochs of the ELBO by ``vaekit.fit``; the last
epoch's weights are evaluated.

Evaluation (``vaekit.evaluate`` with a ``Refinement``): log p(x) importance-sampled with K =
``--importance-samples`` draws from q_x (± its standard error) and, again, from q*_x (the split uses the
tighter of the two); ELBO(q_x) and ELBO(q*_x) with
``--gap-elbo-samples`` common draws each; the refinement takes ``--refine-steps`` Adam steps of
``--refine-samples`` draws at learning rate 0.05 (cosine-decayed); each gap with the standard error
of its mean over the images.

Output: a table on stdout; raw JSON (settings, training history, evaluations, machine, torch
version, date, command) in ``benchmarks/results/gap_decomposition.json``; a bar chart of the two
gaps per model in ``benchmarks/results/gap_decomposition.png``.

Rows alone: ``--rows iaf`` (or ``--models 5``) runs only the rows named; with ``--merge`` their results
replace the rows of the same name in the existing ``--out`` file (whose settings must equal this run's)
and the others are kept; each merged row records its own command, date and machine under ``"run"``:

    python benchmarks/gap_decomposition.py --rows iaf --merge
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import machine_info, write_results
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import vaekit
from vaekit import VAE, BernoulliLikelihood, Decoder, GaussianEncoder, TrainConfig
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.inference.gaps import Refinement
from vaekit.models.iaf import IAF_DEFAULTS, IAFEncoder
from vaekit.models.networks import MLP
from vaekit.store.runs import eval_tensor

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHAPE = (1, 28, 28)
#: (name, encoder hidden widths, posterior family: diagonal, full or iaf)
MODELS = (("diagonal 784-200-200", (200, 200), "diagonal"),
          ("diagonal 784-32", (32,), "diagonal"),
          ("diagonal 784-500-500", (500, 500), "diagonal"),
          ("full 784-200-200", (200, 200), "full"),
          ("iaf 784-200-200", (200, 200), "iaf"))
#: Short names of the rows for ``--rows``.
ROWS = {"diagonal": 0, "small": 1, "wide": 2, "full": 3, "iaf": 4}
#: Settings that must agree for rows of two runs to share one results file (``--merge``).
SHARED_SETTINGS = ("latent_dim", "epochs", "decoder_hidden", "importance_samples", "gap_elbo_samples", "refinement",
                   "data")


def build(hidden: tuple[int, ...], posterior: str, latent_dim: int, decoder_hidden: tuple[int, ...]) -> VAE:
    """Encoder MLP 784-hidden with heads g, h (diagonal or full), or an IAF on them (``iaf``, the default
    ``posterior_args``); decoder MLP K-decoder_hidden-784, logits."""
    trunk = MLP(SHAPE, hidden, None, "relu")
    if posterior == "iaf":
        encoder: torch.nn.Module = IAFEncoder(trunk, trunk.out_features, latent_dim, SHAPE, **IAF_DEFAULTS)
    else:
        encoder = GaussianEncoder(trunk, trunk.out_features, latent_dim, SHAPE, posterior)
    f = MLP(latent_dim, decoder_hidden, 784, "relu")
    return VAE(encoder, Decoder(f, latent_dim, SHAPE, BernoulliLikelihood()), latent_dim, SHAPE)


def figure(results: list[dict], path: Path) -> None:
    fig = Figure(figsize=(7.5, 3.8), dpi=120, constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [r["model"] for r in results]
    x = np.arange(len(names))
    for offset, key, label in ((-0.18, "amortisation_gap", "amortisation gap ELBO(q*) − ELBO(q)"),
                               (0.18, "approximation_gap", "approximation gap log p(x) − ELBO(q*)")):
        values = [r["evaluation"][key] for r in results]
        errors = [2 * r["evaluation"][f"{key}_se"] for r in results]
        ax.bar(x + offset, values, width=0.36, yerr=errors, capsize=3, label=label)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("nats per image (± 2 s.e.)")
    ax.set_title("The posterior gap KL(q(z|x) || p(z|x)) of MNIST VAEs, split", fontsize=10)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20, help="training epochs per model (default 20)")
    p.add_argument("--train-n", type=int, default=None, help="use only the first N training examples (default all)")
    p.add_argument("--val-n", type=int, default=1000, help="validation examples evaluated each epoch (default 1000)")
    p.add_argument("--test-n", type=int, default=500, help="test images evaluated (default 500)")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--importance-samples", type=int, default=1000, help="K for log p(x) (default 1000)")
    p.add_argument("--gap-elbo-samples", type=int, default=1000, help="draws for ELBO(q), ELBO(q*) (default 1000)")
    p.add_argument("--refine-steps", type=int, default=500, help="Adam steps of the refinement (default 500)")
    p.add_argument("--refine-samples", type=int, default=16, help="draws per refinement step (default 16)")
    p.add_argument("--models", default=None, help="comma-separated subset of the model numbers 1-5 (default all)")
    p.add_argument("--rows", default=None, help=f"comma-separated subset of the rows by name: {', '.join(ROWS)} "
                   "(default all)")
    p.add_argument("--merge", action="store_true", help="replace these rows in the existing --out file, keeping "
                   "the others (the settings must be the same)")
    p.add_argument("--decoder-hidden", default="200,200", help="decoder widths (default 200,200)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "gap_decomposition.json"))
    p.add_argument("--figure", default=str(HERE / "results" / "gap_decomposition.png"))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    chosen = _chosen(p, args)
    decoder_hidden = tuple(int(h) for h in args.decoder_hidden.split(","))
    refinement = Refinement(steps=args.refine_steps, samples=args.refine_samples)
    t_start = time.perf_counter()

    dataset = load_dataset("mnist", data_dir=args.data_dir)
    prep = fit_preprocessing(dataset, "binary")                 # x/255, dynamically binarised per batch
    train_raw = dataset.train if args.train_n is None else dataset.train[:args.train_n]
    x_train, x_val = prep.prepare(train_raw), prep.prepare(dataset.val[:args.val_n])
    x_test = eval_tensor(prep, dataset.test[:args.test_n], seed=0)
    print(f"MNIST from {args.data_dir}: train {x_train.shape[0]}, val {x_val.shape[0]}, test {x_test.shape[0]} "
          f"(binarised once, seed 0); K = {args.latent_dim}; decoder {args.latent_dim}-{args.decoder_hidden}-784; "
          f"{args.epochs} epochs; importance samples {args.importance_samples}; refinement {refinement}; "
          f"threads {torch.get_num_threads()}; torch {torch.__version__}", flush=True)

    settings = {"latent_dim": args.latent_dim, "epochs": args.epochs, "decoder_hidden": list(decoder_hidden),
                "importance_samples": args.importance_samples, "gap_elbo_samples": args.gap_elbo_samples,
                "refinement": refinement.to_dict(),
                "data": {"train_examples": int(x_train.shape[0]), "val_examples": int(x_val.shape[0]),
                         "test_examples": int(x_test.shape[0])}}
    old = _mergeable(Path(args.out), settings) if args.merge else None    # before the hour of training

    results = []
    for name, hidden, posterior in chosen:
        torch.manual_seed(0)
        model = build(hidden, posterior, args.latent_dim, decoder_hidden)
        t0 = time.perf_counter()
        fit = vaekit.fit(model, x_train, x_val, TrainConfig(epochs=args.epochs, batch_size=100, lr=1e-3, seed=0),
                         preprocessing=prep, restore_best=False)   # the published protocol: the last epoch's weights
        train_s = time.perf_counter() - t0
        torch.manual_seed(1)
        t0 = time.perf_counter()
        ev = vaekit.evaluate(model, x_test, importance_samples=args.importance_samples, refinement=refinement,
                             gap_elbo_samples=args.gap_elbo_samples, batch_size=100)
        eval_s = time.perf_counter() - t0
        results.append({"model": name, "encoder_hidden": list(hidden), "posterior": posterior,
                        **({"posterior_args": dict(IAF_DEFAULTS)} if posterior == "iaf" else {}),
                        "train_seconds": train_s, "eval_seconds": eval_s,
                        "history": [m.to_dict() for m in fit.history], "evaluation": ev.to_dict()})
        print(f"{name:<22} train {train_s:6.0f} s  eval {eval_s:5.0f} s  ELBO {ev.elbo:8.2f}  "
              f"log p(x) {ev.log_likelihood:8.2f} ± {ev.log_likelihood_se:.2f} (proposal q*: "
              f"{ev.refined_log_likelihood:8.2f})  posterior gap {ev.posterior_gap:5.2f} "
              f"= amortisation {ev.amortisation_gap:5.2f} ± {ev.amortisation_gap_se:.2f} "
              f"+ approximation {ev.approximation_gap:5.2f} ± {ev.approximation_gap_se:.2f}", flush=True)

    doc = {"script": "benchmarks/gap_decomposition.py", "command": " ".join([Path(sys.executable).name, *sys.argv]),
           **machine_info(), **settings, "total_seconds": time.perf_counter() - t_start, "results": results}
    if old is not None:
        doc = _merged(old, doc)
    figure(doc["results"], Path(args.figure))
    print(f"raw results: {write_results(args.out, doc)}; figure: {args.figure}")
    return 0


def _chosen(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple:
    """The rows ``--models`` (numbers) or ``--rows`` (names) select, in table order; all by default."""
    if args.models is not None and args.rows is not None:
        p.error("--models and --rows: give one of them")
    try:
        if args.rows is not None:
            picked = {ROWS[name.strip()] for name in args.rows.split(",")}
        elif args.models is not None:
            picked = {int(i) - 1 for i in args.models.split(",")}
        else:
            picked = set(range(len(MODELS)))
    except (KeyError, ValueError) as exc:
        p.error(f"unknown row {exc}; rows are {', '.join(ROWS)} (--rows) or 1-{len(MODELS)} (--models)")
    if not picked or not all(0 <= i < len(MODELS) for i in picked):
        p.error(f"--models: numbers from 1 to {len(MODELS)}, got {args.models!r}")
    return tuple(MODELS[i] for i in sorted(picked))


def _mergeable(path: Path, settings: dict) -> dict | None:
    """The results file at ``path`` (None if there is none), if it was made with these ``settings``; else exit."""
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    differ = [key for key in SHARED_SETTINGS if old.get(key) != settings[key]]
    if differ:
        raise SystemExit(f"--merge: {path} was made with other settings ({', '.join(differ)}); run the rows "
                         "with the same options or write another --out")
    return old


def _merged(old: dict, doc: dict) -> dict:
    """The results ``old`` with this run's rows (``doc``) in place of those of the same name (each marked with
    this run's command, date and machine under ``"run"``), in table order; its other fields (the first
    run's) are kept."""
    run = {key: doc[key] for key in ("command", "machine", "torch_version", "threads", "date", "total_seconds")}
    rows = {r["model"]: r for r in old["results"]}
    rows.update({r["model"]: {**r, "run": run} for r in doc["results"]})
    order = [name for name, _, _ in MODELS]
    return {**old, "results": sorted(rows.values(), key=lambda r: order.index(r["model"]) if r["model"] in order
                                     else len(order))}


if __name__ == "__main__":
    raise SystemExit(main())
