"""Families that compose, end to end from the command line (issue 26): each combination trains 2 epochs on
``digits``, evaluates to a finite log p(x) (importance sampled, at least the ELBO) and samples; free bits per
layer train and are reported as not a bound; free bits where the KL is no sum over dimensions exit 2."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from vaekit.cli import main

COMBINATIONS = {
    "vamp-on-2-layers": ["--layers", "2", "--prior", "vamp", "--prior-args", '{"pseudo_inputs": 20}'],
    "mixture-on-3-layers": ["--layers", "3", "--prior", "mixture"],
    "iaf-with-2-layers": ["--layers", "2", "--posterior", "iaf"],
    "top-down-2-layers": ["--layers", "2", "--inference", "top-down"],
    "top-down-vamp-3-layers": ["--layers", "3", "--inference", "top-down", "--prior", "vamp", "--prior-args",
                               '{"pseudo_inputs": 20}'],
    "conditional-2-layers": ["--layers", "2", "--conditional"],
    "free-bits-per-layer": ["--layers", "2", "--free-bits", "0.5"],
}


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"}
    proc = subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, timeout=300,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow            # about 15 s each on 2 loaded cores (2 epochs, evaluation, sampling)
@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_combination_trains_evaluates_and_samples(tmp_path, name):
    run = tmp_path / "run"
    _run("train", "--data", "digits", *COMBINATIONS[name], "--epochs", "2", "--hidden", "64", "--latent-dim", "8",
         "--batch-size", "64", "--out", str(run), "--no-progress", "--no-figures", "--importance-samples", "10")
    config = json.loads((run / "config.json").read_text())
    model = config["model"]
    layers = int(COMBINATIONS[name][COMBINATIONS[name].index("--layers") + 1])
    assert model["layers"] == layers
    if "--inference" in COMBINATIONS[name]:
        assert model["inference"] == "top-down"
    result = json.loads(_run("evaluate", str(run), "--json", "--importance-samples", "20").stdout)
    assert math.isfinite(result["log_likelihood"]) and math.isfinite(result["elbo"])
    assert result["log_likelihood"] > result["elbo"] - 3 * result["log_likelihood_se"]
    label = ["--label", "3"] if "--conditional" in COMBINATIONS[name] else []
    _run("sample", str(run), "--n", "4", *label, "--out", str(tmp_path / "samples.npy"))
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape[0] == 4 and np.isfinite(samples).all()
    if "--free-bits" in COMBINATIONS[name]:
        assert config["extra"]["train"]["free_bits"] == 0.5


@pytest.mark.parametrize(("argv", "mentions"), [
    (["--posterior", "full", "--free-bits", "0.5"], "the full posterior's latent dimensions are dependent"),
    (["--prior", "mixture", "--free-bits", "0.5"], "against the mixture prior the KL is no sum"),
    (["--inference", "top-down"], "--inference: top-down needs layers > 1"),
    (["--layers", "2", "--inference", "top-down", "--posterior", "iaf"], "--inference: top-down merges diagonal"),
])
def test_refusals_exit_2_with_one_line(tmp_path, capsys, argv, mentions):
    code = main(["train", "--data", "digits", *argv, "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and mentions in err, err
    assert not (tmp_path / "run").exists()


def test_run_text_says_a_free_bits_objective_is_not_a_bound(tmp_path):
    from vaekit.viz.run_record import RunRecord
    from vaekit.viz.run_text import training_text

    def text(train: dict) -> str:
        config = {"model": {}, "extra": {"train": train}}
        return training_text(RunRecord(root=tmp_path, config=config, history=[], evaluations={}, info=None,
                                       figures=[]))

    assert "the training objective is not a bound on log p(x) (free bits 0.5)" in \
        text({"objective": "elbo", "free_bits": 0.5, "epochs": 2})
    assert "not a bound" in text({"objective": "elbo", "beta": 0.5, "epochs": 2})
    assert "not a bound" not in text({"objective": "elbo", "free_bits": 0.0, "beta": 1.0, "epochs": 2})


@pytest.mark.parametrize("kw", [
    {"layers": 2, "prior": "vamp", "prior_args": {"pseudo_inputs": 3}, "inference": "top-down"},
    {"layers": 3, "prior": "mixture", "prior_args": {"components": 2}},
    {"layers": 2, "posterior": "iaf"},
    {"layers": 2, "num_classes": 3},
])
def test_composed_models_save_and_load_bit_for_bit(tmp_path, kw):
    """Every composed family round-trips through safetensors: the same weights, the same log-densities."""
    import torch

    from vaekit import VAEConfig, build_vae, load_model, save_model

    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 4, 4), latent_dim=3, hidden=(8,), decoder_variance=0.5, **kw))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.rand(2, 1, 4, 4)
    z = torch.randn(2, model.latent_dim)
    y = {"y": torch.tensor([0, 2])} if kw.get("num_classes") else {}
    assert torch.equal(model.log_pz(z), loaded.log_pz(z))
    m, lm = (model.given(y["y"]), loaded.given(y["y"])) if y else (model, loaded)
    assert torch.equal(m.encode(x).log_prob(z), lm.encode(x).log_prob(z))
    assert torch.equal(m.log_px(x, z), lm.log_px(x, z))
