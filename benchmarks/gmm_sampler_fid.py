"""Sample quality of the prior against the ex-post Gaussian mixture sampler (``vaekit sample --sampler gmm``,
Ghosh et al. 2020) for the committed MNIST runs, by a Fréchet distance on a small classifier's features.

    python benchmarks/gmm_sampler_fid.py

(the recorded run; every option has a default, see ``--help``). Steps:

1. A small MNIST classifier is trained here (no download): an MLP 784-256-128-10 with ReLU, Adam lr 1e-3,
   batch 128, ``--classifier-epochs`` epochs on the 60,000 training images (grey levels in [0, 1]), seed 0;
   its accuracy on the 10,000 test images is recorded and its weights are written to
   ``benchmarks/results/gmm_sampler_fid_classifier.safetensors``. Its features are the 128 activations of the
   last hidden layer.
2. For each run directory under ``benchmarks/results/mnist-nll/`` (``--runs``; loaded with
   :func:`vaekit.store.runs.load_run`), ``--n`` samples are drawn twice: z ~ p(z) (the run's prior) and
   z ~ a mixture of ``--components`` full-covariance Gaussians fitted (:func:`vaekit.fit_latent_gmm`, seed 0)
   on the posterior means of the run's training split (its stored data split, binarised once with seed 0
   as every command sees it); each z is decoded to its mean E[x|z] (Bernoulli probabilities, grey images).
3. The Fréchet distance (``benchmarks/frechet.py``: |μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}), with
   ``scipy.linalg.sqrtm``) between the features of the samples and those of the 10,000 MNIST test images;
   the floor is the distance of ``--n`` real training images to the same test images.

Output: a table on stdout; raw JSON (settings, classifier accuracy, distances, the mixtures' fit, machine,
date, command) in ``benchmarks/results/gmm_sampler_fid.json``; sample grids (prior and GMM, first 64) in
``benchmarks/results/gmm_sampler_fid.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_common import machine_info, write_results
from frechet import frechet_distance, gaussian_statistics
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from safetensors.torch import save_file
from torch import nn

from vaekit import fit_latent_gmm, sample_gmm
from vaekit.data import load_dataset
from vaekit.store.runs import eval_tensor, load_run

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def classifier() -> nn.Sequential:
    """MLP 784-256-128-10, ReLU; ``[:-1]`` gives the 128 features."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def train_classifier(x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Sequential:
    torch.manual_seed(0)
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def features(net: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    return torch.cat([net[:-1](b.float()) for b in x.split(1000)]).double().numpy()


@torch.no_grad()
def accuracy(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.cat([net(b).argmax(1) for b in x.split(1000)]).eq(y).double().mean())


def grid(images: dict[str, torch.Tensor], path: Path) -> None:
    """``images``: (prior, GMM) pairs, in order; the priors' grids in the top row, the GMMs' below."""
    cols = (len(images) + 1) // 2
    fig = Figure(figsize=(2.3 * cols, 5.0), dpi=120, constrained_layout=True)
    FigureCanvasAgg(fig)
    for i, (name, x) in enumerate(images.items()):
        tiles = x[:64].reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28).numpy()
        ax = fig.add_subplot(2, cols, (i % 2) * cols + i // 2 + 1)
        ax.imshow(tiles, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--runs", default="vae,iwae5,vamp,best", help="run directories under benchmarks/results/mnist-nll")
    p.add_argument("--n", type=int, default=10000, help="samples per sampler (default 10000)")
    p.add_argument("--components", type=int, default=10, help="Gaussians of the mixture (default 10)")
    p.add_argument("--classifier-epochs", type=int, default=3, help="classifier training epochs (default 3)")
    p.add_argument("--classifier-train-n", type=int, default=None,
                   help="train the classifier on the first N training images only (default all)")
    p.add_argument("--fit-limit", type=int, default=None,
                   help="fit each mixture on the first N images of the run's training split (default all)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "gmm_sampler_fid.json")
    args = p.parse_args(argv)
    started = time.time()
    mnist = load_dataset("mnist", data_dir=args.data_dir, val_fraction=0.0)
    grey = {split: torch.as_tensor(getattr(mnist, split), dtype=torch.float32) / 255 for split in ("train", "test")}
    if args.n < 64:
        p.error("--n: the sample grids need at least 64 samples")
    net = train_classifier(grey["train"][:args.classifier_train_n],
                           torch.as_tensor(mnist.train_labels)[:args.classifier_train_n], args.classifier_epochs)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(args.out.with_name(args.out.stem + "_classifier.safetensors")))
    test_acc = accuracy(net, grey["test"], torch.as_tensor(mnist.test_labels))
    reference = gaussian_statistics(features(net, grey["test"]))
    floor = frechet_distance(*gaussian_statistics(features(net, grey["train"][:args.n])), *reference)
    print(f"classifier test accuracy {test_acc:.4f}; real-vs-real floor {floor:.3f}", flush=True)
    rows, pictures = [], {}
    for name in args.runs.split(","):
        run = load_run(HERE / "results" / "mnist-nll" / name)
        train = replace(run.data, data_dir=args.data_dir).load().train          # the run's own training split
        x = eval_tensor(run.preprocessing, train[:args.fit_limit], seed=0)
        fit_started = time.time()
        gmm = fit_latent_gmm(run.model, x, components=args.components, seed=0)
        fit_seconds = time.time() - fit_started
        with torch.no_grad():
            prior = run.model.sample(args.n, generator=torch.Generator().manual_seed(0))
        mixture = sample_gmm(run.model, gmm, args.n, generator=torch.Generator().manual_seed(0))
        row = {"run": name, "latent_dim": int(run.model.latent_dim), "prior": run.config.prior,
               "fd_prior": frechet_distance(*gaussian_statistics(features(net, prior)), *reference),
               "fd_gmm": frechet_distance(*gaussian_statistics(features(net, mixture)), *reference),
               "gmm": {"components": gmm.components, "fit_on": gmm.fit_on, "points": gmm.n,
                       "mean_log_likelihood": gmm.log_likelihood, "fit_seconds": fit_seconds}}
        rows.append(row)
        pictures[f"{name}: prior"], pictures[f"{name}: GMM"] = prior.float(), mixture.float()
        print(f"{name:<6} FD prior {row['fd_prior']:8.3f}   FD GMM({args.components}) {row['fd_gmm']:8.3f}", flush=True)
    grid(pictures, args.out.with_suffix(".png"))
    doc = {"benchmark": "gmm_sampler_fid", "command": "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]),
           "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "classifier": {"architecture": "MLP 784-256-128-10 ReLU, features: the 128 of the last hidden layer",
                          "epochs": args.classifier_epochs, "test_accuracy": test_acc},
           "reference": "the 10,000 MNIST test images (grey levels in [0, 1])",
           "samples": "decoder means E[x|z]", "fd_real_train_vs_test": floor, "rows": rows,
           "seconds": time.time() - started, **machine_info()}
    print(f"wrote {write_results(args.out, doc)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
