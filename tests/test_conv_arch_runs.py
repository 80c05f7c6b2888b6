"""Slow: the ``conv`` and ``resnet`` architectures end to end. ``vaekit train`` on digits and on a folder of
3×13×21 RGB PNGs, ``evaluate --json`` and ``sample --out x.npy``; a 2-rank torchrun run equal to the
one-process run (tests/conv_ddp_worker.py, the pattern of test_distributed.py); a run stopped by a signal
mid-epoch and resumed, bitwise the uninterrupted one (the pattern of test_signals.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mnist_skip import HOW
from vaekit import VAEConfig, build_vae
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.training import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).parent))
from conv_ddp_worker import conv_setup  # noqa: E402
from resume_check import assert_resume_is_exact  # noqa: E402
from test_distributed import _torchrun  # noqa: E402

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("conv_ddp_worker.py")
MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def _vaekit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.parametrize("arch", ["conv", "resnet"])
def test_train_evaluate_sample_on_digits(tmp_path, arch):
    run = tmp_path / "run"
    _vaekit("train", "--data", "digits", "--arch", arch, "--arch-args", '{"width": 8}', "--latent-dim", "4",
            "--epochs", "2", "--batch-size", "64", "--importance-samples", "20", "--no-progress", "--out", str(run))
    assert json.loads((run / "config.json").read_text())["model"]["arch"] == arch
    doc = json.loads(_vaekit("evaluate", str(run), "--json", "--importance-samples", "50").stdout)
    assert math.isfinite(doc["log_likelihood"]) and math.isfinite(doc["elbo"])
    assert doc["log_likelihood"] >= doc["elbo"] - 4 * doc["log_likelihood_se"]     # log p(x) >= ELBO
    _vaekit("sample", str(run), "--n", "6", "--out", str(tmp_path / "x.npy"))
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (6, 1, 8, 8) and np.isfinite(x).all()


def test_a_folder_of_rgb_pngs_of_odd_size(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):                       # a coloured bar at a random row: some structure to learn
        image = np.full((13, 21, 3), 20, dtype=np.uint8)
        image[rng.integers(0, 11):, :, i % 3] = 230
        Image.fromarray(image, "RGB").save(folder / f"{i:03d}.png")
    run = tmp_path / "run"
    _vaekit("train", "--data", str(folder), "--arch", "conv", "--latent-dim", "3", "--epochs", "2",
            "--batch-size", "16", "--importance-samples", "5", "--no-progress", "--out", str(run))
    assert json.loads((run / "config.json").read_text())["model"]["data_shape"] == [3, 13, 21]
    _vaekit("sample", str(run), "--n", "5", "--out", str(tmp_path / "x.npy"))
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (5, 3, 13, 21) and np.isfinite(x).all()
    _vaekit("reconstruct", str(run), "--split", "val", "--n", "4", "--out", str(tmp_path / "r.npy"))
    assert np.load(tmp_path / "r.npy").shape == (4, 3, 13, 21)


@pytest.mark.skipif(not MNIST.is_dir(), reason="no MNIST files in ../shared/data/mnist" + HOW)
def test_named_mnist_gives_images_a_conv_model_trains_on(tmp_path):
    dataset = load_dataset("mnist", data_dir=MNIST)
    assert dataset.shape == (1, 28, 28) and dataset.train.shape[1:] == (1, 28, 28)
    pp = fit_preprocessing(dataset, "gaussian")
    x, v = pp.prepare(dataset.train[:128]), pp.prepare(dataset.val[:64])
    torch.manual_seed(0)
    model = build_vae(VAEConfig(dataset.shape, latent_dim=4, arch="conv", arch_args={"width": 8}))
    result = fit(model, x, v, TrainConfig(epochs=2, batch_size=64, seed=1), preprocessing=pp)
    assert all(math.isfinite(m.val_elbo) for m in result.history)
    assert model.sample(3).shape == (3, 1, 28, 28)


@pytest.mark.parametrize(("n_train", "batch"), [(37, 37), (33, 16)])
def test_two_ranks_equal_one_process(tmp_path, n_train, batch):
    _torchrun(2, str(WORKER), str(tmp_path), str(n_train), str(batch), "2", "optimal")
    model, train_x, val_x, config, pp = conv_setup(n_train, batch, 2, "optimal")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, train_x, val_x, config, preprocessing=pp)
    ddp = load_file(str(tmp_path / "params.safetensors"))
    params = model.state_dict()
    assert set(ddp) == set(params) and any(k.startswith("encoder.trunk.layers.") for k in ddp)
    assert max(float((params[k] - initial[k]).abs().max()) for k in params) > 1e-3      # training moved them
    for k, value in params.items():           # float64: equal up to the order of the gradient sums
        torch.testing.assert_close(ddp[k], value, rtol=1e-10, atol=1e-12, msg=k)
    history = json.loads((tmp_path / "rank0.json").read_text())["history"]
    for got, want in zip(history, [m.to_dict() for m in result.history], strict=True):
        for key in ("train_loss", "train_elbo", "val_elbo"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), (got["epoch"], key)


@pytest.mark.parametrize("arch", ["conv", "resnet"])
def test_stopped_mid_epoch_then_resumed_is_bitwise_the_uninterrupted_run(tmp_path, monkeypatch, arch):
    def model():
        torch.manual_seed(0)
        return build_vae(VAEConfig((1, 8, 8), latent_dim=2, arch=arch, arch_args={"width": 4},
                                   decoder_variance="learned"))

    stopped = assert_resume_is_exact(tmp_path, monkeypatch, model, at=13, signum=signal.SIGTERM)
    assert stopped["step"] == 12 and stopped["extra"]["partial_epoch"]["epoch"] == 2
