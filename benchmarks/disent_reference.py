"""The reference side of ``benchmarks/disentanglement_disent.py``: disent's metrics on the same codes.

    THROWAWAY_VENV/bin/python benchmarks/disent_reference.py CODES.npz OUT.json

Runs in a separate virtual environment that holds disent (``pip install --no-deps disent==0.8.0`` and the
packages its metric modules import; ``benchmarks/disentanglement_disent.py --setup`` makes one), never in
vaekit's: it imports nothing from vaekit. CODES.npz holds ``table`` (the codes of every image of the shapes
grid, row i for the grid's i-th factor row, C order), ``sizes`` (the factor sizes), and the factor rows
``factors_train``, ``factors_test`` that vaekit's side scored, and ``seeds``, one FactorVAE score per seed.

disent's metric functions are disentanglement_lib's (Locatello et al. 2019) ported to PyTorch; MIG, SAP and
DCI are called through their inner functions (``_compute_mig``, ``_compute_sap``, ``_compute_dci``) on the
same codes as vaekit's, and the FactorVAE score through ``metric_factor_vae`` on a ``DisentDataset`` whose
observations are the grid indices and whose representation function looks the codes up in ``table``, so that
disent draws its own batches with one factor fixed.

disent's package imports torchvision (for dataset classes and a perceptual loss the metrics never use); the
torchvision wheels on PyPI are built for other torch builds than the one this machine installs, so the script
puts an empty stand-in module for torchvision on ``sys.modules`` before importing disent. The metric code
itself (NumPy and scikit-learn) runs unchanged.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import numpy as np


def _stand_in(name: str) -> None:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def attribute(attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (), {})
    module.__getattr__ = attribute  # type: ignore[method-assign]
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def main(npz: str, out: str) -> None:
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.transforms.functional",
                 "torchvision.models"):
        _stand_in(name)
    import disent
    import torch
    from disent.dataset import DisentDataset
    from disent.dataset.data import ArrayGroundTruthData
    from disent.metrics._dci import _compute_dci
    from disent.metrics._factor_vae import metric_factor_vae
    from disent.metrics._mig import _compute_mig
    from disent.metrics._sap import _compute_sap

    data = np.load(npz)
    table, sizes = data["table"], tuple(int(s) for s in data["sizes"])
    v, vt = data["factors_train"], data["factors_test"]
    flat = np.ravel_multi_index(tuple(v.T), sizes)
    flat_t = np.ravel_multi_index(tuple(vt.T), sizes)
    c, ct = table[flat], table[flat_t]
    result = {"disent_version": getattr(disent, "__version__", "0.8.0")}
    result["mig"] = float(_compute_mig(c.T, v.T)["mig.discrete_score"])
    result["sap"] = float(_compute_sap(c.T, v.T, ct.T, vt.T, continuous_factors=True)["sap.score"])
    dci = _compute_dci(c.T, v.T, ct.T, vt.T)
    result["dci_disentanglement"] = float(dci["dci.disentanglement"])
    result["dci_completeness"] = float(dci["dci.completeness"])
    result["dci_informativeness"] = float(dci["dci.informativeness_test"])
    index = np.arange(len(table), dtype=np.float32).reshape(-1, 1, 1, 1)     # observation i: grid image i
    gt = ArrayGroundTruthData(index, factor_names=tuple(f"f{j}" for j in range(len(sizes))), factor_sizes=sizes,
                              array_chn_is_last=False)
    dataset = DisentDataset(gt)

    def represent(x: torch.Tensor) -> np.ndarray:
        return table[np.asarray(x, dtype=np.float64).reshape(len(x)).round().astype(np.int64)]
    runs = []
    for seed in data["seeds"]:                        # disent draws with NumPy's global generator
        np.random.seed(int(seed))
        scores = metric_factor_vae(dataset, represent, num_train=int(data["train_votes"]),
                                   num_eval=int(data["eval_votes"]), num_variance_estimate=5000)
        runs.append(float(scores["factor_vae.eval_accuracy"]))
    result["factorvae_score"], result["factorvae_scores"] = runs[0], runs
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
