"""``vaekit disentanglement RUN_DIR``: MIG, SAP, DCI and the FactorVAE score of a run trained on
``--data shapes`` (:mod:`vaekit.data.shapes`, whose images come with their generative factors).

The representation is the posterior mean E_q[z|x] of each image (what ``vaekit encode`` writes), of
every image of the shapes grid; the metrics (:mod:`vaekit.inference.disentanglement`) draw factor
combinations uniformly and compare their codes with the factors. ``--samples`` examples train the DCI
classifiers and estimate MIG and SAP, and half as many more score DCI's informativeness; the
FactorVAE score takes ``--votes`` votes of 64 images each (two thirds to fit its classifier, one third
to score it). Everything is seeded by ``--seed``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vaekit.cli import run_access as ra
from vaekit.errors import ConfigError

__all__ = ["register", "KEYS"]

KEYS = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factorvae_score")


def register(subparsers: Any) -> None:
    """Add ``vaekit disentanglement`` to ``subparsers``."""
    p = ra.add_parser(subparsers, "disentanglement", "MIG, SAP, DCI and FactorVAE score of a run on shapes",
                      " ".join((__doc__ or "").split("\n\n", 1)[1].split()),
                      "vaekit train --data shapes --latent-dim 6 --epochs 20 --out runs/shapes && "
                      "vaekit disentanglement runs/shapes --json")
    p.add_argument("--samples", metavar="N", type=_at_least(50), default=2000,
                   help="examples for MIG, SAP and the DCI classifiers (default 2000)")
    p.add_argument("--votes", metavar="N", type=_at_least(3), default=1200,
                   help="FactorVAE votes of 64 images each (default 1200)")
    p.add_argument("--estimators", metavar="N", type=_at_least(1), default=100,
                   help="boosting stages of each DCI classifier (default 100, as disentanglement_lib)")
    p.add_argument("--seed", metavar="S", type=ra.non_negative_int, default=0, help="seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    p.set_defaults(func=_cmd_disentanglement)


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def _representation(run: Any, device: Any) -> Any:
    """represent(factor rows (N, 5)) -> the posterior means (N, K) of their images: every image of the
    shapes grid is encoded once, and each row looks its code up."""
    import numpy as np
    import torch

    from vaekit.data.shapes import FACTOR_SIZES, factor_grid, render

    images, codes = render(factor_grid()), []
    with torch.no_grad():
        for start in range(0, len(images), 1024):
            x = run.preprocessing.prepare(images[start:start + 1024]).to(device, ra.model_dtype(run))
            codes.append(run.model.summary(x).to("cpu", torch.float64).numpy())
    table = np.concatenate(codes)                                     # row i: the code of factor_grid()[i]

    def represent(rows: np.ndarray) -> np.ndarray:
        return table[np.ravel_multi_index(tuple(np.asarray(rows).T), FACTOR_SIZES)]
    return represent


def _cmd_disentanglement(args: argparse.Namespace) -> int:
    from vaekit.data.shapes import FACTOR_SIZES, IMAGE_SIZE
    from vaekit.inference.disentanglement import disentanglement_scores

    run, device = ra.load(args)
    if run.data.spec != "shapes" or tuple(run.config.data_shape) != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ConfigError(f"{args.run_dir}: trained on {run.data.spec!r}; the metrics need the factors of "
                          "--data shapes (vaekit train --data shapes ...)")
    if getattr(run.model, "num_classes", 0):
        raise ConfigError(f"{args.run_dir}: a conditional run; its codes q(z|x, y) depend on the labels, "
                          "so its representation of an image alone is not defined")
    if run.config.latent_dim < 2:
        raise ConfigError(f"{args.run_dir}: latent_dim {run.config.latent_dim}; MIG and SAP compare code "
                          "dimensions and need at least 2")
    train_votes = args.votes * 2 // 3
    scores = disentanglement_scores(_representation(run, device), FACTOR_SIZES, samples=args.samples,
                                    test_samples=max(args.samples // 2, 2), seed=args.seed,
                                    estimators=args.estimators, train_votes=train_votes,
                                    eval_votes=args.votes - train_votes)
    values = scores.to_dict()
    if args.json:
        print(json.dumps({"run_dir": str(args.run_dir), "samples": args.samples, "votes": args.votes,
                          "estimators": args.estimators, "seed": args.seed, **values}, indent=2))
        return 0
    width = max(map(len, KEYS))
    for key in KEYS:
        print(f"{key:<{width}}  {values[key]:.4f}")
    return 0
