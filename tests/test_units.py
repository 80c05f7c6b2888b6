"""Reported log-densities are in the units of the data as the user gave them (issue 13, item 1).

A table is standardised column by column before training; the model's log-densities are of the
standardised values, and ``vaekit evaluate`` / the end of ``vaekit train`` add the log-Jacobian of the
standardisation, -sum_d log std_d (:attr:`vaekit.data.Preprocessing.log_jacobian`).

The end-to-end test trains the same model, through the real command line, on a table and on the same
table with its columns multiplied by powers of two. Scaling by a power of two is exact in floating point,
so the standardised data, the trained weights, the metrics and every number in model units are bitwise
the same; the reported log-densities must then differ by exactly -sum_d log a_d, and nothing else may
differ at all.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit import LinearGaussian
from vaekit.data import Preprocessing, fit_preprocessing, load_dataset
from vaekit.errors import ConfigError
from vaekit.store.model_files import load_model
from vaekit.store.runs import load_run
from vaekit.store.weights import load_weights

FACTORS = np.array([8.0, 0.25, 16.0, 2.0, 0.5])            # powers of two: scaling is exact
SHIFTED = ("elbo", "reconstruction", "log_likelihood", "exact_log_likelihood", "exact_elbo", "refined_elbo",
           "refined_log_likelihood", "gap_elbo", "gap_log_likelihood")
#: Besides these, every key of the two evaluations must be equal (KL, gaps, standard errors, active units, ...).
DIFFERENT = {*SHIFTED, "log_jacobian", "data", "run_dir"}
TRAIN = ("--arch", "linear", "--decoder-variance", "learned", "--posterior", "full", "--latent-dim", "2",
         "--epochs", "6", "--lr", "0.02", "--importance-samples", "50", "--no-progress", "--no-figures")
EVALUATE = ("--importance-samples", "50", "--json", "--gap-decomposition", "--limit", "30", "--refine-steps", "10",
            "--gap-elbo-samples", "50")


def _vaekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def _table(n: int = 500) -> np.ndarray:
    """Correlated columns of very different scales and offsets."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(n, 2))
    w = rng.normal(size=(5, 2))
    return (z @ w.T + 0.3 * rng.normal(size=(n, 5))) * np.array([1.0, 30.0, 0.01, 5.0, 200.0]) + 7.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("units")
    raw = _table()
    np.save(root / "a.npy", raw)
    np.save(root / "b.npy", raw * FACTORS)

    def train_and_evaluate(name: str) -> None:
        _vaekit("train", "--data", f"{name}.npy", *TRAIN, "--out", name, cwd=root)
        at_end = root / name / "evaluation-test.json"                  # the end-of-training evaluation
        at_end.rename(root / f"{name}-train.json")
        out = _vaekit("evaluate", name, *EVALUATE, cwd=root).stdout
        (root / f"{name}-evaluate.json").write_text(out)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(train_and_evaluate, ("a", "b")))
    return root


def _results(root: Path, name: str) -> dict[str, dict]:
    return {"train": json.loads((root / f"{name}-train.json").read_text()),
            "evaluate": json.loads((root / f"{name}-evaluate.json").read_text())}


def test_scaling_columns_shifts_the_log_densities_by_the_log_jacobian_only(runs):
    a, b = _results(runs, "a"), _results(runs, "b")
    shift = -float(np.sum(np.log(FACTORS)))                       # log-Jacobian of x -> x * a, per example
    assert shift == pytest.approx(-math.log(8 * 0.25 * 16 * 2 * 0.5))
    # the same model: identical weights and training metrics (model units), so every difference below is units
    wa, wb = (load_weights(runs / name / "model.safetensors") for name in ("a", "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[key], wb[key]) for key in wa)
    assert (runs / "a" / "metrics.jsonl").read_text().count("val_elbo") == 6
    metrics = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (runs / name / "metrics.jsonl").read_text().splitlines()] for name in ("a", "b")]
    assert metrics[0] == metrics[1]
    for where in ("train", "evaluate"):
        ra, rb = a[where], b[where]
        assert rb["log_jacobian"] - ra["log_jacobian"] == pytest.approx(shift, abs=1e-12)
        assert ra.keys() == rb.keys()
        for key in SHIFTED:
            # a linear model's gaps are closed forms: no sampling from q*, no Monte Carlo decomposition
            if key in ("refined_log_likelihood", "gap_elbo", "gap_log_likelihood"):
                assert ra.get(key) is None and rb.get(key) is None
                continue
            assert isinstance(ra[key], float), (where, key)
            assert rb[key] - ra[key] == pytest.approx(shift, abs=1e-9), (where, key)
        for key in ra.keys() - DIFFERENT:
            assert ra[key] == rb[key], (where, key)
        assert {"kl", "posterior_gap", "exact_posterior_gap", "active_units", "approximation_gap"} <= ra.keys()
        assert ra["elbo"] == pytest.approx(ra["reconstruction"] - ra["kl"], rel=1e-6)   # ELBO = rec - KL (float32)


def test_the_log_jacobian_is_minus_the_sum_of_the_log_column_scales(runs):
    """Independently of vaekit's preprocessing: the population std of the training split's columns."""
    for name in ("a", "b"):
        train = load_dataset(runs / f"{name}.npy", seed=0).train.astype(np.float64)   # the run's split
        expected = -float(np.sum(np.log(train.std(axis=0))))
        for doc in _results(runs, name).values():
            assert doc["log_jacobian"] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_the_reported_exact_log_likelihood_is_that_of_the_raw_rows(runs, monkeypatch):
    """The closed form in the user's units: x = m + s * u with u ~ N(b, WWᵀ + cI) the model's
    standardised variable, so x ~ N(m + s * b, S (WWᵀ + cI) S), S = diag(s)."""
    monkeypatch.chdir(runs)                                          # the run's data spec is relative
    run = load_run(runs / "b")
    prep = run.preprocessing
    truth = LinearGaussian.from_model(load_model(runs / "b").double())
    s = torch.tensor(prep.std, dtype=torch.float64)
    m = torch.tensor(prep.mean, dtype=torch.float64)
    raw = LinearGaussian(s[:, None] * truth.W, m + s * truth.b, truth.psi * s**2)
    test = torch.from_numpy(run.data.load().test.astype(np.float64))
    reported = json.loads((runs / "b-train.json").read_text())["exact_log_likelihood"]
    assert reported == pytest.approx(raw.log_marginal(test).mean().item(), abs=1e-6)


def test_evaluating_another_file_applies_the_stored_preprocessing(runs):
    """--data FILE --split all on a file holding exactly the run's test rows: the same numbers as the run's
    own test split (a preprocessing refitted on those rows would change them all)."""
    test = load_dataset(runs / "a.npy", seed=0).test
    np.save(runs / "a-test.npy", test)
    args = ("--importance-samples", "20", "--json")
    own = json.loads(_vaekit("evaluate", "a", *args, cwd=runs).stdout)
    other = json.loads(_vaekit("evaluate", "a", "--data", "a-test.npy", "--split", "all", *args, cwd=runs).stdout)
    assert other["split"] == "all" and other["n"] == len(test) == own["n"]
    assert not (runs / "a" / "evaluation-all.json").exists()              # printed only (no --save)
    skip = {"split", "data", "limit"}
    assert {k: v for k, v in other.items() if k not in skip} == {k: v for k, v in own.items() if k not in skip}


# --------------------------------------------------------------------------- the preprocessing's Jacobian


def test_preprocessing_log_jacobian():
    std = [2.0, 0.5, 10.0]
    prep = Preprocessing("tabular", None, [0.0, 1.0, 2.0], std, binarize=False, dequantize=False)
    assert prep.log_jacobian == pytest.approx(-math.log(2.0 * 0.5 * 10.0), abs=1e-15)
    assert prep.standardized
    # numerically: log |det d prepare / dx| of the affine map
    jac = torch.autograd.functional.jacobian(
        lambda x: (x - torch.tensor(prep.mean, dtype=torch.float64)) / torch.tensor(std, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64))
    assert prep.log_jacobian == pytest.approx(torch.linalg.slogdet(jac).logabsdet.item(), abs=1e-12)
    none = Preprocessing("tabular", None, None, None, binarize=False, dequantize=False)
    assert none.log_jacobian == 0.0 and not none.standardized
    for binarize, dequantize in ((True, False), (False, True), (False, False)):   # images: the [0, 1] convention
        assert Preprocessing("image", 256, None, None, binarize, dequantize).log_jacobian == 0.0


def test_fit_preprocessing_standardize_none_and_columns(tmp_path):
    np.save(tmp_path / "t.npy", _table(50))
    data = load_dataset(tmp_path / "t.npy")
    cols = fit_preprocessing(data, "continuous")
    assert cols == fit_preprocessing(data, "continuous", standardize="columns") and cols.standardized
    none = fit_preprocessing(data, "continuous", standardize="none")
    assert not none.standardized and none.log_jacobian == 0.0
    np.testing.assert_array_equal(none.prepare(data.test).numpy(), data.test)
    digits = load_dataset("digits")
    assert fit_preprocessing(digits, "continuous", standardize="none") == fit_preprocessing(digits, "continuous")
    with pytest.raises(ConfigError, match="standardize"):
        fit_preprocessing(data, "continuous", standardize="banana")
