"""Smoke tests of the issue 31 benchmark scripts, ``benchmarks/novelty_mnist.py`` and
``benchmarks/gmm_sampler_fid.py``: tiny runs of the real scripts end to end (slow: they train)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
RUNS = REPO / "benchmarks" / "results" / "mnist-nll"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason=f"MNIST IDX files not found in {MNIST}")]


def _run(script: str, *argv: str) -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / script), "--data-dir", str(MNIST), *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_novelty_tiny_run(tmp_path):
    out = tmp_path / "novelty.json"
    _run("novelty_mnist.py", "--epochs", "1", "--train-n", "2000", "--test-n", "300", "--importance-samples", "5",
         "--latent-dim", "4", "--pca-components", "4", "--work", str(tmp_path / "work"), "--out", str(out))
    doc = json.loads(out.read_text())
    assert doc["train_images"] == 2000 and doc["test_images"] == 300
    assert 0 < doc["novel_images"] < 300 and out.with_suffix(".png").is_file()
    for name in ("log_likelihood", "elbo", "reconstruction", "kl", "posterior_gap", "pca_reconstruction_error",
                 "isolation_forest"):
        row = doc["results"][name]
        assert 0 <= row["roc_auc"] <= 1 and doc["novel_images"] / 300 <= row["precision_at_95_recall"] <= 1


@pytest.mark.skipif(not (RUNS / "vae" / "model.safetensors").is_file(), reason="the committed MNIST run is missing")
def test_gmm_sampler_fid_tiny_run(tmp_path):
    out = tmp_path / "fid.json"
    _run("gmm_sampler_fid.py", "--runs", "vae", "--n", "200", "--classifier-epochs", "1", "--classifier-train-n",
         "2000", "--fit-limit", "2000", "--out", str(out))
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert row["run"] == "vae" and row["gmm"]["points"] == 2000 and row["fd_prior"] > 0 and row["fd_gmm"] > 0
    assert 0.5 < doc["classifier"]["test_accuracy"] <= 1 and doc["fd_real_train_vs_test"] > 0
    assert (tmp_path / "fid_classifier.safetensors").is_file() and out.with_suffix(".png").is_file()
