"""Smoke test of ``benchmarks/memory_training.py``: peak RSS of a real (tiny) ``vaekit train`` run on 300
random 8x8 uint8 images, checking the JSON and that the figures are finite and consistent."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "memory_training.py"

pytestmark = pytest.mark.skipif(not (Path("/proc/self/status").is_file() and Path("/usr/bin/time").is_file()),
                                reason="needs Linux /proc and GNU /usr/bin/time")


@pytest.mark.slow  # a whole run of processes; the default suite stays under 5 minutes
def test_memory_training_tiny_run(tmp_path):
    out, data = tmp_path / "memory.json", tmp_path / "tiny.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, size=(300, 8, 8), dtype=np.uint8))
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--models", "16/2", "--epochs", "1", "--no-load-only",
           "--baseline-repeats", "1", "--repeats", "1", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]

    doc = json.loads(out.read_text())
    assert doc["torch_version"] and doc["date"] and doc["threads_per_child"] == 1
    assert doc["data_dim"] == 64 and doc["baseline_rss_bytes"] > 10 * 2**20     # torch alone is tens of MiB
    (run,) = doc["runs"]
    assert run["arch"] == "64-16-2" and run["n_train"] == 243      # 300 - 30 test - 27 val
    assert run["train_float32_bytes"] == run["n_train"] * 64 * 4
    # 64*16+16 (trunk) + 2*(16*2+2) (g, h heads) + 2*16+16 + 16*64+64 (f) parameters, float32
    assert run["parameters"] == 1040 + 68 + 48 + 1088 and run["parameter_bytes"] == 4 * run["parameters"]
    assert run["adam_state_bytes"] >= 2 * run["parameter_bytes"]                 # exp_avg and exp_avg_sq
    # the training run imports what the baseline imports, and more
    assert (run["peak_rss_bytes"] >= run["baseline_rss_bytes"]
            and run["sampled_vm_hwm_bytes"] <= 1.01 * run["peak_rss_bytes"])
    assert run["sampled_peak_anon_bytes"] > 0 and run["samples"] > 0
    for key in ("peak_rss_bytes", "baseline_rss_bytes", "wall_seconds", "ratio", "ratio_all_splits"):
        assert isinstance(run[key], (int, float)) and math.isfinite(run[key]) and run[key] >= 0, key
    assert "ratio" in proc.stdout and "64-16-2" in proc.stdout
