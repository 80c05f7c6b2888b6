"""One writer per run directory (``vaekit.store.lock``): a second ``vaekit train --out R`` (or ``evaluate``,
``figures``) while one runs exits with code 2 and one line naming the holder; the first run is unaffected."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from vaekit import VAEConfig, build_vae
from vaekit.cli import main
from vaekit.store.layout import RunLayout
from vaekit.store.lock import RunLockedError, lock_holder, refuse_if_locked, run_lock
from vaekit.training import TrainConfig, fit

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock and SIGSTOP")

FAST = ["--data", "digits", "--hidden", "16", "--latent-dim", "2", "--batch-size", "256", "--no-progress",
        "--no-figures", "--importance-samples", "2"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaekit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    run = tmp_path / "run"
    first = _popen("train", *FAST, "--epochs", "6", "--out", str(run))
    try:
        deadline = time.monotonic() + 90
        while not (run / "config.json").exists() or (lock_holder(run) or "").split()[:2] != ["pid", str(first.pid)]:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)              # frozen mid-run: the others surely meet it running
        try:
            second = _popen("train", *FAST, "--epochs", "3", "--out", str(run))   # evaluate, figures: below
            _, second_err = second.communicate(timeout=120)
        finally:
            first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    holder = f"--out {run}: in use by pid {first.pid} on host {socket.gethostname()} (vaekit train, started "
    assert second.returncode == 2, second_err
    assert second_err.count("\n") == 1 and holder in second_err, second_err
    assert first.returncode == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 6
    assert "best validation ELBO" in out and err == ""


def test_lock_is_exclusive_reentrant_and_released(tmp_path):
    run = tmp_path / "run"
    with run_lock(run) as path:
        assert path == RunLayout.of(run).lock and run.is_dir() and path.read_bytes() == b""
        assert (lock_holder(run) or "").startswith(f"pid {os.getpid()} on host {socket.gethostname()} (")
        with run_lock(run):                            # the same process again: re-entrant
            refuse_if_locked(run)
        fd = os.open(path, os.O_RDONLY)                # another open file: flock conflicts as another process
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(RunLayout.of(run).lock, os.O_RDONLY)  # released at the end of the block
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


def test_fit_evaluate_and_figures_refuse_a_locked_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    lock = RunLayout.of(run).lock
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    holder = f"in use by pid {os.getpid()} on host {socket.gethostname()} ("
    fd = os.open(lock, os.O_RDONLY)                    # another open file: it conflicts as another process would
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunLockedError, match="in use by pid"):
            refuse_if_locked(run, option="--out ")
        for command in (["evaluate", str(run), "--importance-samples", "2"], ["figures", str(run)],
                        ["train", "--out", str(run), "--resume", "--epochs", "2"]):
            assert main(command) == 2, command
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and holder in err and "wait for it to finish" in err, err
        torch.manual_seed(0)
        model = build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,)))
        with pytest.raises(RunLockedError):
            fit(model, torch.randn(16, 4), torch.randn(4, 4), TrainConfig(epochs=1, batch_size=8),
                run_dir=tmp_path / "run")
    finally:
        os.close(fd)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before      # nothing was touched
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-figures"]) == 0   # free again


def test_out_naming_a_file_is_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    with pytest.raises(Exception, match="not a directory"):
        with run_lock(target):
            pass
    assert target.read_text() == "keep me"
