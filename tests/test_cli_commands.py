"""The run-directory subcommands (evaluate, sample, reconstruct, encode, interpolate, figures), each
run as ``python -m vaekit`` in a subprocess on a run directory made without ``vaekit train``.

The subprocesses are independent, so one module fixture runs them all, a few at a time, and each
test checks the results of its own commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import VAEConfig, build_vae
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.store.layout import RunLayout
from vaekit.store.model_files import save_model
from vaekit.store.runs import DataSpec

SHAPE = (1, 8, 8)
K = 3
JSON_KEYS = {"n", "elbo", "log_likelihood", "log_likelihood_se", "kl", "reconstruction", "posterior_gap",
             "active_units", "bits_per_dim", "exact_log_likelihood", "exact_posterior_gap"}


def _make_run(directory: Path, arch: str) -> Path:
    torch.manual_seed(0)
    arch_args = {"hidden": (16,)} if arch == "mlp" else {}          # a linear model has no hidden layers
    model = build_vae(VAEConfig(SHAPE, latent_dim=K, arch=arch, arch_args=arch_args))
    prep = fit_preprocessing(load_dataset("digits"), "gaussian")
    save_model(model, directory, extra={"preprocessing": prep.to_dict(), "data": DataSpec().to_dict(), "train": {}})
    return directory


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    run = _make_run(root / "run", "mlp")
    _make_run(root / "linear", "linear")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "train_elbo": -100.0 + e,
                                                           "val_elbo": -101.0 + e}) + "\n" for e in (1, 2)))
    np.save(root / "bad.npy", np.random.default_rng(0).random((10, 5)).astype(np.float32))
    for name in ("exists.png", "exists-force.png"):
        (root / name).write_bytes(b"old")
    return root


COMMANDS: dict[str, tuple[list[str], int]] = {
    "evaluate-json": (["evaluate", "run", "--importance-samples", "20", "--limit", "40", "--json", "--save"], 0),
    "evaluate-table": (["evaluate", "run", "--importance-samples", "20", "--split", "val", "--limit", "30"], 0),
    "evaluate-linear": (["evaluate", "linear", "--importance-samples", "20", "--limit", "40", "--json",
                         "--batch-size", "16"], 0),
    "sample-png": (["sample", "run"], 0),
    "sample-npy": (["sample", "run", "--n", "5", "--raw", "--out", "samples.npy", "--seed", "3"], 0),
    "sample-long-name": (["sample", "run", "--n", "2", "--raw", "--out", "s" * 226 + ".npy"], 0),   # 230 bytes
    "sample-longest-name": (["sample", "run", "--n", "2", "--raw", "--out", "é" * 125 + "s.npy"], 0),   # 255
    "reconstruct-png": (["reconstruct", "run", "--out", "recon.png"], 0),
    "reconstruct-npy": (["reconstruct", "run", "--n", "3", "--out", "recon.npy"], 0),
    "encode": (["encode", "run", "--limit", "10", "--out", "z.npy"], 0),
    "encode-scale": (["encode", "run", "--split", "train", "--limit", "10", "--with-scale", "--out", "zs.npy"], 0),
    "interpolate-png": (["interpolate", "run", "--out", "interp.png"], 0),
    "interpolate-npy": (["interpolate", "run", "--pairs", "2", "--steps", "5", "--out", "interp.npy"], 0),
    "figures": (["figures", "run", "--limit", "60"], 0),
    "force": (["sample", "run", "--n", "4", "--out", "exists-force.png", "--force"], 0),
    "err-missing-run": (["evaluate", "no-such-run"], 2),
    "err-bad-data": (["evaluate", "run", "--data", "bad.npy"], 2),
    "err-extension": (["sample", "run", "--out", "samples.jpg"], 2),
    "err-encode-extension": (["encode", "run", "--out", "z.png"], 2),
    "err-exists": (["sample", "run", "--out", "exists.png"], 2),
    "err-limit": (["evaluate", "run", "--limit", "0"], 2),
}


@pytest.fixture(scope="module")
def results(env) -> dict[str, subprocess.CompletedProcess]:
    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vaekit", *args], check=False, cwd=env, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "error"})

    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(run, args) for name, (args, _) in COMMANDS.items()}
        out = {name: f.result() for name, f in futures.items()}
    for name, (_, rc) in COMMANDS.items():
        assert out[name].returncode == rc, (name, out[name].stdout, out[name].stderr)
        assert "Traceback" not in out[name].stderr, (name, out[name].stderr)
    return out


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_evaluate_json_prints_exactly_one_object(env, results):
    stdout = results["evaluate-json"].stdout
    doc = json.loads(stdout)                                     # fails on anything besides one object
    assert isinstance(doc, dict) and JSON_KEYS <= set(doc)
    assert doc["n"] == 40 and doc["importance_samples"] == 20 and doc["latent_dim"] == K
    assert doc["log_likelihood"] >= doc["elbo"] - 5              # sane numbers (loose: few draws)
    assert doc["bits_per_dim"] > 0                               # dequantised digits, Gaussian decoder
    assert doc["exact_log_likelihood"] is None                   # an MLP decoder has no closed form
    assert json.loads((env / "run" / "evaluation-test-K20-seed0-limit40.json").read_text()) == doc    # --save


def test_evaluate_linear_reports_exact_values(env, results):
    doc = json.loads(results["evaluate-linear"].stdout)
    assert isinstance(doc["exact_log_likelihood"], float) and isinstance(doc["exact_posterior_gap"], float)
    assert abs(doc["log_likelihood"] - doc["exact_log_likelihood"]) < 5
    assert doc["exact_posterior_gap"] >= 0


def test_evaluate_table(env, results):
    out = results["evaluate-table"].stdout
    assert "log p(x)" in out and "active units" in out and "bits per dim" in out
    assert not list((env / "run").glob("evaluation-val*"))          # without --save it writes nothing


def test_sample(env, results):
    assert _png(env / "run" / "samples.png")[0] > 50
    arr = np.load(env / "samples.npy")
    assert arr.shape == (5, *SHAPE) and arr.dtype == np.float32
    assert _png(env / "exists-force.png")                        # --force replaced b"old"


def test_sample_to_names_at_the_file_systems_limit(env, results):
    """The atomic write's temporary name stays within NAME_MAX for a 230-byte and a 255-byte target name."""
    for name in ("s" * 226 + ".npy", "é" * 125 + "s.npy"):
        assert np.load(env / name).shape == (2, *SHAPE)
    assert len(("é" * 125 + "s.npy").encode()) == 255
    assert not [p for p in env.iterdir() if p.name.endswith(".tmp")]


def test_reconstruct(env, results):
    _png(env / "recon.png")
    assert np.load(env / "recon.npy").shape == (3, *SHAPE)


def test_encode(env, results):
    assert np.load(env / "z.npy").shape == (10, K)
    zs = np.load(env / "zs.npy")
    assert zs.shape == (10, 2, K) and np.all(zs[:, 1] > 0)      # [:, 1] the posterior standard deviations


def test_interpolate(env, results):
    _png(env / "interp.png")
    arr = np.load(env / "interp.npy")
    assert arr.shape == (2, 5, *SHAPE) and np.isfinite(arr).all()


def test_figures_and_report(env, results):
    figures = env / "run" / "figures"
    for name in ("training-curves.png", "reconstructions.png", "prior-samples.png", "latent-scatter.png",
                 "latent-traversals.png"):
        _png(figures / name)
    assert figures == RunLayout.of(env / "run").figures
    html = (env / "run" / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 5


@pytest.mark.parametrize("name, needle", [
    ("err-missing-run", "no-such-run"),
    ("err-bad-data", "(1, 8, 8)"),
    ("err-extension", ".jpg"),
    ("err-encode-extension", ".png"),
    ("err-exists", "--force"),
    ("err-limit", "--limit"),
])
def test_errors_are_one_line_with_exit_2(env, results, name, needle):
    stderr = results[name].stderr
    assert stderr.count("\n") == 1 and stderr.startswith("vaekit "), stderr
    assert needle in stderr
    assert results[name].stdout == ""


def test_bad_data_names_both_shapes(results):
    assert "(5,)" in results["err-bad-data"].stderr


def test_existing_output_is_left_alone(env, results):
    assert (env / "exists.png").read_bytes() == b"old"
    assert not (env / "samples.jpg").exists()


@pytest.mark.parametrize("command", ["evaluate", "sample", "reconstruct", "encode", "interpolate", "figures"])
def test_help_has_an_example(command, capsys):
    from vaekit.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"vaekit {command} " in out and "RUN_DIR" in out
