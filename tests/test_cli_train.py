"""``vaekit train``: a run directory end to end, --resume, --config files, one-line errors, Ctrl-C."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vaekit.cli import main

FAST = ["--data", "digits", "--hidden", "32", "--latent-dim", "2", "--batch-size", "256", "--no-progress"]
HAS_FIGURES = importlib.util.find_spec("vaekit.viz.figures") is not None


def _vaekit(*args, cwd=None, timeout=120):
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, check=False)


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_a_run_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    proc = _vaekit("train", *FAST, "--out", str(run), "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "metrics.csv", "checkpoints/last.json",
                 "checkpoints/last.safetensors", "evaluation-test.json"):
        assert (run / name).is_file(), name
    assert [r["epoch"] for r in _rows(run)] == [1, 2]
    extra = json.loads((run / "config.json").read_text())["extra"]
    assert extra["data"]["spec"] == "digits" and extra["train"]["epochs"] == 2
    assert extra["preprocessing"]["dequantize"] is True
    assert "best validation ELBO" in proc.stdout and str(run) in proc.stdout
    if HAS_FIGURES:
        assert (run / "report.html").is_file() and any((run / "figures").glob("*.png"))

    proc = _vaekit("train", "--out", str(run), "--resume", "--epochs", "3", "--no-progress", "--no-figures")
    assert proc.returncode == 0, proc.stderr
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3]
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
    assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 3


def test_config_file_and_command_line_precedence(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"epochs": 5, "latent_dim": 3, "hidden": [16], "kl_warmup": 1, "batch_size": 512,
                               "decoder_variance": "learned", "no_progress": True, "no_figures": True}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--out", str(run)]) == 0
    model = json.loads((run / "config.json").read_text())
    assert model["model"]["latent_dim"] == 3 and model["model"]["arch_args"]["hidden"] == [16]
    assert model["format_version"] == 2 and model["model"]["arch"] == "mlp"
    assert model["model"]["decoder_variance"] == "learned"
    assert model["extra"]["train"]["epochs"] == 1 and model["extra"]["train"]["kl_warmup_epochs"] == 1.0
    assert len(_rows(run)) == 1
    # a fresh run into an existing run directory is refused
    assert main(["train", "--config", str(cfg), "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # resuming with a different model is refused, naming the option
    assert main(["train", "--out", str(run), "--resume", "--latent-dim", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--latent-dim" in err and "cannot change on --resume" in err


@pytest.mark.parametrize("args, message", [
    (["--decoder-variance", "-1"], "--decoder-variance"),
    (["--arch", "transformer"], "--arch"),
    (["--arch", "nets.py:"], "--arch"),
    (["--arch-args", "{width: 4}"], "--arch-args"),
    (["--device", "banana"], "--device"),
    (["--epochs", "0"], "--epochs"),
    (["--likelihood", "poisson"], "--likelihood"),
    (["--hidden", "a,b"], "--hidden"),
    (["--lr", "nan"], "--lr"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", str(tmp_path / "r"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("content, message", [
    ({"epochs": 1, "latent_dims": 2}, "unknown key 'latent_dims'"),
    ({"arch": "nets.py:build", "trust_code": True}, "--trust-code"),
    ({"arch_args": [1, 2]}, "arch_args"),
    ({"epochs": 0}, "epochs"),
    ({"likelihood": "poisson"}, "likelihood"),
    ([1, 2], "JSON object"),
])
def test_bad_config_files(tmp_path, capsys, content, message):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(content))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(cfg) in err
    assert not (tmp_path / "r").exists()


def test_arch_options(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"epochs": 1, "latent_dim": 2, "arch": "linear", "arch_args": {}, "batch_size": 512,
                               "no_progress": True, "no_figures": True, "importance_samples": 2}))
    run = tmp_path / "linear"
    assert main(["train", "--config", str(cfg), "--out", str(run)]) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["arch"] == "linear" and model["arch_args"] == {} and "hidden" not in model
    # the mlp's options fill its arch_args; --arch-args may give them instead, but not both at once
    run = tmp_path / "mlp"
    assert main(["train", "--epochs", "1", "--latent-dim", "2", "--arch-args", '{"hidden": [8, 4]}',
                 "--activation", "relu", "--no-progress", "--no-figures", "--importance-samples", "2",
                 "--out", str(run)]) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["arch_args"] == {"hidden": [8, 4], "activation": "relu"}
    capsys.readouterr()
    assert main(["train", "--hidden", "8", "--arch-args", '{"hidden": [8]}', "--out", str(tmp_path / "x")]) == 2
    assert "--hidden" in capsys.readouterr().err
    # --hidden / --activation with another architecture are usage errors, before any data is read
    for args in (["--arch", "linear", "--hidden", "8"], ["--arch", "linear", "--activation", "relu"]):
        assert main(["train", *args, "--data", "no-such-data", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and args[-2] in err and "--arch mlp" in err
    # resume compares the model as a whole: the same options, written differently, are no change
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--hidden", "8,4", "--arch", "mlp",
                 "--no-figures", "--importance-samples", "2"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--activation", "tanh"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--activation" in err and "cannot change on --resume" in err
    assert main(["train", "--out", str(run), "--resume", "--arch", "linear"]) == 2
    assert "--arch" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_errors_from_a_subprocess_have_no_traceback(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"epochs": 1, "colour": "red"}')
    for args in (["--decoder-variance", "-1"], ["--config", str(cfg)], ["--resume"]):
        proc = _vaekit("train", "--out", str(tmp_path / "r"), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT semantics")
def test_ctrl_c_saves_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "train", *FAST, "--out", str(run), "--epochs", "100000",
                             "--no-figures"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoints" / "last.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"interrupted; resume with: vaekit train --out {run} --resume" in err
    done = json.loads((run / "checkpoints" / "last.json").read_text())["epoch"]
    assert [r["epoch"] for r in _rows(run)] == list(range(1, done + 1))
    assert main(["train", "--out", str(run), "--resume", "--epochs", str(done + 1), "--no-figures"]) == 0
    assert [r["epoch"] for r in _rows(run)] == list(range(1, done + 2))
