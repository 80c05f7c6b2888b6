"""``vaekit score`` end to end: real subprocesses on a run directory of the 8x8 digits (made without
training), the numbers checked against :func:`vaekit.evaluate` with the same seed, a streamed .npy file,
the reference threshold, and the one-line errors (exit 2) found before torch is imported; Parquet, the
comparison with the ``vaekit evaluate`` command and the errors that need the run loaded are slow tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vaekit import VAEConfig, build_vae
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.store.model_files import save_model
from vaekit.store.runs import DataSpec

COLUMNS = ["index", "log_likelihood", "log_likelihood_se", "elbo", "reconstruction", "kl", "posterior_gap",
           "bits_per_dim"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=3, arch="mlp", arch_args={"hidden": (16,)}))
    prep = fit_preprocessing(load_dataset("digits"), "gaussian")
    save_model(model, root / "run", extra={"preprocessing": prep.to_dict(), "data": DataSpec().to_dict(), "train": {}})
    np.save(root / "new.npy", load_dataset("digits", val_fraction=0, test_fraction=0).train[:40])
    np.save(root / "bad.npy", np.zeros((5, 3), np.float32))
    (root / "exists.csv").write_text("old\n")
    return root


_K = ["--importance-samples", "20"]
COMMANDS: dict[str, list[str]] = {                # the default tests': two that load torch, errors that do not
    "score": ["score", "run", *_K, "--out", "s.csv", "--reference", "val", "--quantile", "0.9", "--json"],
    "score-npy": ["score", "run", "--data", "new.npy", "--importance-samples", "10", "--batch-size", "16",
                  "--out", "n.csv"],
    "err-quantile-alone": ["score", "run", "--out", "e.csv", "--quantile", "0.9"],
    "err-quantile-range": ["score", "run", "--out", "e.csv", "--reference", "val", "--quantile", "1.5"],
    "err-both": ["score", "run", "--out", "e.csv", "--reference", "val", "--threshold", "1"],
    "err-extension": ["score", "run", "--out", "e.txt"],
    "err-exists": ["score", "run", "--out", "exists.csv"],
}
SLOW_COMMANDS: dict[str, list[str]] = {
    "evaluate": ["evaluate", "run", *_K, "--json"],
    "evaluate-npy": ["evaluate", "run", "--data", "new.npy", "--split", "all", "--importance-samples", "10",
                     "--batch-size", "16", "--json"],
    "score-parquet": ["score", "run", *_K, "--out", "s.parquet", "--threshold", "0.2", "--score", "kl"],
    "err-shape": ["score", "run", "--data", "bad.npy", "--out", "e.csv"],
    "err-missing": ["score", "run", "--data", "missing.npy", "--out", "e.csv"],
}


def _run_all(env: Path, commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vaekit", *argv], cwd=env, env=environ, capture_output=True,
                              text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(commands, pool.map(run, commands.values()), strict=True))


@pytest.fixture(scope="module")
def results(env) -> dict[str, subprocess.CompletedProcess]:
    return _run_all(env, COMMANDS)


@pytest.fixture(scope="module")
def slow_results(env, results) -> dict[str, subprocess.CompletedProcess]:
    return _run_all(env, SLOW_COMMANDS)


def _evaluation(env: Path, x: np.ndarray, seed: int, **options) -> Any:
    """:func:`vaekit.evaluate` of the run in ``env`` on the raw examples ``x``, prepared as the commands do."""
    from vaekit import evaluate
    from vaekit.store.runs import eval_tensor, load_run

    run = load_run(env / "run")
    torch.manual_seed(seed)
    return evaluate(run.model, eval_tensor(run.preprocessing, x, seed=0), levels=run.preprocessing.levels, **options)


def _table(path: Path) -> dict[str, np.ndarray]:
    header, *rows = path.read_text().splitlines()
    values = np.array([[float(v) for v in row.split(",")] for row in rows])
    return dict(zip(header.split(","), values.T, strict=True))


def test_scores_average_to_evaluate_to_the_last_digit(env, results):
    assert results["score"].returncode == 0, results["score"].stderr
    doc, table = json.loads(results["score"].stdout), _table(env / "s.csv")
    ev = _evaluation(env, load_dataset("digits").test, 0, importance_samples=20)      # the run's test split
    assert list(table) == [*COLUMNS, "flag"] and doc["columns"] == list(table)
    assert doc["n"] == ev.n == len(table["index"]) and np.array_equal(table["index"], np.arange(ev.n))
    assert float(torch.tensor(table["log_likelihood"]).mean()) == ev.log_likelihood
    assert np.mean(table["kl"]) == pytest.approx(ev.kl, rel=1e-12)
    assert np.mean(table["elbo"]) == pytest.approx(ev.elbo, rel=1e-12)
    # --reference val --quantile 0.9: the threshold leaves 90 % of the val split's log p(x) above it
    assert doc["score"] == "log_likelihood" and doc["flagged"] == int(table["flag"].sum())
    assert np.array_equal(table["flag"] == 1, table["log_likelihood"] < doc["threshold"])
    assert 0 < doc["flagged"] < doc["n"] / 2


def test_a_npy_file_streams_in_input_order_with_evaluates_numbers(env, results):
    assert results["score-npy"].returncode == 0, results["score-npy"].stderr
    assert "streamed" in results["score-npy"].stdout
    table = _table(env / "n.csv")
    ev = _evaluation(env, np.load(env / "new.npy"), 0, importance_samples=10, batch_size=16)
    assert list(table) == COLUMNS and len(table["index"]) == 40
    assert float(torch.tensor(table["log_likelihood"]).mean()) == ev.log_likelihood


@pytest.mark.slow
def test_the_evaluate_command_gives_the_same_numbers(env, results, slow_results):
    for evaluate_name, path in (("evaluate", "s.csv"), ("evaluate-npy", "n.csv")):
        assert slow_results[evaluate_name].returncode == 0, slow_results[evaluate_name].stderr
        ev = json.loads(slow_results[evaluate_name].stdout)
        assert float(torch.tensor(_table(env / path)["log_likelihood"]).mean()) == ev["log_likelihood"]


@pytest.mark.slow
def test_parquet_holds_the_same_table(env, results, slow_results):
    pq = pytest.importorskip("pyarrow.parquet")
    assert slow_results["score-parquet"].returncode == 0, slow_results["score-parquet"].stderr
    table = pq.read_table(env / "s.parquet").to_pydict()
    csv = _table(env / "s.csv")
    assert list(table) == [*COLUMNS, "flag"]
    np.testing.assert_array_equal(table["log_likelihood"], csv["log_likelihood"])     # the same seed and draws
    assert table["flag"] == [v > 0.2 for v in table["kl"]]                            # --score kl: high is unusual


def _one_line_exit_2(env: Path, result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and needle in result.stderr and "Traceback" not in result.stderr
    assert (env / "exists.csv").read_text() == "old\n" and not (env / "e.csv").exists()


@pytest.mark.parametrize("name, needle", [
    ("err-quantile-alone", "--reference"), ("err-quantile-range", "--quantile"), ("err-both", "--threshold"),
    ("err-extension", "unknown extension"), ("err-exists", "--force")])
def test_bad_input_is_one_line_with_exit_2(env, results, name, needle):
    _one_line_exit_2(env, results[name], needle)


@pytest.mark.slow
@pytest.mark.parametrize("name, needle", [("err-shape", "do not match"), ("err-missing", "missing.npy")])
def test_bad_data_is_one_line_with_exit_2(env, slow_results, name, needle):
    _one_line_exit_2(env, slow_results[name], needle)
