"""SIGTERM and SIGHUP (what torchrun, Slurm and Kubernetes send) stop training as Ctrl-C does: a checkpoint
at the last completed step (mid-epoch in one process), one line on stderr, exit code 143 (129 for SIGHUP),
and a resume that is bitwise the uninterrupted run. Under torchrun: ``tests/test_multinode.py`` (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vaekit import VAEConfig, build_vae
from vaekit.data import fit_preprocessing
from vaekit.store.runs import DataSpec
from vaekit.training import TrainConfig, fit
from vaekit.training.interrupts import InterruptGate, TrainingInterrupted, deferred_interrupt

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FAST = ["--data", "digits", "--hidden", "32", "--latent-dim", "2", "--batch-size", "256", "--no-progress",
        "--no-figures", "--importance-samples", "2"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}


def _vaekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, env=_env(),
                          timeout=180, check=False)


def test_only_default_dispositions_are_taken_over():
    """An ignored SIGHUP (nohup) stays ignored; SIGTERM at its default becomes the gate, and is restored."""
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        gate = InterruptGate()
        with gate:
            assert signal.getsignal(signal.SIGTERM) is gate and signal.getsignal(signal.SIGINT) is gate
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            with pytest.raises(TrainingInterrupted) as info:       # held back to the end of a commit
                with gate.hold():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.01)
            assert info.value.signum == signal.SIGTERM and isinstance(info.value, KeyboardInterrupt)
            with deferred_interrupt():                             # a second signal: recorded, no second stop
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)
        with gate:                                                 # a new training: stops again
            with pytest.raises(TrainingInterrupted) as info:       # held back while files are written
                with deferred_interrupt():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.01)
            assert info.value.signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is gate
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGHUP, old_hup)


class _SignalOnCall:
    """Wraps a function of the trainer and sends this process ``signum`` after its ``at``-th call:
    ``batch_loss`` (mid-step: the step is abandoned) or ``lr_factor`` (called by scheduler.step while
    a step commits: the signal waits for the commit to finish)."""

    def __init__(self, real, at, signum):
        self.real, self.at, self.signum, self.calls = real, at, signum, 0

    def __call__(self, *args, **kwargs):
        out = self.real(*args, **kwargs)
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return out


# 8 steps per epoch. (SIGHUP, batch_loss, 12): the 12th step is abandoned, 11 done (epoch 2, batch 3);
# (SIGTERM, lr_factor, 17): call 1 is the scheduler's set-up, so SIGTERM arrives while step 16, the
# last of epoch 2, commits.
@pytest.mark.parametrize(("signum", "target", "at", "steps_done"),
                         [(signal.SIGHUP, "batch_loss", 12, 11), (signal.SIGTERM, "lr_factor", 17, 16)])
def test_signal_mid_epoch_checkpoints_and_resumes_exactly(tmp_path, monkeypatch, signum, target, at, steps_done):
    import vaekit.training.loop as loop_mod
    import vaekit.training.step as step_mod

    if signal.getsignal(signum) is signal.SIG_IGN:      # e.g. SIGHUP under nohup: vaekit leaves it ignored
        pytest.skip(f"{signal.Signals(signum).name} is ignored in this process")

    dataset = DataSpec().load()
    pp = fit_preprocessing(dataset, "gaussian")
    x, v = pp.prepare(dataset.train[:256]), pp.prepare(dataset.val[:64])
    config = TrainConfig(epochs=3, batch_size=32, seed=7, schedule="cosine", warmup_steps=3, samples=2)

    def model():
        torch.manual_seed(0)
        return build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(32,), decoder_variance="optimal"))

    full = model()
    ref = fit(full, x, v, config, preprocessing=pp)
    module = step_mod if target == "batch_loss" else loop_mod
    monkeypatch.setattr(module, target, _SignalOnCall(getattr(module, target), at, signum))
    with pytest.raises(TrainingInterrupted) as info:
        fit(model(), x, v, config, preprocessing=pp, run_dir=tmp_path)
    monkeypatch.undo()
    assert info.value.signum == signum
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL        # the handlers are restored
    doc = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert doc["step"] == steps_done and doc["extra"]["partial_epoch"]["epoch"] == 2     # both stop in epoch 2
    resumed = model()
    result = fit(resumed, x, v, config, preprocessing=pp, run_dir=tmp_path, resume=True)
    for k, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[k]), k
    strip = [{k: val for k, val in m.to_dict().items() if k != "seconds"} for m in ref.history]
    assert strip == [{k: val for k, val in m.to_dict().items() if k != "seconds"} for m in result.history]


def _model_tensors(run) -> dict[str, torch.Tensor]:
    tensors = load_file(str(run / "checkpoints" / "last.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}


@pytest.mark.slow
def test_sigterm_stops_the_command_with_143_and_resume_is_exact(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "train", *FAST, "--out", str(run), "--epochs", "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 90
        while not (run / "checkpoints" / "last.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)                                   # somewhere in a later epoch
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err == f"vaekit train: stopped by SIGTERM; resume with: vaekit train --out {run} --resume\n"
    doc = json.loads((run / "checkpoints" / "last.json").read_text())
    epochs = doc["epoch"] + 1                              # finish the epoch it stopped in (or the next one)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, doc["epoch"] + 1))
    resumed = _vaekit("train", "--out", str(run), "--resume", "--epochs", str(epochs), "--no-progress",
                      "--no-figures")
    assert resumed.returncode == 0, resumed.stderr
    straight = _vaekit("train", *FAST, "--out", str(ref), "--epochs", str(epochs))
    assert straight.returncode == 0, straight.stderr
    a, b = _model_tensors(run), _model_tensors(ref)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip == [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                     for line in (ref / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow                     # a training run and four figures runs in subprocesses, about a minute
def test_ctrl_c_at_any_moment_of_figures_exits_130_with_one_line(tmp_path):
    """Ctrl-C during ``vaekit figures`` (at start-up, while drawing, just after "wrote report.html", in the
    interpreter's shutdown) exits 130 with one line, never 0 with "Exception ignored" tracebacks."""
    assert _vaekit("train", *FAST, "--epochs", "1", "--out", str(tmp_path / "run")).returncode == 0
    interrupted = 0
    for after in ("", "wrote ", "report.html", "report.html"):
        proc = subprocess.Popen([sys.executable, "-m", "vaekit", "figures", str(tmp_path / "run")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        assert proc.stdout is not None
        if not after:
            time.sleep(1.0)                                          # imports, loading the run
        else:
            while (line := proc.stdout.readline()) and after not in line:
                pass
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert proc.returncode in (0, 130), (proc.returncode, err)    # 0: it had exited before the signal came
        if proc.returncode == 130:
            interrupted += 1
            assert err.splitlines() == ["vaekit figures: interrupted"], err
        else:
            assert err == "", err
    assert interrupted >= 2
