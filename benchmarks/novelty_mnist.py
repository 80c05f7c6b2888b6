"""Novelty detection on MNIST with ``vaekit score``: a VAE trained on digits 0-8, digit 9 the novelty.

    python benchmarks/novelty_mnist.py

(the recorded run; every option has a default, see ``--help``). Steps:

1. The MNIST training images of digits 0-8 (``../shared/data/mnist``) are written to a ``.npy`` file and
   ``vaekit train`` trains on them (dynamically binarised, Bernoulli decoder, MLP 784-200-200, K =
   ``--latent-dim``, ``--epochs`` epochs, 5 % held out for validation), in a subprocess, as a user would.
2. ``vaekit score`` scores the 10,000 test images (all ten digits, written to a ``.npy`` file in t10k
   order, binarised once with seed 0 as every command does) with K = ``--importance-samples``, and
   ``--reference val --quantile 0.99`` flags those beyond the 0.99 quantile of the validation split's log p(x).
3. For each score, the anomaly score is the score itself where a high value is unusual (KL, posterior gap)
   and its negative where a low one is (log p(x), ELBO, reconstruction): ROC-AUC and the precision at 95 %
   recall (the largest precision among the thresholds whose recall is >= 0.95) of "the image is a 9"
   (scikit-learn's ``roc_auc_score`` and ``precision_recall_curve``).
4. Two baselines, run here on the same binarised images (training images of 0-8 binarised once with
   seed 0): the reconstruction error of a PCA with ``--pca-components`` components fitted on them, and
   scikit-learn's ``IsolationForest`` (200 trees, seed 0; anomaly score ``-score_samples``).

Output: a table on stdout; raw JSON (settings, the training run's final evaluation, every metric, the flag
counts, machine, date, command) in ``benchmarks/results/novelty_mnist.json``; ROC curves in
``benchmarks/results/novelty_mnist.png``. The run directory and the score table go under
``benchmarks/results/tmp/`` (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import machine_info, write_results
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from vaekit.data import load_dataset
from vaekit.inference.scores import HIGHER_IS_NORMAL
from vaekit.store.runs import eval_tensor, load_run

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NOVEL = 9


def precision_at_recall(labels: np.ndarray, anomaly: np.ndarray, recall: float = 0.95) -> float:
    """The largest precision among the thresholds whose recall of ``labels`` == 1 is at least ``recall``."""
    precision, achieved, _ = precision_recall_curve(labels, anomaly)
    return float(precision[achieved >= recall].max())


def metrics(labels: np.ndarray, anomaly: np.ndarray) -> dict:
    return {"roc_auc": float(roc_auc_score(labels, anomaly)),
            "precision_at_95_recall": precision_at_recall(labels, anomaly)}


def vaekit_cli(*argv: str) -> str:
    """Run ``python -m vaekit ARGV`` (one thread, no progress bars); its stdout, or exit with its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print("$ vaekit " + " ".join(argv), flush=True)
    done = subprocess.run([sys.executable, "-m", "vaekit", *argv], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"vaekit {argv[0]} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def baselines(train: np.ndarray, test: np.ndarray, labels: np.ndarray,
              components: int) -> tuple[dict, dict[str, np.ndarray]]:
    """PCA reconstruction error and IsolationForest, fitted on ``train`` (N, 784), scored on ``test``:
    (their metrics, their anomaly scores)."""
    out: dict = {}
    pca = PCA(n_components=components, random_state=0).fit(train)
    error = ((test - pca.inverse_transform(pca.transform(test))) ** 2).sum(1)
    out["pca_reconstruction_error"] = {**metrics(labels, error), "components": components,
                                       "explained_variance": float(pca.explained_variance_ratio_.sum())}
    forest = IsolationForest(n_estimators=200, random_state=0).fit(train)
    out["isolation_forest"] = {**metrics(labels, -forest.score_samples(test)), "n_estimators": 200}
    return out, {"pca_reconstruction_error": error, "isolation_forest": -forest.score_samples(test)}


def figure(curves: dict[str, np.ndarray], labels: np.ndarray, path: Path) -> None:
    fig = Figure(figsize=(5.2, 4.4), dpi=120, constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, anomaly in curves.items():
        fpr, tpr, _ = roc_curve(labels, anomaly)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, anomaly):.3f})", lw=1.2)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
    ax.set_xlabel("false positive rate (digits 0-8 flagged)")
    ax.set_ylabel("true positive rate (9s flagged)")
    ax.set_title("MNIST novelty: a VAE trained on 0-8, digit 9 unseen", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path)


def _table(path: Path) -> dict[str, np.ndarray]:
    header, *rows = path.read_text().splitlines()
    values = np.array([[float(v) for v in row.split(",")] for row in rows])
    return dict(zip(header.split(","), values.T, strict=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--latent-dim", type=int, default=16, help="latent dimensions (default 16)")
    p.add_argument("--importance-samples", type=int, default=100, help="K of log p(x) (default 100)")
    p.add_argument("--pca-components", type=int, default=16, help="PCA components (default 16)")
    p.add_argument("--train-n", type=int, default=None, help="the first N training images of 0-8 only (default all)")
    p.add_argument("--test-n", type=int, default=None, help="the first N test images only (default all)")
    p.add_argument("--work", type=Path, default=HERE / "results" / "tmp" / "novelty_mnist")
    p.add_argument("--out", type=Path, default=HERE / "results" / "novelty_mnist.json")
    args = p.parse_args(argv)
    started = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    mnist = load_dataset("mnist", data_dir=args.data_dir, val_fraction=0.0)
    known = np.flatnonzero(mnist.train_labels != NOVEL)[:args.train_n]      # indices of the 0-8 training images
    test, labels = mnist.test[:args.test_n], (mnist.test_labels[:args.test_n] == NOVEL).astype(int)
    np.save(args.work / "train08.npy", mnist.train[known])
    np.save(args.work / "test.npy", test)
    run = args.work / "run"
    shutil.rmtree(run, ignore_errors=True)                  # a fresh run each time (inside the ignored tmp folder)
    train_argv = ["train", "--data", str(args.work / "train08.npy"), "--val-fraction", "0.05", "--test-fraction",
                  "0", "--likelihood", "bernoulli", "--hidden", "200,200", "--activation", "tanh", "--latent-dim",
                  str(args.latent_dim), "--epochs", str(args.epochs), "--batch-size", "128", "--lr", "1e-3",
                  "--importance-samples", "100", "--seed", "0", "--no-progress", "--no-figures", "--out", str(run)]
    vaekit_cli(*train_argv)
    scores_csv = args.work / "scores.csv"
    score_doc = json.loads(vaekit_cli("score", str(run), "--data", str(args.work / "test.npy"), "--importance-samples",
                                      str(args.importance_samples), "--reference", "val", "--quantile", "0.99",
                                      "--out", str(scores_csv), "--force", "--json"))
    table = _table(scores_csv)
    results: dict = {}
    curves: dict[str, np.ndarray] = {}
    for name in ("log_likelihood", "elbo", "reconstruction", "kl", "posterior_gap"):
        anomaly = -table[name] if name in HIGHER_IS_NORMAL else table[name]
        results[name], curves[name] = metrics(labels, anomaly), anomaly
    flagged = table["flag"] == 1
    prep = load_run(run).preprocessing
    binary_train = eval_tensor(prep, mnist.train[known], seed=0).reshape(len(known), -1).numpy()
    binary_test = eval_tensor(prep, test, seed=0).reshape(len(labels), -1).numpy()
    base, base_scores = baselines(binary_train, binary_test, labels, args.pca_components)
    results.update(base)
    curves.update(base_scores)
    figure(curves, labels, args.out.with_suffix(".png"))
    saved = run / "evaluation-val.json"
    evaluation = json.loads(saved.read_text()) if saved.exists() else None
    doc = {"benchmark": "novelty_mnist", "command": "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]),
           "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "train_command": "vaekit " + " ".join(train_argv), "novel_digit": NOVEL,
           "test_images": int(len(labels)), "novel_images": int(labels.sum()),
           "train_images": len(known), "validation_evaluation": evaluation,
           "flags": {"threshold": score_doc["threshold"], "flagged": int(flagged.sum()),
                     "flagged_nines": int((flagged & (labels == 1)).sum()),
                     "flagged_0_8": int((flagged & (labels == 0)).sum())},
           "results": results, "seconds": time.time() - started, **machine_info()}
    print(f"wrote {write_results(args.out, doc)}")
    print(f"{'score':<28} {'ROC-AUC':>8} {'precision at 95 % recall':>25}")
    for name, row in results.items():
        print(f"{name:<28} {row['roc_auc']:>8.4f} {row['precision_at_95_recall']:>25.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
