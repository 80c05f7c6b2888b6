"""Smoke tests of the speed benchmark scripts: they run end to end on tiny sizes and write finite JSON.

The real runs (full sizes, timed) are in BENCHMARKS.md; these only check that the scripts work.
pythae is not a vaekit dependency: without it, speed_evaluation.py skips its pythae part, and the
pythae smoke test is skipped (it runs in .bench-venv, see benchmarks/setup_peers.sh).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_skip import HOW

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
MNIST = REPO.parent / "shared" / "data" / "mnist"

pytestmark = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                                reason=f"real MNIST not found in {MNIST}" + HOW)


def _finite(value, path="") -> None:
    """Every number in a JSON document is finite (json.loads turns NaN/Infinity into floats)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{path}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{path} = {value}"


def _run(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), "--threads", "1", *args],
                          check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _pythae_installed() -> bool:
    try:
        import pythae  # noqa: F401
    except ImportError:
        return False
    return True


def test_speed_evaluation_smoke(tmp_path):
    """Tiny run; the pythae part runs where pythae is installed (.bench-venv) and is skipped, saying
    so, where it is not (the project's environment, CI)."""
    out = tmp_path / "eval.json"
    proc = _run("speed_evaluation.py", "--images", "4", "--samples", "100", "--rounds", "1",
                "--roofline-seconds", "0.01", "--pythae-seconds", "0.05", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    _finite(doc)
    assert doc["images"] == 4 and doc["samples"] == 100
    assert doc["model"]["decoder_linear_layers"] == [[50, 200], [200, 200], [200, 784]]
    assert doc["vaekit"]["seconds"] > 0 and doc["ideal_seconds"] > 0 and doc["measured_over_ideal"] > 0
    assert doc["chunk_budgets"]["median_seconds"]["cpu_budget"] > 0
    assert "measured / ideal" in proc.stdout
    for key in ("machine", "torch_version", "date", "threads", "command"):
        assert key in doc
    peer = doc["pythae"]
    if not _pythae_installed():
        assert peer["status"] == "skipped" and "pythae not installed" in peer["reason"]
        assert "pythae comparison skipped" in proc.stdout
        return
    assert peer["status"] == "ran" and peer["subset_images"] >= 2
    # both libraries estimate log p(x) of the same model: equal up to Monte Carlo noise
    r = peer["rounds"][0]
    assert abs(r["pythae"]["get_nll_value"] - r["vaekit"]["log_likelihood"]) < 5.0


def test_speed_peers_smoke(tmp_path):
    pytest.importorskip("pythae")
    out = tmp_path / "peers.json"
    proc = _run("speed_peers.py", "--subset", "300", "--epochs", "1", "--rounds", "1", "--roofline-seconds", "0.01",
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    _finite(doc)
    assert doc["pythae_default_network"]["default_reconstruction_loss"] == "mse"
    for loss in ("mse", "bce"):
        assert doc["median"][loss]["vaekit_examples_per_second"] > 0
        assert doc["median"][loss]["pythae_examples_per_second"] > 0
