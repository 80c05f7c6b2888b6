"""``vaekit train --objective {miwae,piwae,ciwae,vr,btcvae}`` and ``--gradient {stl,dreg}`` end to end on
digits (train, evaluate, save), and the combinations that are refused with one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vaekit.cli import main

FAST = ["--data", "digits", "--hidden", "32", "--latent-dim", "2", "--batch-size", "256", "--no-progress",
        "--no-figures"]


def _check_run(run, objective: str, gradient: str, stdout: str) -> None:
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "evaluation-test.json"):
        assert (run / name).is_file(), name
    train = json.loads((run / "config.json").read_text())["extra"]["train"]
    assert train["objective"] == objective and train["gradient"] == gradient
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["train_elbo"] < 0 and r["train_loss"] == r["train_loss"] for r in rows)
    evaluation = json.loads((run / "evaluation-test.json").read_text())
    assert evaluation["elbo"] <= evaluation["log_likelihood"] + 1.0     # both reported, the bound below log p(x)
    assert f"objective: {objective} (gradient {gradient})" in stdout and "log p(x)" in stdout


def test_piwae_with_dreg_trains_evaluates_and_saves(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "1", "--objective", "piwae", "--samples", "2",
                 "--objective-args", '{"groups": 2}', "--gradient", "dreg", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    _check_run(run, "piwae", "dreg", out)
    assert "a lower bound on log p(x)" in out
    assert json.loads((run / "config.json").read_text())["model"]["decoder_variance"] == "learned"


@pytest.mark.slow
@pytest.mark.parametrize("args, objective, gradient, bound", [
    (["--objective", "elbo", "--gradient", "stl"], "elbo", "stl", True),
    (["--objective", "iwae", "--samples", "3", "--gradient", "dreg"], "iwae", "dreg", True),
    (["--objective", "miwae", "--samples", "2", "--objective-args", '{"groups": 3}', "--gradient", "dreg"],
     "miwae", "dreg", True),
    (["--objective", "ciwae", "--samples", "3", "--objective-args", '{"beta": 0.05}'], "ciwae", "reparam", True),
    (["--objective", "vr", "--samples", "3", "--objective-args", '{"alpha": 0.5}'], "vr", "reparam", True),
    (["--objective", "btcvae", "--objective-args", '{"beta": 4, "estimator": "mss", "dataset_size": 1437}'],
     "btcvae", "reparam", False),
])
def test_objectives_in_a_subprocess(tmp_path, args, objective, gradient, bound):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.run([sys.executable, "-m", "vaekit", "train", *FAST, "--epochs", "2", *args, "--out", str(run)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    _check_run(run, objective, gradient, proc.stdout)
    assert ("not a lower bound" not in proc.stdout) == bound


@pytest.mark.parametrize("args, message", [
    (["--gradient", "dreg"], "--gradient: dreg does not apply to objective elbo"),
    (["--objective", "iwae", "--gradient", "stl"], "--gradient: stl does not apply to objective iwae"),
    (["--objective", "vr", "--gradient", "dreg"], "--gradient: dreg does not apply to objective vr"),
    (["--objective", "miwae", "--objective-args", '{"m": 2}'], "--objective-args: unknown ['m']"),
    (["--objective", "vr", "--objective-args", '{"alpha": "x"}'], "--objective-args: alpha: must be a finite"),
    (["--objective", "btcvae", "--objective-args", '{"estimator": "mss"}'], "dataset_size: estimator mss needs"),
    (["--objective", "ciwae", "--beta", "0.5"], "beta, kl_warmup_epochs and free_bits apply to objective elbo"),
    (["--objective", "miwae", "--decoder-variance", "optimal"], "not the miwae bound"),
    (["--posterior", "iaf", "--gradient", "stl"], "--gradient stl: needs a Gaussian posterior"),
    (["--objective", "iwae", "--layers", "2", "--gradient", "dreg"], "--gradient dreg: needs a Gaussian posterior"),
    (["--objective", "btcvae", "--prior", "vamp"], "btcvae: needs --posterior diagonal or full, --prior standard"),
])
def test_bad_combinations_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["train", *FAST, "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
