"""Smoke test of benchmarks/iwae_table1.py: a tiny budget on a training subset, all three rows, sane JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_skip import HOW

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "iwae_table1.py"
MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte").exists()
                    and not (MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="real MNIST IDX files not present in ../shared/data/mnist" + HOW)
@pytest.mark.slow  # a whole run of processes; the default suite stays under 5 minutes
def test_iwae_table1_smoke(tmp_path):
    out = tmp_path / "iwae_table1.json"
    cmd = [sys.executable, str(SCRIPT), "--rows", "all", "--budget-minutes", "0.02", "--train-subset", "600",
           "--batch-size", "100", "--eval-n", "50", "--eval-k", "20", "--trend-n", "20", "--trend-k", "10",
           "--threads", "1", "--data-dir", str(MNIST), "--snapshot-dir", str(tmp_path / "snap"), "--out", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "published" in proc.stdout and "trend" in proc.stdout

    doc = json.loads(out.read_text())
    rows = {r["row"]: r for r in doc["rows"]}
    assert set(rows) == {"vae", "iwae5", "iwae50"}
    for name, (k, published) in {"vae": (1, 86.76), "iwae5": (5, 85.54), "iwae50": (50, 84.78)}.items():
        r = rows[name]
        assert r["k"] == k and r["published_nll"] == published
        assert r["threads"] == 1 and r["torch_version"] and r["date"]
        assert r["train_examples"] == 600 and r["epochs"] >= 1 and r["train_seconds"] > 0
        f = r["final"]
        assert f["n"] == 50 and f["k"] == 20
        # an untrained-to-barely-trained model: NLL well above the published value, far below 784 log 2
        assert published < f["nll"] < 784 * math.log(2) and math.isfinite(f["nll_se"]) and f["nll_se"] > 0
        assert f["elbo"] <= -f["nll"] + 1e-6            # the ELBO lies below the L_K estimate, per image on average
        assert 0 <= f["active_units"] <= 50 and len(f["unit_variances"]) == 50
        assert math.isclose(f["difference_from_published"], f["nll"] - published)
        assert r["trend"] and all(t["n"] == 20 and math.isfinite(t["nll"]) for t in r["trend"])
        times = [t["train_seconds"] for t in r["trend"]]
        assert times == sorted(times)
        # the default wall-clock cosine (it replaces vaekit.training.loop.lr_factor) has decayed the rate by the budget
        assert r["schedule"]["schedule"] == "wall-cosine" and r["stopped_by_budget"]
        assert r["history"][-1]["lr"] < 0.05 * r["schedule"]["lr"]
