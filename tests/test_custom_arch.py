"""The user's own networks from the command line: ``vaekit train --arch MODULE:FUNCTION --arch-args JSON
--trust-code`` trains a VAE whose encoder trunk and decoder are small conv ``nn.Module``s defined in a
module this test writes (not vaekit's); the commands that load the run need ``--trust-code`` too, and
without it they stop with exit 2 and one line, having imported nothing.

The module writes a marker file beside itself whenever it is imported, so "imported nothing" is
checked directly.
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

from vaekit.errors import UntrustedCodeError
from vaekit.store.layout import RunLayout
from vaekit.store.model_files import load_model

NETS = '''"""Small conv networks for an 8x8 one-channel VAE (written by tests/test_custom_arch.py)."""
from pathlib import Path

from torch import nn

Path(__file__).with_suffix(".imported").write_text("imported")


def build(data_shape, latent_dim, width=8):
    channels, height, breadth = data_shape
    encoder_trunk = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
    decoder_net = nn.Sequential(nn.Linear(latent_dim, width * (height // 2) * (breadth // 2)), nn.ReLU(),
                                nn.Unflatten(1, (width, height // 2, breadth // 2)),
                                nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1))
    return encoder_trunk, decoder_net
'''
FAST = ("--data", "digits", "--latent-dim", "2", "--epochs", "1", "--batch-size", "256", "--no-progress",
        "--no-figures", "--importance-samples", "5")
EVAL_KEYS = {"n", "elbo", "log_likelihood", "log_likelihood_se", "kl", "reconstruction", "posterior_gap",
             "active_units", "bits_per_dim"}


def _vaekit(*args: str, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, check=False, env=env)


def _one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit ") and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(work folder, run) trained from ``nets/my_nets.py:build`` with width 4."""
    work = tmp_path_factory.mktemp("custom")
    (work / "nets").mkdir()
    (work / "nets" / "my_nets.py").write_text(NETS)
    proc = _vaekit("train", *FAST, "--arch", str(work / "nets" / "my_nets.py") + ":build",
                   "--arch-args", '{"width": 4}', "--trust-code", "--out", "run", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work, work / "run"


def test_the_run_records_the_builder_and_its_arguments(trained):
    work, run = trained
    model = json.loads(RunLayout.of(run).config.read_text())["model"]
    assert model["arch"] == f"{(work / 'nets' / 'my_nets.py').resolve()}:build"
    assert model["arch_args"] == {"width": 4}
    assert "hidden" not in model and "activation" not in model


def test_trusted_commands_use_the_users_networks(trained):
    work, run = trained
    commands = {"sample": ("sample", "run", "--trust-code", "--n", "6", "--out", "samples.npy"),
                "evaluate": ("evaluate", "run", "--trust-code", "--importance-samples", "10", "--json"),
                "reconstruct": ("reconstruct", "run", "--trust-code", "--n", "4", "--out", "recon.npy"),
                "encode": ("encode", "run", "--trust-code", "--limit", "5", "--out", "z.npy"),
                "interpolate": ("interpolate", "run", "--trust-code", "--pairs", "2", "--steps", "3",
                                "--out", "interp.npy")}
    with ThreadPoolExecutor(max_workers=5) as pool:
        procs = dict(zip(commands, pool.map(lambda args: _vaekit(*args, cwd=work), commands.values()), strict=True))
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stderr)
    assert np.load(work / "samples.npy").shape == (6, 1, 8, 8)
    assert np.load(work / "recon.npy").shape == (4, 1, 8, 8)
    assert np.load(work / "z.npy").shape == (5, 2)
    assert np.load(work / "interp.npy").shape == (2, 3, 1, 8, 8)
    doc = json.loads(procs["evaluate"].stdout)
    assert EVAL_KEYS <= set(doc) and doc["n"] == 180 and np.isfinite(doc["log_likelihood"])


REFUSED = {"evaluate": ("evaluate", "run", "--importance-samples", "10"),
           "sample": ("sample", "run", "--out", "refused.png"),
           "reconstruct": ("reconstruct", "run", "--out", "refused-recon.npy"),
           "encode": ("encode", "run", "--out", "refused-z.npy"),
           "interpolate": ("interpolate", "run", "--out", "refused-interp.png"),
           "figures": ("figures", "run")}


def test_without_trust_code_a_run_of_user_code_is_refused_and_nothing_imported(trained):
    work, run = trained
    marker = work / "nets" / "my_nets.imported"
    marker.unlink(missing_ok=True)
    before = sorted(p.name for p in work.iterdir()), sorted(p.name for p in run.iterdir())
    with ThreadPoolExecutor(max_workers=6) as pool:
        procs = dict(zip(REFUSED, pool.map(lambda args: _vaekit(*args, cwd=work), REFUSED.values()), strict=True))
    for name, proc in procs.items():
        line = _one_line(proc, "--trust-code", "my_nets.py:build")
        assert line.startswith(f"vaekit {name}: error: "), line
    assert not marker.exists()
    assert (sorted(p.name for p in work.iterdir()), sorted(p.name for p in run.iterdir())) == before


def test_train_refuses_user_code_without_trust_code(tmp_path):
    (tmp_path / "my_nets.py").write_text(NETS)
    for arch in ("my_nets:build", "my_nets.py:build"):
        proc = _vaekit("train", *FAST, "--arch", arch, "--out", "run", cwd=tmp_path, pythonpath=tmp_path)
        _one_line(proc, "--trust-code", arch)
    assert not (tmp_path / "my_nets.imported").exists() and not (tmp_path / "run").exists()
    proc = _vaekit("train", *FAST, "--arch", "my_nets.py:build", "--hidden", "8", "--trust-code", "--out", "run",
                   cwd=tmp_path)
    _one_line(proc, "--hidden", "--arch-args")                                  # mlp options, another arch
    proc = _vaekit("train", *FAST, "--arch", "my_nets.py:build", "--arch-args", "[4]", "--trust-code",
                   "--out", "run", cwd=tmp_path)
    _one_line(proc, "--arch-args", "JSON object")
    assert not (tmp_path / "my_nets.imported").exists() and not (tmp_path / "run").exists()


def test_a_dotted_module_name_on_the_python_path(tmp_path):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package of networks."""\n')
    (package / "convs.py").write_text(NETS)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    proc = _vaekit("train", *FAST, "--arch", "userpkg.convs:build", "--arch-args", '{"width": 3}', "--trust-code",
                   "--out", "run", cwd=elsewhere, pythonpath=tmp_path)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(RunLayout.of(elsewhere / "run").config.read_text())["model"]
    assert model["arch"] == "userpkg.convs:build" and model["arch_args"] == {"width": 3}
    (package / "convs.imported").unlink()
    proc = _vaekit("train", "--out", "run", "--resume", "--epochs", "2", "--no-progress", "--no-figures",
                   cwd=elsewhere, pythonpath=tmp_path)
    _one_line(proc, "--trust-code")
    assert not (package / "convs.imported").exists()
    proc = _vaekit("train", "--out", "run", "--resume", "--epochs", "2", "--no-progress", "--no-figures",
                   "--importance-samples", "5", "--trust-code", cwd=elsewhere, pythonpath=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = RunLayout.of(elsewhere / "run").metrics_jsonl.read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


def test_load_model_needs_trust_code_in_python(trained):
    work, run = trained
    marker = work / "nets" / "my_nets.imported"
    marker.unlink(missing_ok=True)
    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        load_model(run)
    assert not marker.exists()
    model = load_model(run, trust_code=True)
    assert marker.exists()
    assert model.sample(2).shape == (2, 1, 8, 8)
