"""The disentanglement metrics on representations whose answer is known (the factors themselves: 1; a
random rotation of them, or noise: low), their formulas against independent computations (SciPy's
entropy and Pearson correlation), the shapes images, and ``vaekit disentanglement`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from vaekit.data import shapes
from vaekit.inference import disentanglement as dis

SIZES = shapes.FACTOR_SIZES
MEAN = (np.asarray(SIZES) - 1) / 2
STD = np.sqrt((np.asarray(SIZES) ** 2 - 1) / 12)                    # of a uniform factor index


def _rotation(seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(SIZES), len(SIZES))))
    return q


def identity(v):
    return v.astype(float)


def rotated(v):
    return ((v - MEAN) / STD) @ _rotation()


def noise(v):
    return np.random.default_rng(int(v.sum()) % 1000).normal(size=(len(v), len(SIZES)))


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    v, vt = dis.sample_factors(SIZES, 400, rng), dis.sample_factors(SIZES, 200, rng)
    return v, vt


def test_mig_and_sap(sample):
    v, _ = sample
    assert dis.mutual_information_gap(identity(v), v) > 0.97
    assert dis.sap_score(identity(v), v) > 0.97
    assert dis.mutual_information_gap(rotated(v), v) < 0.4 and dis.sap_score(rotated(v), v) < 0.4
    assert dis.mutual_information_gap(noise(v), v) < 0.05 and dis.sap_score(noise(v), v) < 0.05
    twice = np.concatenate([identity(v), identity(v)], axis=1)     # each factor in two codes: no gap at all
    assert dis.mutual_information_gap(twice, v) == pytest.approx(0.0, abs=1e-12)
    assert dis.sap_score(twice, v) == pytest.approx(0.0, abs=1e-12)


def test_sap_is_the_mean_gap_of_squared_correlations(sample):
    v, _ = sample
    c = rotated(v)[:, :4] + np.random.default_rng(3).normal(scale=0.3, size=(len(v), 4))
    r2 = np.array([[stats.pearsonr(c[:, k], v[:, j])[0] ** 2 for j in range(len(SIZES))] for k in range(4)])
    top = np.sort(r2, axis=0)
    assert dis.sap_score(c, v) == pytest.approx(np.mean(top[-1] - top[-2]), rel=1e-10)


def test_mig_normalises_by_the_factor_entropy(sample):
    """One code equal to the shape factor, the others noise: the shape's gap is I(c; v) = H(v) less the
    largest noise MI, so MIG = (1 + the other factors' small gaps) / F; H from SciPy's entropy."""
    v, _ = sample
    c = np.concatenate([v[:, :1].astype(float), noise(v)[:, :3]], axis=1)
    from sklearn.metrics import mutual_info_score

    h = stats.entropy(np.bincount(v[:, 0]))
    assert mutual_info_score(v[:, 0], v[:, 0]) == pytest.approx(h, rel=1e-12)
    assert dis.mutual_information_gap(c, v) == pytest.approx(1 / len(SIZES), abs=0.03)


def test_dci(sample):
    v, vt = sample
    d, c, i = dis.dci_scores((identity(v), v), (identity(vt), vt), estimators=10)
    assert d > 0.99 and c > 0.99 and i == 1.0
    d, c, i = dis.dci_scores((rotated(v), v), (rotated(vt), vt), estimators=10)
    assert d < 0.6 and c < 0.6
    d, c, i = dis.dci_scores((noise(v), v), (noise(vt), vt), estimators=10)
    chance = np.mean([1 / n for n in SIZES])
    assert d < 0.1 and c < 0.1 and i < chance + 0.1


def test_dci_entropy_is_scipys():
    rng = np.random.default_rng(1)
    weights = rng.random((6, 4))
    ours = dis._normalised_entropy(weights, 4)
    assert ours == pytest.approx(stats.entropy(weights + 1e-11, base=4), rel=1e-10)


def test_factorvae_score():
    assert dis.factorvae_score(identity, SIZES, train_votes=60, eval_votes=40, variance_samples=500) == 1.0
    assert dis.factorvae_score(noise, SIZES, train_votes=60, eval_votes=40, variance_samples=500) < 0.45
    constant = dis.factorvae_score(lambda v: np.zeros((len(v), 3)), SIZES, train_votes=5, eval_votes=5)
    assert constant == 0.0


def test_shapes_images_follow_their_factors():
    grid = shapes.factor_grid()
    assert grid.shape == (int(np.prod(SIZES)), 5) and len({tuple(r) for r in grid}) == len(grid)
    base = np.array([[0, 1, 0, 0, 0]])
    images = {}
    for name, change in (("base", {}), ("x", {3: 7}), ("y", {4: 7}), ("big", {1: 3}), ("small", {1: 0}),
                         ("quarter", {2: 2}), ("eighth", {2: 1}), ("ellipse", {0: 1})):
        row = base.copy()
        for j, value in change.items():
            row[0, j] = value
        images[name] = shapes.render(row)[0, 0].astype(float)
    centre = {k: (np.argwhere(im).mean(0) if im.any() else None) for k, im in images.items()}
    assert centre["x"][1] - centre["base"][1] > 15 and abs(centre["x"][0] - centre["base"][0]) < 1   # x: columns
    assert centre["y"][0] - centre["base"][0] > 15                                                   # y: rows
    assert images["big"].sum() > images["base"].sum() > images["small"].sum() > 0
    assert np.array_equal(images["quarter"], images["base"])          # a square after a quarter turn
    assert not np.array_equal(images["eighth"], images["base"])
    assert not np.array_equal(images["ellipse"], images["base"])
    assert np.array_equal(shapes.render(grid[:50]), shapes.render(grid[:50]))     # a pure function
    assert set(np.unique(shapes.render(grid[::97]))) == {0, 1}


# --------------------------------------------------------------------------- the command

ENV = {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}


def _make_run(directory, spec: str, shape: tuple[int, ...]):
    import torch

    from vaekit import VAEConfig, build_vae
    from vaekit.data import fit_preprocessing, load_dataset
    from vaekit.store.model_files import save_model
    from vaekit.store.runs import DataSpec

    torch.manual_seed(0)
    model = build_vae(VAEConfig(shape, latent_dim=3, arch_args={"hidden": (8,)}))
    prep = fit_preprocessing(load_dataset(spec), "gaussian")
    save_model(model, directory, extra={"preprocessing": prep.to_dict(), "data": DataSpec(spec=spec).to_dict(),
                                        "train": {}})
    return model, prep


def test_the_command_refuses_a_run_not_trained_on_shapes(tmp_path):
    _make_run(tmp_path / "digits", "digits", (1, 8, 8))
    wrong = subprocess.run([sys.executable, "-m", "vaekit", "disentanglement", "digits"], cwd=tmp_path,
                           capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "trained on 'digits'" in wrong.stderr


@pytest.mark.slow
def test_the_command_scores_a_shapes_run(tmp_path):
    import torch

    model, prep = _make_run(tmp_path / "run", "shapes", (1, 32, 32))
    argv = [sys.executable, "-m", "vaekit", "disentanglement"]
    proc = subprocess.run([*argv, "run", "--json", "--samples", "120", "--votes", "12", "--seed", "4",
                           "--estimators", "5"], cwd=tmp_path,
                          capture_output=True, text=True, env=ENV, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    grid = shapes.factor_grid()
    with torch.no_grad():
        codes = model.summary(prep.prepare(shapes.render(grid))).double().numpy()
    table = {tuple(row): code for row, code in zip(grid, codes, strict=True)}

    def represent(v):
        return np.stack([table[tuple(row)] for row in v])
    expected = dis.disentanglement_scores(represent, SIZES, samples=120, test_samples=60, seed=4, train_votes=8,
                                          eval_votes=4, estimators=5)
    for key, value in expected.to_dict().items():
        assert doc[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_a_vae_trained_on_shapes_end_to_end(tmp_path):
    """``vaekit train --data shapes`` then ``vaekit disentanglement`` on the run, both real commands: the table
    and --json print the same scores, each in [0, 1], and the trained encoder beats chance on DCI's
    informativeness."""
    train = subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", "shapes", "--likelihood", "bernoulli",
                            "--latent-dim", "4", "--hidden", "64", "--epochs", "2", "--no-figures",
                            "--importance-samples", "2", "--out", "run"], cwd=tmp_path, capture_output=True,
                           text=True, env=ENV, timeout=600, check=False)
    assert train.returncode == 0, train.stderr
    argv = [sys.executable, "-m", "vaekit", "disentanglement", "run", "--samples", "300", "--votes", "30",
            "--estimators", "10"]
    table = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=600, check=False)
    as_json = subprocess.run([*argv, "--json"], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=600,
                             check=False)
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    doc = json.loads(as_json.stdout)
    printed = dict(line.split() for line in table.stdout.splitlines())
    assert list(printed) == ["mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness",
                             "factorvae_score"]
    for key, value in printed.items():
        assert float(value) == pytest.approx(doc[key], abs=5e-5) and 0.0 <= doc[key] <= 1.0
    assert doc["dci_informativeness"] > np.mean([1 / n for n in SIZES])   # a trained encoder beats chance
