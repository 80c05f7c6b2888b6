"""Divergence never finishes with exit code 0: a finite but absurd ELBO, an epoch of only skipped steps and a
run of bad steps across epochs (and across a resume) stop training; a checkpoint with non-finite weights is
refused on --resume."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from vaekit import VAEConfig, build_vae
from vaekit.cli import main
from vaekit.data import Preprocessing
from vaekit.training import MAX_BAD_STEPS, DivergenceError, TrainConfig, fit

TABULAR = Preprocessing("tabular", None, None, None, binarize=False, dequantize=False)
FAST = ["--data", "digits", "--hidden", "16", "--latent-dim", "2", "--batch-size", "256", "--no-progress",
        "--no-figures", "--importance-samples", "2"]


def _vaekit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, env=env,
                          timeout=180, check=False)


def test_a_learning_rate_of_1e9_stops_with_one_line(tmp_path):
    run = tmp_path / "run"
    proc = _vaekit("train", *FAST, "--lr", "1e9", "--epochs", "3", "--out", str(run))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "training diverged: epoch 1 has a training ELBO of" in proc.stderr and "lr=1e+09" in proc.stderr
    assert not (run / "checkpoints").exists() and (run / "metrics.jsonl").read_text() == ""   # nothing absurd kept


def test_resuming_non_finite_weights_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    st_path, json_path = run / "checkpoints" / "last.safetensors", run / "checkpoints" / "last.json"
    tensors = load_file(str(st_path))
    name = next(k for k in tensors if k.startswith("model.") and tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], math.nan)
    save_file(tensors, str(st_path))
    doc = json.loads(json_path.read_text())
    doc["sha256"] = hashlib.sha256(st_path.read_bytes()).hexdigest()    # as anyone can
    json_path.write_text(json.dumps(doc))
    proc = _vaekit("train", "--out", str(run), "--resume", "--epochs", "3", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "non-finite" in proc.stderr and "last.safetensors" in proc.stderr, proc.stderr
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]


class _NaNSteps:
    """Wraps ``batch_loss``: the loss of the calls (steps, from 1) in ``bad`` is NaN, so they are skipped."""

    def __init__(self, real, bad):
        self.real, self.bad, self.calls = real, set(bad), 0

    def __call__(self, *args, **kwargs):
        loss, stats = self.real(*args, **kwargs)
        self.calls += 1
        return (loss * math.nan, stats) if self.calls in self.bad else (loss, stats)


def _setup():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,)))
    generator = torch.Generator().manual_seed(1)
    return model, torch.randn(256, 4, generator=generator), torch.randn(16, 4, generator=generator)


def test_an_epoch_of_only_skipped_steps_fails():
    model, x, v = _setup()
    x[:] = math.nan                                          # 8 steps an epoch, each of them non-finite
    with pytest.raises(DivergenceError, match="every step of epoch 1 \\(8 steps\\)"):
        fit(model, x, v, TrainConfig(epochs=3, batch_size=32), preprocessing=TABULAR)


def test_the_run_of_bad_steps_continues_across_epochs_and_a_resume(tmp_path, monkeypatch):
    import vaekit.training.step as step_mod

    real = step_mod.batch_loss
    config = TrainConfig(epochs=3, batch_size=16)            # 16 steps an epoch
    assert MAX_BAD_STEPS == 20
    bad = range(7, 27)                                       # 20 in a row: steps 7-16 of epoch 1, 1-10 of epoch 2

    model, x, v = _setup()
    monkeypatch.setattr(step_mod, "batch_loss", _NaNSteps(real, bad))
    with pytest.raises(DivergenceError, match="20 consecutive steps .* \\(up to epoch 2\\)"):
        fit(model, x, v, config, preprocessing=TABULAR)

    # the same across a checkpoint: epoch 1 ends with a run of 10, which the checkpoint carries
    model, x, v = _setup()
    monkeypatch.setattr(step_mod, "batch_loss", _NaNSteps(real, bad))
    first = fit(model, x, v, TrainConfig(epochs=1, batch_size=16), preprocessing=TABULAR, run_dir=tmp_path)
    assert first.history[0].skipped_steps == 10
    doc = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert doc["extra"]["bad_run"] == 10
    monkeypatch.setattr(step_mod, "batch_loss", _NaNSteps(real, range(1, 11)))   # steps 17-26 of the run
    model, x, v = _setup()
    with pytest.raises(DivergenceError, match="20 consecutive steps"):
        fit(model, x, v, config, preprocessing=TABULAR, run_dir=tmp_path, resume=True)

    # a checkpoint written before the counter was kept (no "bad_run") starts from 0: 10 bad steps only
    del doc["extra"]["bad_run"]
    (tmp_path / "checkpoints" / "last.json").write_text(json.dumps(doc))
    monkeypatch.setattr(step_mod, "batch_loss", _NaNSteps(real, range(1, 11)))
    model, x, v = _setup()
    result = fit(model, x, v, config, preprocessing=TABULAR, run_dir=tmp_path, resume=True)
    assert [m.skipped_steps for m in result.history] == [10, 10, 0]
