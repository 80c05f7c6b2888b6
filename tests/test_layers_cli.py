"""Several stochastic layers end to end (slow): ``vaekit train --layers 2`` with the ELBO and the IWAE bound,
then ``evaluate --json``, ``sample`` and the figures; a 2-rank torchrun job equal to one process; an
interrupted run resumed equal to an uninterrupted one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaekit.training import fit

sys.path.insert(0, str(Path(__file__).parent))
from ddp_layers_worker import train_setup  # noqa: E402

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("ddp_layers_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
FIGURES = ("training-curves", "reconstructions", "prior-samples", "latent-scatter", "latent-traversals")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"}


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, timeout=300,
                          env=_env(), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("objective", [("--objective", "elbo"), ("--objective", "iwae", "--samples", "5")])
def test_train_evaluate_sample_with_two_layers(tmp_path, objective):
    run = tmp_path / "run"
    _run("train", "--data", "digits", "--layers", "2", "--epochs", "2", *objective, "--out", str(run),
         "--no-progress", "--importance-samples", "20")
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["layers"] == 2 and model["layer_args"] == {"latent_dims": [8], "hidden": [[100, 100]],
                                                            "activation": "tanh"}
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 0, name
    assert (run / "report.html").exists()
    result = json.loads(_run("evaluate", str(run), "--json", "--importance-samples", "50").stdout)
    assert math.isfinite(result["log_likelihood"]) and math.isfinite(result["elbo"])
    assert result["latent_dim"] == 24 and result["log_likelihood"] > result["elbo"] - 3 * result["log_likelihood_se"]
    _run("sample", str(run), "--n", "8", "--out", str(tmp_path / "samples.npy"))
    import numpy as np

    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (8, 1, 8, 8) and np.isfinite(samples).all()


def test_two_ranks_equal_one_process(tmp_path):
    """37 examples in one global batch of 37: uneven halves of 19 and 18, ε drawn for the whole batch."""
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", str(WORKER), str(tmp_path), "37", "37", "2", "learned"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model, train_x, val_x, config, pp = train_setup(37, 37, 2, "learned")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, train_x, val_x, config, preprocessing=pp)
    ddp = load_file(str(tmp_path / "params.safetensors"))
    assert set(ddp) == set(model.state_dict()) and any(k.startswith("up.") for k in ddp)
    assert max(float((v - initial[k]).abs().max()) for k, v in model.state_dict().items()) > 1e-3
    for k, value in model.state_dict().items():
        torch.testing.assert_close(ddp[k], value, rtol=1e-10, atol=1e-12, msg=k)
    ranks = json.loads((tmp_path / "rank0.json").read_text())
    assert ranks["val_elbo"] == pytest.approx([m.val_elbo for m in result.history], abs=1e-9)


def test_an_interrupted_run_resumes_to_the_uninterrupted_one(tmp_path, monkeypatch):
    import vaekit.training.step as step_mod

    n_train, batch, epochs = 64, 16, 2                 # 4 steps an epoch; interrupted in step 6 (epoch 2)
    model, train_x, val_x, config, pp = train_setup(n_train, batch, epochs, "optimal")
    real, calls = step_mod.batch_loss, [0]

    def interrupt(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(step_mod, "batch_loss", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(model, train_x, val_x, config, preprocessing=pp, run_dir=tmp_path / "run")
    monkeypatch.undo()
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert saved["extra"]["partial_epoch"]["batches"] == 1
    resumed, *_ = train_setup(n_train, batch, epochs, "optimal")
    result = fit(resumed, train_x, val_x, config, preprocessing=pp, run_dir=tmp_path / "run", resume=True)
    straight, *_ = train_setup(n_train, batch, epochs, "optimal")
    reference = fit(straight, train_x, val_x, config, preprocessing=pp)
    for k, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], value), k
    strip = [{k: v for k, v in m.to_dict().items() if k != "seconds"} for m in reference.history]
    assert strip == [{k: v for k, v in m.to_dict().items() if k != "seconds"} for m in result.history]
