"""Evaluating a trained model on another file (issue 13, item 2), through the real command line.

A table is sampled from a known pPCA model (D = 6, K = 2): 2,000 training rows and a separate file of
1,000 test rows. A linear VAE with a full-covariance posterior and a learned c, trained by the ELBO on the
unstandardised table (``--standardize none``), can represent the exact posterior, so its ELBO optimum is
the maximum-likelihood pPCA fit. Evaluated on every row of the test file (``--split all``), its closed-form
test log-likelihood must match that of Tipping and Bishop's closed-form fit to the training table within
0.05 nats per example. (Measured: about 0.005; the difference is the 200 rows held out for validation and
the optimiser's remaining error.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit import ppca_mle
from vaekit.store.runs import load_run

D, K, N_TRAIN, N_TEST = 6, 2, 2000, 1000
TRAIN = ("--arch", "linear", "--decoder-variance", "learned", "--posterior", "full", "--standardize", "none",
         "--latent-dim", str(K), "--epochs", "40", "--lr", "0.02", "--schedule", "cosine", "--batch-size", "128",
         "--importance-samples", "20", "--no-progress", "--no-figures")


def _vaekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("other-file")
    rng = np.random.default_rng(0)
    w, b, c = rng.normal(size=(D, K)), rng.normal(size=D), 0.1

    def sample(n: int) -> np.ndarray:
        return rng.normal(size=(n, K)) @ w.T + b + np.sqrt(c) * rng.normal(size=(n, D))

    np.save(root / "train.npy", sample(N_TRAIN))
    np.save(root / "test.npy", sample(N_TEST))
    proc = _vaekit("train", "--data", "train.npy", "--test-data", "test.npy", *TRAIN, "--out", "run", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


def test_linear_vae_reaches_the_ppca_test_likelihood_on_a_separate_file(trained):
    proc = _vaekit("evaluate", "run", "--data", "test.npy", "--split", "all", "--importance-samples", "500",
                   "--json", cwd=trained)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["n"] == N_TEST and doc["split"] == "all" and doc["log_jacobian"] == 0.0
    train = torch.from_numpy(np.load(trained / "train.npy"))
    test = torch.from_numpy(np.load(trained / "test.npy"))
    mle = ppca_mle(train, K).log_marginal(test).mean().item()        # closed form, fitted on the training table
    assert abs(doc["exact_log_likelihood"] - mle) < 0.05, (doc["exact_log_likelihood"], mle)
    # the importance-sampled estimate agrees with the closed form of the same model
    assert abs(doc["log_likelihood"] - doc["exact_log_likelihood"]) < 0.01
    # and the closed form is of exactly these rows: recompute it from the saved model
    run = load_run(trained / "run")
    exact = run.model.double().closed_form().log_marginal(test).mean().item()
    assert doc["exact_log_likelihood"] == pytest.approx(exact, abs=1e-9)


def test_train_test_data_evaluates_every_row_of_that_file(trained, monkeypatch):
    """--test-data: the end-of-training evaluation is on the 1,000 rows of test.npy; --data is split into
    training and validation only; `vaekit evaluate RUN` (split test) then uses the same file."""
    monkeypatch.chdir(trained)                                       # the run's data spec is relative
    extra = json.loads((trained / "run" / "config.json").read_text())["extra"]
    assert extra["data"]["test_data"] == "test.npy" and extra["data"]["test_fraction"] == 0.0
    assert extra["preprocessing"]["mean"] is None                      # --standardize none
    at_end = json.loads((trained / "run" / "evaluation-test.json").read_text())
    assert at_end["n"] == N_TEST and at_end["split"] == "test"
    run = load_run(trained / "run")
    dataset = run.data.load()
    assert dataset.test is None and len(dataset.train) + len(dataset.val) == N_TRAIN
    proc = _vaekit("evaluate", "run", "--importance-samples", "20", "--json", cwd=trained)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["n"] == N_TEST
    for key in ("exact_log_likelihood", "exact_posterior_gap", "active_units", "n"):
        assert again[key] == pytest.approx(at_end[key], abs=1e-9), key


def test_resume_keeps_the_test_data(trained, tmp_path):
    """The stored --test-data and --standardize none are the run's: resuming neither needs nor may change them."""
    import shutil

    shutil.copytree(trained / "run", tmp_path / "run")
    for name in ("train.npy", "test.npy"):
        shutil.copy(trained / name, tmp_path / name)
    (tmp_path / "run" / "evaluation-test.json").unlink()
    proc = _vaekit("train", "--out", "run", "--resume", "--standardize", "none", "--test-data", "test.npy",
                   "--no-progress", "--no-figures", "--importance-samples", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr                         # finished already: evaluates again
    assert json.loads((tmp_path / "run" / "evaluation-test.json").read_text())["n"] == N_TEST
    for option, value in (("--standardize", "columns"), ("--test-data", "train.npy")):
        proc = _vaekit("train", "--out", "run", "--resume", option, value, cwd=tmp_path)
        assert proc.returncode == 2 and option in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


# --------------------------------------------------------------------------- the pieces, without the command line


def test_every_example_is_the_whole_file_in_its_order(tmp_path):
    from vaekit.data import load_dataset, split_indices

    x = np.arange(40, dtype=np.float64).reshape(10, 4)
    np.save(tmp_path / "t.npy", x)
    whole = load_dataset(tmp_path / "t.npy", val_fraction=0.0, test_fraction=0.0)
    rows, labels = whole.every_example()
    np.testing.assert_array_equal(rows, x)
    assert labels is None
    split = load_dataset(tmp_path / "t.npy")                         # 8/1/1: every example, split order
    rows, _ = split.every_example()
    np.testing.assert_array_equal(np.sort(rows, axis=0), x)
    # nothing to split off: any number of examples >= 1, in order; a positive fraction still needs 3
    for n in (1, 2, 5):
        parts = split_indices(n, (0.0, 0.0), 7)
        assert [len(p) for p in parts[:2]] == [0, 0] and np.array_equal(parts[2], np.arange(n))
    digits = load_dataset("digits", val_fraction=0.0, test_fraction=0.0)
    rows, labels = digits.every_example()
    assert len(rows) == len(labels) == 1797


def test_data_spec_records_the_test_data():
    from vaekit.store.runs import DataSpec

    spec = DataSpec(spec="train.npy", test_fraction=0.0, test_data="test.npy")
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    old = {k: v for k, v in DataSpec().to_dict().items() if k != "test_data"}   # a run written before the option
    assert DataSpec.from_dict(old).test_data is None and DataSpec.from_dict(old).test_spec() is None
    test = spec.test_spec()
    assert test is not None and (test.spec, test.val_fraction, test.test_fraction, test.stream) == (
        "test.npy", 0.0, 0.0, False)
