"""Smoke test of ``benchmarks/gaussian_c.py`` (the constant c of the Gaussian decoder on MNIST):
a tiny run of the real script end to end, checking its JSON, its figures and that every figure is finite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_skip import HOW

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gaussian_c.py"
MNIST = REPO.parent / "shared" / "data" / "mnist"

pytestmark = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason=f"MNIST IDX files not found in {MNIST}" + HOW)


@pytest.mark.slow  # a whole run of processes; the default suite stays under 5 minutes
def test_gaussian_c_tiny_run(tmp_path):
    out, figs = tmp_path / "gaussian_c.json", tmp_path / "figs"
    cmd = [sys.executable, str(SCRIPT), "--epochs", "1", "--train-n", "300", "--val-n", "20", "--test-n", "16",
           "--importance-samples", "4", "--samples", "16", "--hidden", "32", "--latent-dim", "4", "--threads", "1",
           "--data-dir", str(MNIST), "--out", str(out), "--fig-dir", str(figs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]

    doc = json.loads(out.read_text())
    assert doc["torch_version"] and doc["date"] and doc["machine"]["cpu_count"] >= 1
    assert doc["importance_samples"] == 4 and doc["data"]["test_examples"] == 16
    names = [r["setting"] for r in doc["results"]]
    assert len(names) == 7 and len(set(names)) == 7
    variances = [r["decoder_variance"] for r in doc["results"]]
    assert variances == [1.0, 0.1, 0.01, 0.001, "learned", "learned-per-dim", "optimal"]
    for r in doc["results"]:
        e = r["evaluation"]
        for key in ("elbo", "log_likelihood", "log_likelihood_se", "bits_per_dim", "posterior_gap", "kl",
                    "reconstruction"):
            assert isinstance(e[key], float) and math.isfinite(e[key]), (r["setting"], key, e[key])
        assert 0 <= e["active_units"] <= 4
        # ELBO = reconstruction - KL, and the fixed c stays what it was set to
        assert e["elbo"] == pytest.approx(e["reconstruction"] - e["kl"], rel=1e-6, abs=1e-6)
        assert all(math.isfinite(r["c_end"][k]) and r["c_end"][k] > 0 for k in ("mean", "median", "min", "max"))
        if isinstance(r["decoder_variance"], float):
            assert r["c_end"]["mean"] == pytest.approx(r["decoder_variance"], rel=1e-6)
        assert r["c_end"]["size"] == (784 if r["decoder_variance"] == "learned-per-dim" else 1)
        assert len(r["c_history"]) == 1 and len(r["history"]) == 1
        png = REPO / r["samples_png"] if not Path(r["samples_png"]).is_absolute() else Path(r["samples_png"])
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (figs / "all_settings.png").is_file()
    assert len(list(figs.glob("samples_*.png"))) == 7
    assert "bits/dim" in proc.stdout and "fixed c=0.001" in proc.stdout
