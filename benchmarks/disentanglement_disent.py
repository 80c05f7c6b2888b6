"""vaekit's disentanglement metrics against disent's (PyPI ``disent`` 0.8.0) on the same codes.

    python benchmarks/disentanglement_disent.py --setup [--venv DIR]     # once: the throwaway venv
    python benchmarks/disentanglement_disent.py [--venv DIR] [--samples N] [--votes N] [--epochs E]

disent is not a dependency of vaekit: ``--setup`` makes a separate virtual environment (default
/tmp/vaekit-disent-venv) with ``pip install torch==2.13.0`` (the CPU build this project uses), ``disent==0.8.0`` without
its dependencies, and the packages its metric modules import; ``benchmarks/disent_reference.py`` runs
there and imports nothing from vaekit.

Four representations of the shapes images (:mod:`vaekit.data.shapes`), each a table of codes for the
6,144 grid images: ``factors`` (the factor indices themselves), ``rotated`` (the standardised factors
times a random orthogonal matrix), ``noise`` (N(0, I) codes, independent of the image) and ``vae`` (the
posterior means of a β-VAE, β = 4, Bernoulli decoder, 8 latent dimensions, trained here for ``--epochs``
epochs with ``vaekit train --data shapes``). For each, ``--samples`` factor rows (and half as many for DCI's
test split) are drawn once with a fixed seed; vaekit (:mod:`vaekit.inference.disentanglement`) and disent
score the same codes of the same rows. MIG, SAP and DCI are then deterministic functions of those codes
(up to the tie-breaking of scikit-learn's gradient boosting), so the two should agree closely; the FactorVAE
score draws its own batches in each implementation (``--votes`` votes, two thirds to fit, one third to
score), so they agree up to sampling error: it is run with 5 seeds in each (the binomial standard error of
one accuracy over the eval votes is given too), and vaekit's also with every dimension kept (``min_std=0``,
disent's choice). Known differences in definition: disent keeps every code dimension in the FactorVAE score (its
``_prune_dims`` threshold is 0), vaekit leaves out those with std < 0.05 as Kim & Mnih and disentanglement_lib
do; SAP is the continuous-factor variant (squared correlation) in both.

Results: a table on stdout, the raw JSON in ``benchmarks/results/disentanglement_disent.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info, write_results

from vaekit.data import shapes
from vaekit.inference import disentanglement as dis

SEEDS = (1, 2, 3, 4, 5)
KEYS = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factorvae_score")
HERE = Path(__file__).resolve().parent
#: What --setup installs into the throwaway venv (disent and the packages its metric modules import).
SETUP = (["torch==2.13.0"], ["--no-deps", "disent==0.8.0", "lightning==2.6.6", "lightning-utilities", "torchmetrics"],
         ["numpy", "scipy", "scikit-learn", "h5py", "tqdm", "requests", "pillow", "packaging", "pyyaml", "fsspec",
          "typing-extensions"])


def setup(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for packages in SETUP:
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *packages], check=True)


def _vae_table(epochs: int, work: Path) -> tuple[np.ndarray, list[str]]:
    import torch

    from vaekit.store.runs import load_run

    command = ["vaekit", "train", "--data", "shapes", "--latent-dim", "8", "--beta", "4", "--likelihood",
               "bernoulli", "--hidden", "256,256", "--epochs", str(epochs), "--seed", "0", "--no-figures",
               "--importance-samples", "10", "--out", str(work / "vae")]
    subprocess.run([sys.executable, "-m", "vaekit", *command[1:]], check=True, stdout=subprocess.DEVNULL)
    run = load_run(work / "vae")
    run.model.eval()
    with torch.no_grad():
        x = run.preprocessing.prepare(shapes.render(shapes.factor_grid()))
        return run.model.summary(x).double().numpy(), command


def tables(epochs: int, work: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    grid = shapes.factor_grid()
    sizes = np.asarray(shapes.FACTOR_SIZES)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(len(sizes), len(sizes))))
    standard = (grid - (sizes - 1) / 2) / np.sqrt((sizes ** 2 - 1) / 12)
    vae, command = _vae_table(epochs, work)
    return {"factors": grid.astype(np.float64), "rotated": standard @ q,
            "noise": np.random.default_rng(1).normal(size=(len(grid), len(sizes))), "vae": vae}, command


def score_both(name: str, table: np.ndarray, args: argparse.Namespace, work: Path) -> dict:
    sizes = shapes.FACTOR_SIZES
    rng = np.random.default_rng(10)
    v, vt = dis.sample_factors(sizes, args.samples, rng), dis.sample_factors(sizes, args.samples // 2, rng)

    def represent(rows: np.ndarray) -> np.ndarray:
        return table[np.ravel_multi_index(tuple(rows.T), sizes)]
    train_votes = args.votes * 2 // 3
    started = time.perf_counter()
    d, c, i = dis.dci_scores((represent(v), v), (represent(vt), vt), estimators=100, seed=0)
    ours = {"mig": dis.mutual_information_gap(represent(v), v), "sap": dis.sap_score(represent(v), v),
            "dci_disentanglement": d, "dci_completeness": c, "dci_informativeness": i,
            "factorvae_score": 0.0}
    votes = {"train_votes": train_votes, "eval_votes": args.votes - train_votes, "variance_samples": 5000}
    fvae = {threshold: [dis.factorvae_score(represent, sizes, seed=seed, min_std=threshold, **votes)
                        for seed in SEEDS] for threshold in (0.05, 0.0)}
    ours["factorvae_score"] = fvae[0.05][0]
    ours_s = time.perf_counter() - started
    npz, out = work / f"{name}.npz", work / f"{name}.json"
    np.savez(npz, table=table, sizes=np.asarray(sizes), factors_train=v, factors_test=vt, seeds=np.asarray(SEEDS),
             train_votes=train_votes, eval_votes=args.votes - train_votes)
    subprocess.run([str(args.venv / "bin" / "python"), str(HERE / "disent_reference.py"), str(npz), str(out)],
                   check=True, stderr=subprocess.DEVNULL)
    theirs = json.loads(out.read_text())
    eval_votes = args.votes - train_votes
    se = {k: math.sqrt(max(p * (1 - p), 1e-12) / eval_votes) for k, p in
          (("vaekit", ours["factorvae_score"]), ("disent", theirs["factorvae_score"]))}
    spread = {"vaekit_min_std_0.05": fvae[0.05], "vaekit_min_std_0": fvae[0.0], "disent": theirs["factorvae_scores"]}
    return {"vaekit": ours, "disent": {k: theirs[k] for k in KEYS}, "disent_version": theirs["disent_version"],
            "difference": {k: ours[k] - theirs[k] for k in KEYS}, "factorvae_binomial_se": se,
            "factorvae_per_seed": spread,
            "factorvae_mean_sd": {k: [float(np.mean(x)), float(np.std(x, ddof=1))] for k, x in spread.items()},
            "vaekit_seconds": ours_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/vaekit-disent-venv"))
    parser.add_argument("--setup", action="store_true", help="make the throwaway venv with disent and stop")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--votes", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "disentanglement_disent.json")
    args = parser.parse_args()
    if args.setup:
        setup(args.venv)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        codes, command = tables(args.epochs, work)
        rows = {name: score_both(name, table, args, work) for name, table in codes.items()}
    print(f"{'representation':<15}" + "".join(f"{k:>22}" for k in KEYS))
    for name, row in rows.items():
        cells = "".join(f"{row['vaekit'][k]:>10.4f} / {row['disent'][k]:<9.4f}" for k in KEYS)
        print(f"{name:<15}{cells}")
    print(f"FactorVAE score over seeds {SEEDS}, mean ± sd: vaekit (std >= 0.05 kept) | vaekit (all kept) | disent")
    for name, row in rows.items():
        print(f"{name:<15}" + " | ".join(f"{m:.4f} ± {sd:.4f}" for m, sd in row["factorvae_mean_sd"].values()))
    doc = {"benchmark": "disentanglement metrics, vaekit vs disent on the same codes",
           "command": " ".join(["python", *sys.argv]), "machine": machine_info(), "samples": args.samples,
           "test_samples": args.samples // 2, "votes": args.votes, "vae_command": command,
           "representations": rows}
    print("wrote", write_results(args.out, doc))


if __name__ == "__main__":
    main()
