"""The posterior gap of MNIST VAEs split into amortisation and approximation gaps (Cremer et al. 2018).

    python benchmarks/gap_decomposition.py

(the recorded run; every option has a default, see ``--help``). One command trains four VAEs that
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
``diagonal 784-500-500`` (a wide one) and ``full 784-200-200`` (full-covariance q, h = L Lᵀ).
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
"""

from __future__ import annotations

import argparse
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
from vaekit.models.networks import MLP
from vaekit.store.runs import eval_tensor

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHAPE = (1, 28, 28)
#: (name, encoder hidden widths, posterior covariance)
MODELS = (("diagonal 784-200-200", (200, 200), "diagonal"),
          ("diagonal 784-32", (32,), "diagonal"),
          ("diagonal 784-500-500", (500, 500), "diagonal"),
          ("full 784-200-200", (200, 200), "full"))


def build(hidden: tuple[int, ...], covariance: str, latent_dim: int, decoder_hidden: tuple[int, ...]) -> VAE:
    """Encoder MLP 784-hidden with heads g, h (diagonal or full); decoder MLP K-decoder_hidden-784, logits."""
    trunk = MLP(SHAPE, hidden, None, "relu")
    encoder = GaussianEncoder(trunk, trunk.out_features, latent_dim, SHAPE, covariance)
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
    p.add_argument("--models", default=None, help="comma-separated subset of the model numbers 1-4 (default all)")
    p.add_argument("--decoder-hidden", default="200,200", help="decoder widths (default 200,200)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "gap_decomposition.json"))
    p.add_argument("--figure", default=str(HERE / "results" / "gap_decomposition.png"))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    chosen = MODELS if args.models is None else tuple(MODELS[int(i) - 1] for i in args.models.split(","))
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

    results = []
    for name, hidden, covariance in chosen:
        torch.manual_seed(0)
        model = build(hidden, covariance, args.latent_dim, decoder_hidden)
        t0 = time.perf_counter()
        fit = vaekit.fit(model, x_train, x_val, TrainConfig(epochs=args.epochs, batch_size=100, lr=1e-3, seed=0),
                         preprocessing=prep)
        train_s = time.perf_counter() - t0
        torch.manual_seed(1)
        t0 = time.perf_counter()
        ev = vaekit.evaluate(model, x_test, importance_samples=args.importance_samples, refinement=refinement,
                             gap_elbo_samples=args.gap_elbo_samples, batch_size=100)
        eval_s = time.perf_counter() - t0
        results.append({"model": name, "encoder_hidden": list(hidden), "posterior": covariance,
                        "train_seconds": train_s, "eval_seconds": eval_s,
                        "history": [m.to_dict() for m in fit.history], "evaluation": ev.to_dict()})
        print(f"{name:<22} train {train_s:6.0f} s  eval {eval_s:5.0f} s  ELBO {ev.elbo:8.2f}  "
              f"log p(x) {ev.log_likelihood:8.2f} ± {ev.log_likelihood_se:.2f} (proposal q*: "
              f"{ev.refined_log_likelihood:8.2f})  posterior gap {ev.posterior_gap:5.2f} "
              f"= amortisation {ev.amortisation_gap:5.2f} ± {ev.amortisation_gap_se:.2f} "
              f"+ approximation {ev.approximation_gap:5.2f} ± {ev.approximation_gap_se:.2f}", flush=True)

    doc = {"script": "benchmarks/gap_decomposition.py", "command": " ".join([Path(sys.executable).name, *sys.argv]),
           **machine_info(), "latent_dim": args.latent_dim, "epochs": args.epochs,
           "decoder_hidden": list(decoder_hidden), "importance_samples": args.importance_samples,
           "gap_elbo_samples": args.gap_elbo_samples, "refinement": refinement.to_dict(),
           "data": {"train_examples": int(x_train.shape[0]), "val_examples": int(x_val.shape[0]),
                    "test_examples": int(x_test.shape[0])},
           "total_seconds": time.perf_counter() - t_start, "results": results}
    figure(results, Path(args.figure))
    print(f"raw results: {write_results(args.out, doc)}; figure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
