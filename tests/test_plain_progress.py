"""Progress without a terminal (vaekit.cli.plain_progress): plain lines at a steady interval for training,
evaluation and figures, checked through the real command with stderr a pipe and a short interval."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest

from vaekit.cli.plain_progress import PlainProgress, interval
from vaekit.errors import ConfigError


def test_a_line_every_interval_with_count_rate_eta_and_postfix():
    out = io.StringIO()
    bar = PlainProgress(total=10, desc="train", unit="step", every=0.05, file=out)
    bar.update(4)
    bar.set_postfix(epoch=2, loss="1.5")
    deadline = time.monotonic() + 30                        # a busy machine may wake the thread late
    while len(out.getvalue().splitlines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2                                  # steady: lines come without further updates
    assert re.fullmatch(r"train: 4/10 steps \(40%\), [0-9.e+-]+ steps/s, ETA 0:00:\d\d, epoch 2, loss 1\.5", lines[-1])
    count = len(out.getvalue().splitlines())
    time.sleep(0.15)
    assert len(out.getvalue().splitlines()) == count        # closed: silent


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("VAEKIT_PROGRESS_SECONDS", "7.5")
    assert interval() == 7.5
    monkeypatch.setenv("VAEKIT_PROGRESS_SECONDS", "0")
    with pytest.raises(ConfigError, match="VAEKIT_PROGRESS_SECONDS"):
        interval()
    monkeypatch.delenv("VAEKIT_PROGRESS_SECONDS")
    assert 0 < interval() <= 30


@pytest.mark.slow                      # a whole command with figures: about 25 s on a busy 2-core machine
def test_train_without_a_terminal_prints_progress_lines_for_each_phase(tmp_path):
    # lines every 10 ms, and an evaluation long enough (K = 2000) to outlast several of them on any machine
    env = {**os.environ, "VAEKIT_PROGRESS_SECONDS": "0.01", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", "digits", "--epochs", "1", "--hidden",
                           "16", "--latent-dim", "2", "--importance-samples", "2000", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, env=env)      # stdout and stderr: pipes
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(re.match(r"train: \d+/\d+ steps \(\d+%\), .* steps/s", line) for line in lines), done.stderr
    assert any(re.match(r"evaluate: \d+/180 examples", line) for line in lines), done.stderr
    assert any(re.match(r"figures: 0:00:\d\d elapsed", line) for line in lines), done.stderr
    assert "\r" not in done.stderr                          # no bar redrawn in place
