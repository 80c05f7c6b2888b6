"""Smoke test of benchmarks/larger_than_memory.py on a tiny file (the recorded run uses 4 GiB)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_skip import HOW

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not MNIST.is_dir(), reason="needs ../shared/data/mnist" + HOW)
@pytest.mark.slow            # two memory-limited training runs, about 35 s: run by .ci/run's second pass
def test_streamed_run_fits_a_limit_the_in_memory_run_exceeds(tmp_path):
    out = tmp_path / "ltm.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "larger_than_memory.py"), "--file-gb", "0.3",
                           "--budget-mb", "600", "--threads", "1", "--epochs", "2", "--rounds", "1",
                           "--work-dir", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["file"]["mib"] > 300
    assert doc["large_in-memory"]["returncode"] == 2 and "out of memory" in doc["large_in-memory"]["stderr_tail"]
    streamed = doc["large_streamed"]
    assert streamed["returncode"] == 0 and math.isfinite(streamed["examples_per_s"])
    assert streamed["peak_rss_mib"] < doc["file"]["float32_mib"]     # in memory it would need all of it
    assert 0 < doc["throughput"]["streamed_over_in_memory"] < 2
    assert not (tmp_path / "work" / "large.npy").exists()
