"""Smoke test of ``benchmarks/gap_decomposition.py`` (amortisation and approximation gaps of MNIST VAEs):
a tiny run of the real script end to end, checking its JSON, its figure and that the gaps add up."""

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
SCRIPT = REPO / "benchmarks" / "gap_decomposition.py"
MNIST = REPO.parent / "shared" / "data" / "mnist"

pytestmark = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason=f"MNIST IDX files not found in {MNIST}" + HOW)


@pytest.mark.slow  # a whole run of processes; the default suite stays under 5 minutes
def test_gap_decomposition_tiny_run(tmp_path):
    out, fig = tmp_path / "gaps.json", tmp_path / "gaps.png"
    cmd = [sys.executable, str(SCRIPT), "--epochs", "1", "--train-n", "300", "--val-n", "20", "--test-n", "8",
           "--importance-samples", "10", "--gap-elbo-samples", "10", "--refine-steps", "5", "--refine-samples", "2",
           "--latent-dim", "4", "--models", "1,4", "--threads", "1", "--data-dir", str(MNIST), "--out", str(out),
           "--figure", str(fig)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["refinement"] == {"steps": 5, "lr": 0.05, "samples": 2}
    assert [r["model"] for r in doc["results"]] == ["diagonal 784-200-200", "full 784-200-200"]
    for r in doc["results"]:
        e = r["evaluation"]
        assert e["n"] == 8 and len(r["history"]) == 1
        for key in ("amortisation_gap", "approximation_gap", "amortisation_gap_se", "approximation_gap_se"):
            assert math.isfinite(e[key]), key
        tighter = max(e["log_likelihood"], e["refined_log_likelihood"])
        assert tighter - e["refined_elbo"] == pytest.approx(e["approximation_gap"], abs=1e-5)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_iaf_row_alone_merges_into_the_results(tmp_path):
    """``--rows iaf --merge`` adds the IAF row to an existing results file, keeps its other rows, and refuses a
    file made with other settings."""
    out, fig = tmp_path / "gaps.json", tmp_path / "gaps.png"
    common = [sys.executable, str(SCRIPT), "--train-n", "200", "--val-n", "20", "--test-n", "6",
              "--importance-samples", "10", "--gap-elbo-samples", "10", "--refine-steps", "5", "--refine-samples", "2",
              "--latent-dim", "4", "--threads", "1", "--data-dir", str(MNIST), "--out", str(out), "--figure", str(fig)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*common, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
                              check=False)

    assert run("--epochs", "1", "--rows", "diagonal").returncode == 0
    proc = run("--epochs", "1", "--rows", "iaf", "--merge")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [r["model"] for r in doc["results"]] == ["diagonal 784-200-200", "iaf 784-200-200"]
    first, iaf = doc["results"]
    assert "run" not in first and "--merge" in iaf["run"]["command"]
    assert iaf["posterior"] == "iaf" and iaf["posterior_args"]["steps"] == 2
    for key in ("amortisation_gap", "approximation_gap"):
        assert math.isfinite(iaf["evaluation"][key]), key
    refused = run("--epochs", "2", "--rows", "iaf", "--merge")
    assert refused.returncode != 0 and "other settings (epochs)" in refused.stderr
    assert json.loads(out.read_text()) == doc
