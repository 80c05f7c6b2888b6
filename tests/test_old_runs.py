"""Runs written by vaekit 0.1 (config.json format 1, the decoder variance under its old key) still load,
evaluate and resume.

``tests/fixtures/run_v1`` (mlp 64-16-2, optimal c) and ``tests/fixtures/run_v1_linear`` (linear, learned
c) were trained for 2 epochs by the last commit before the redesign (cde571e)::

    vaekit train --out run_v1 --epochs 2 --hidden 16 --latent-dim 2 --no-figures --importance-samples 10
    vaekit train --out run_v1_linear --epochs 2 --arch linear --decoder-variance learned --latent-dim 2 ...

and ``reference.npz`` beside each holds that code's outputs on the first 4 test digits
(``tests/fixtures/make_reference.py``, run with the old code on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.errors import CheckpointError
from vaekit.store.layout import RunLayout
from vaekit.store.model_files import FORMAT_VERSION, load_model, read_config
from vaekit.store.runs import eval_tensor, load_run

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = ("run_v1", "run_v1_linear")
EVAL_KEYS = {"n", "elbo", "log_likelihood", "log_likelihood_se", "kl", "reconstruction", "posterior_gap",
             "active_units", "bits_per_dim", "exact_log_likelihood", "exact_posterior_gap"}


def _vaekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, check=False, env=env)


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.mark.parametrize("name", RUNS)
def test_the_fixture_is_a_format_1_run(name):
    layout = RunLayout.of(FIXTURES / name)
    doc = json.loads(layout.config.read_text())
    assert doc["format_version"] == 1 and FORMAT_VERSION == 2
    assert "hidden" in doc["model"] and "arch_args" not in doc["model"]          # the flat 0.1 model dict
    for path in (layout.weights, *(layout.checkpoint.with_suffix(s) for s in (".json", ".safetensors")),
                 layout.metrics_jsonl, layout.metrics_csv, layout.evaluation("test")):
        assert path.is_file(), path
    assert not layout.tensorboard.exists() and not layout.figures.exists()


def test_format_1_configs_read_as_today():
    mlp, _ = read_config(FIXTURES / "run_v1")
    assert mlp.arch == "mlp" and mlp.arch_args == {"hidden": [16], "activation": "tanh"}
    assert mlp.decoder_variance == "optimal" and mlp.latent_dim == 2 and mlp.data_shape == (1, 8, 8)
    linear, extra = read_config(FIXTURES / "run_v1_linear")
    assert linear.arch == "linear" and linear.arch_args == {}                     # the stored hidden is dropped
    assert linear.decoder_variance == "learned" and extra["train"]["epochs"] == 2


@pytest.mark.parametrize("name", RUNS)
def test_load_run_gives_the_old_codes_outputs(name):
    ref = np.load(FIXTURES / name / "reference.npz")
    run = load_run(FIXTURES / name)
    run.model.eval()
    x = eval_tensor(run.preprocessing, run.data.load().test[:4], seed=0)
    assert torch.equal(x, torch.from_numpy(ref["x"]))                            # the same data pipeline
    with torch.no_grad():
        q = run.model.encode(x)
        outputs = {"posterior_mean": q.mean, "posterior_variance": q.variance,
                   "reconstruction": run.model.reconstruct(x),
                   "log_px_given_mean_z": run.model.decode(q.mean).log_prob(x),
                   "samples_seed0": run.model.sample(3, generator=torch.Generator().manual_seed(0))}
    for key, value in outputs.items():
        torch.testing.assert_close(value, torch.from_numpy(ref[key]), rtol=1e-5, atol=1e-5, msg=key)


def test_the_old_variance_key_is_renamed_on_load():
    from safetensors.torch import load_file

    stored = load_file(str(FIXTURES / "run_v1_linear" / "model.safetensors"))
    assert "decoder.variance.log_c" in stored
    model = load_model(FIXTURES / "run_v1_linear")
    state = model.state_dict()
    assert "decoder.variance.log_c" not in state
    renamed = [k for k in state if k.endswith("variance.log_c")]
    assert len(renamed) == 1 and torch.equal(state[renamed[0]], stored["decoder.variance.log_c"])


def test_a_format_version_this_vaekit_does_not_know_is_refused(tmp_path):
    run = _copy("run_v1", tmp_path)
    path = RunLayout.of(run).config
    doc = json.loads(path.read_text())
    for version, message in ((3, "newer"), (0, "not one this vaekit reads")):
        doc["format_version"] = version
        path.write_text(json.dumps(doc))
        with pytest.raises(CheckpointError, match=message):
            read_config(run)


@pytest.mark.parametrize("name", RUNS)
def test_vaekit_evaluate_on_an_old_run(tmp_path, name):
    run = _copy(name, tmp_path)
    before = json.loads(RunLayout.of(run).evaluation("test").read_text())
    proc = _vaekit("evaluate", name, "--importance-samples", "10", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert EVAL_KEYS <= set(doc) and doc["n"] == before["n"] == 180
    assert doc["elbo"] == pytest.approx(before["elbo"], rel=1e-6)                # the old code's own evaluation
    assert doc["log_likelihood"] == pytest.approx(before["log_likelihood"], rel=1e-6)
    assert json.loads(RunLayout.of(run).evaluation("test").read_text()) == before     # left alone (no --save)
    if name == "run_v1_linear":
        assert isinstance(doc["exact_log_likelihood"], float)


@pytest.mark.parametrize("name", RUNS)
def test_resume_continues_the_old_checkpoint(tmp_path, name):
    run = _copy(name, tmp_path)
    layout = RunLayout.of(run)
    old_rows = [json.loads(line) for line in layout.metrics_jsonl.read_text().splitlines()]
    proc = _vaekit("train", "--out", name, "--epochs", "3", "--resume", "--no-progress", "--no-figures",
                   "--importance-samples", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in layout.metrics_jsonl.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[:2] == old_rows
    assert len(layout.metrics_csv.read_text().splitlines()) == 4
    assert json.loads(layout.checkpoint.with_suffix(".json").read_text())["epoch"] == 3
    assert json.loads(layout.config.read_text())["format_version"] == FORMAT_VERSION   # rewritten with the best
    load_run(run)
