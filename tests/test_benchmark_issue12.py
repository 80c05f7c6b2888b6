"""Smoke tests of issue 12's benchmark scripts (tiny sizes: they run end to end and write finite JSON) and
of the time-to-quality table read from a run directory. The real runs are in BENCHMARKS.md."""

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
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                                 reason=f"real MNIST not found in {MNIST}" + HOW)


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def _run(path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path), *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.slow
@needs_mnist
def test_bf16_training_smoke(tmp_path):
    out = tmp_path / "bf16.json"
    proc = _run(BENCH / "bf16_training.py", "--threads", "1", "--steps", "8", "--rounds", "1", "--subset", "512",
                "--epochs", "1", "--seeds", "1", "--models", "examples", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert _finite(doc)
    model = doc["models"]["examples"]
    assert set(model["median_examples_per_second"]) == {"baseline", "vaekit_fp32", "vaekit_bf16"}
    assert [(r["seed"], r["precision"]) for r in model["quality_runs"]] == [(0, "fp32"), (0, "bf16")]
    assert model["flops_per_example"] == 3 * 2 * (784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784)


@pytest.mark.slow
@needs_mnist
def test_step_phases_smoke(tmp_path):
    """The phases are measured and add up: forward, backward, the check, Adam and the rest make the step."""
    out = tmp_path / "phases.json"
    proc = _run(BENCH / "step_phases.py", "--threads", "1", "--epochs", "1", "--models", "examples", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert _finite(doc)
    ms = doc["models"]["examples"]["ms_per_step"]
    assert all(ms[k] > 0 for k in ("batch", "forward", "forward_linear", "forward_log_px", "backward", "finite_check",
                                   "adam", "step_total"))
    assert ms["forward_linear"] + ms["forward_log_px"] < ms["forward"] < ms["step_total"]
    parts = ms["forward"] + ms["backward"] + ms["finite_check"] + ms["adam"] + ms["step_other"]
    assert abs(parts - ms["step_total"]) < 1e-9 and ms["step_other"] > 0
    assert doc["models"]["examples"]["steps"] == 200


@pytest.mark.slow
@needs_mnist
def test_mixture_prior_smoke(tmp_path):
    """Both paths run and agree with float64 to float32 rounding; one model evaluated on both paths."""
    out = tmp_path / "mixture.json"
    proc = _run(BENCH / "mixture_prior.py", "--threads", "1", "--rounds", "1", "--kernel-seconds", "0.01",
                "--steps", "2", "--images", "4", "--samples", "3", "--families", "vamp", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert _finite(doc)
    for measured in doc["summary"]["kernel"].values():
        assert set(measured["ms"]) == {"elementwise", "products"}
        assert max(measured["max_abs_error_vs_float64"].values()) < 1e-3
    assert doc["summary"]["families"]["vamp"]["largest_log_likelihood_difference"] < 1e-3


@pytest.mark.slow
@needs_mnist
def test_evaluation_paths_smoke(tmp_path):
    """Both arms draw the same z: their estimates agree to float32 rounding."""
    out = tmp_path / "paths.json"
    proc = _run(BENCH / "evaluation_paths.py", "--images", "40", "--samples", "20", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert _finite(doc)
    (row,) = doc["rounds"]
    assert row["before"]["cpu_matmul"] == "torch" and row["before"]["keep_freed_memory"] == "0"
    assert row["after"]["keep_freed_memory"] == "1"
    assert abs(doc["summary"]["log_likelihood"]["difference"]) < 1e-3
    assert doc["summary"]["per_image_abs_difference"]["max"] < 1e-2


@pytest.mark.slow
def test_cpu_kernels_smoke(tmp_path):
    out = tmp_path / "kernels.json"
    proc = _run(BENCH / "cpu_kernels.py", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert _finite(doc) and len(doc["gemm_flops_per_second"]) == 6
    assert set(doc["allocator"]) == {"glibc_defaults", "kept"}


def test_mnist_nll_table_reads_a_row_and_draws_the_curves(tmp_path):
    row = tmp_path / "vae"
    row.mkdir()
    (row / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e, "seconds": 30.0, "val_elbo": -100.0 + e})
                                                 for e in (1, 2, 3)) + "\n")
    (row / "evaluation-test.json").write_text(json.dumps({"log_likelihood": -86.5, "log_likelihood_se": 0.2,
                                                          "importance_samples": 5000, "n": 10000}))
    (row / "run.json").write_text(json.dumps({"sessions": [{"command": ["vaekit", "train"], "duration_s": 300.0}]}))
    proc = _run(REPO / "scripts" / "mnist_nll_table.py", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("| VAE"))
    assert ("| 86.76 (Burda et al. 2016, Table 1 (paper)) | 86.50 ± 0.20 (K = 5000, 10000) | 1.5 min | 5.0 min | 3 "
            "| ≤ 86.76 in 60 min: met |") in line
    assert (tmp_path / "curves.png").stat().st_size > 1000
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run(REPO / "scripts" / "mnist_nll_table.py", "--root", str(empty))
    assert proc.returncode == 2 and "no finished row" in proc.stderr
