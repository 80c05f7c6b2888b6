"""Crash safety: SIGKILL at random moments, resume, and end bitwise identical to an uninterrupted run;
a kill at any moment of a (checkpoint) write leaves the previous file whole and loadable.

Exact resume from a clean checkpoint and Ctrl-C are tested in test_train.py / test_cli_train.py;
here the process gets no chance to clean up. ``scripts/crash_resume.py`` does the same for
longer runs with more kills.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaekit.errors import CheckpointError
from vaekit.models.vae import VAEConfig, build_vae
from vaekit.store import checkpoint as ckpt
from vaekit.store.atomic import atomic_write_bytes
from vaekit.store.checkpoint import (
    capture_rng,
    checkpoint_paths,
    load_training_state,
    save_training_state,
)
from vaekit.store.model_files import read_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and fork")

EPOCHS = 6
TRAIN = ["train", "--data", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", str(EPOCHS),
         "--batch-size", "64", "--seed", "3", "--importance-samples", "2", "--no-progress", "--no-figures"]
ALLOWED_IN_CHECKPOINTS = {"last.json", "last.safetensors", "last.safetensors.next"}


def _popen(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.Popen([sys.executable, "-m", "vaekit", *TRAIN, "--out", str(run), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"


def _bits(t: torch.Tensor) -> tuple:
    return t.dtype, tuple(t.shape), t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def _check_intact(run: Path, reference_rows: list[dict]) -> int | None:
    """After a kill: whatever checkpoint exists loads, is a prefix of the reference run, and no
    stray file is taken for it. Returns its epoch (None: no checkpoint yet)."""
    folder = run / "checkpoints"
    st_path, json_path = checkpoint_paths(folder / "last")
    if not folder.exists():
        return None
    for p in folder.iterdir():   # only the pair, a committed-but-unrenamed .next, and atomic-write temporaries
        assert p.name in ALLOWED_IN_CHECKPOINTS or (p.name.startswith(".") and p.name.endswith(".tmp")), p
    assert json_path.exists() or not st_path.exists(), "weights without the JSON that commits them"
    if not json_path.exists():
        return None
    config, _ = read_config(run)
    model = build_vae(config)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    state = load_training_state(folder / "last", model, optimizer, scheduler)
    history = [{k: v for k, v in m.items() if k != "seconds"} for m in state["extra"]["history"]]
    assert state["epoch"] >= 1 and history == reference_rows[:state["epoch"]]
    return state["epoch"]


def _kill_after(proc: subprocess.Popen, ready, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` holds; False if it exited first."""
    while not ready():
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.communicate(timeout=30)             # reap it and close its pipes
    return True


def _epoch_line(proc: subprocess.Popen, epoch: int):
    """A ``ready`` for :func:`_kill_after`: the process has printed the line of ``epoch`` or a later one
    (printed just before that epoch's files are written, so a short delay lands in the writes)."""
    def ready() -> bool:
        line = proc.stdout.readline()       # blocks until a line or EOF (then poll() says it exited)
        return line.startswith("epoch ") and int(line.split()[1].split("/")[0]) >= epoch
    return ready


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path):
    rng = random.Random(20240607)
    a, b = tmp_path / "a", tmp_path / "b"
    proc_a = _popen(a)                       # the uninterrupted reference, alongside run B

    # kill 1: after config.json exists, before the first checkpoint (resume = a fresh start)
    proc = _popen(b)
    killed = _kill_after(proc, (b / "config.json").exists, rng.uniform(0.0, 0.01))
    log = [("after config.json", killed, (b / "checkpoints" / "last.json").exists())]
    _finish(proc_a)
    reference = _rows(a / "metrics.jsonl")
    assert [r["epoch"] for r in reference] == list(range(1, EPOCHS + 1))
    assert _check_intact(b, reference) is None, "the first kill was meant to land before the first checkpoint"

    # kills 2, 3: a few milliseconds after an epoch's line, i.e. during its checkpoint writes or the next steps
    for target in sorted(rng.sample(range(1, EPOCHS), 2)):
        proc = _popen(b, "--resume")
        killed = _kill_after(proc, _epoch_line(proc, target), rng.uniform(0.0, 0.004))
        if not killed:
            _finish(proc)
        log.append((f"after epoch {target}", killed, _check_intact(b, reference)))

    for _ in range(3):                       # resume until the run completes
        if (b / "evaluation-test.json").exists():
            break
        _finish(_popen(b, "--resume"))
    assert (b / "evaluation-test.json").exists(), log
    assert any(killed for _, killed, _ in log), log

    for name in ("model.safetensors", "checkpoints/last.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert sorted(ta) == sorted(tb), name
        assert any(k.startswith("model.") for k in ta) or name == "model.safetensors"
        for key in ta:
            assert _bits(ta[key]) == _bits(tb[key]), f"{name}: {key} differs ({log})"
    assert _rows(b / "metrics.jsonl") == reference
    assert json.loads((b / "checkpoints" / "last.json").read_text())["sha256"] == \
        json.loads((a / "checkpoints" / "last.json").read_text())["sha256"]
    assert not (b / "checkpoints" / "last.safetensors.next").exists()


# --------------------------------------------------------------------------- kills inside a write


def _fork_and_run(child) -> None:
    """Run ``child()`` (file IO only) in a forked process that SIGKILLs itself where ``child`` says."""
    with warnings.catch_warnings():          # Python 3.12+ warns about fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:                             # pragma: no cover - the child
        try:
            child()
        finally:
            os._exit(3)                      # only reached if the kill did not happen
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


class _KillingFile:
    """A file object that writes ``limit`` bytes of the first write, then SIGKILLs the process."""

    def __init__(self, fh, limit: int):
        self._fh, self._limit = fh, limit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)

    def write(self, data):
        self._fh.write(data[:self._limit])
        self._fh.flush()
        os.fsync(self._fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name):
        return getattr(self._fh, name)


@pytest.mark.parametrize("moment", ["mid-write", "before-fsync", "before-rename"])
def test_sigkill_inside_atomic_write_leaves_the_old_file(tmp_path, moment):
    path = tmp_path / "weights.safetensors"
    old, new = b"old" * 1000, os.urandom(4 << 20)
    atomic_write_bytes(path, old)

    def child():
        real_fdopen = os.fdopen
        if moment == "mid-write":
            os.fdopen = lambda fd, mode: _KillingFile(real_fdopen(fd, mode), len(new) // 2)
        elif moment == "before-fsync":
            os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        else:
            os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
        atomic_write_bytes(path, new)

    _fork_and_run(child)
    assert path.read_bytes() == old
    strays = [p for p in tmp_path.iterdir() if p != path]
    assert strays and all(p.name.startswith(".weights.safetensors.") and p.name.endswith(".tmp") for p in strays)
    atomic_write_bytes(path, new)            # the next write is unaffected by the stray temporary
    assert path.read_bytes() == new


def test_sigkill_while_committing_a_checkpoint_leaves_the_previous_one(tmp_path):
    """The new tensors are fully written (.next) and the process dies halfway through the JSON that
    would commit them: the previous pair still loads, unchanged."""
    model, optimizer, scheduler = _training_objects()
    stem = tmp_path / "checkpoints" / "last"
    st_path, json_path = checkpoint_paths(stem)
    _save(stem, model, optimizer, scheduler, epoch=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, optimizer, scheduler)
    # the bytes the next save would write, made in the parent: the child only does file IO
    new_st, new_json = _save(tmp_path / "elsewhere" / "last", model, optimizer, scheduler, epoch=2)
    new_st, new_json = new_st.read_bytes(), new_json.read_bytes()

    def child():
        atomic_write_bytes(ckpt._pending_path(st_path), new_st)
        real_fdopen = os.fdopen
        os.fdopen = lambda fd, mode: _KillingFile(real_fdopen(fd, mode), len(new_json) // 2)
        atomic_write_bytes(json_path, new_json)

    _fork_and_run(child)
    assert ckpt._pending_path(st_path).read_bytes() == new_st
    state = _load(stem)
    assert state["epoch"] == 1 and all(torch.equal(before[k], v) for k, v in state["model"].items())
    _save(stem, model, optimizer, scheduler, epoch=2)       # the next save overwrites the uncommitted .next
    state = _load(stem)
    assert state["epoch"] == 2 and all(torch.equal(model.state_dict()[k], v) for k, v in state["model"].items())


# --------------------------------------------------------------------------- every step of a checkpoint save


def _training_objects():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(16,)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.9 ** t)
    _step(model, optimizer, scheduler)
    return model, optimizer, scheduler


def _step(model, optimizer, scheduler):
    loss = sum((p ** 2).sum() for p in model.parameters())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def _save(stem, model, optimizer, scheduler, *, epoch):
    return save_training_state(stem, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                               step=10 * epoch, rng=capture_rng(), extra={"best": -math.inf})


def _load(stem):
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(16,)))
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    state = load_training_state(stem, model, optimizer, scheduler)
    return {**state, "model": model.state_dict()}


class _Killed(BaseException):
    """Stands for SIGKILL at a step boundary (nothing after it runs, files stay as they are)."""


def _crash_at(monkeypatch, point: str, st_path: Path) -> None:
    pending = ckpt._pending_path(st_path)
    if point == "before-weights":
        def replace(src, dst, _real=os.replace):
            if Path(dst) == pending:
                raise _Killed
            return _real(src, dst)
        monkeypatch.setattr(os, "replace", replace)
    elif point == "before-commit":
        def write_json(path, obj):
            raise _Killed
        monkeypatch.setattr(ckpt, "atomic_write_json", write_json)
    elif point == "before-rename":
        def replace(src, dst, _real=os.replace):
            if Path(src) == pending:
                raise _Killed
            return _real(src, dst)
        monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("point", ["before-weights", "before-commit", "before-rename"])
def test_a_crash_at_each_step_of_a_save_leaves_a_whole_checkpoint(tmp_path, monkeypatch, point, first):
    model, optimizer, scheduler = _training_objects()
    stem = tmp_path / "checkpoints" / "last"
    st_path, json_path = checkpoint_paths(stem)
    if not first:
        _save(stem, model, optimizer, scheduler, epoch=1)
        _step(model, optimizer, scheduler)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with monkeypatch.context() as m:
        _crash_at(m, point, st_path)
        with pytest.raises(_Killed):
            _save(stem, model, optimizer, scheduler, epoch=2)

    if point == "before-rename":             # committed: the new state loads (from .next until renamed)
        state = _load(stem)
        assert state["epoch"] == 2 and all(torch.equal(saved[k], v) for k, v in state["model"].items())
    elif first:                              # nothing committed yet: no checkpoint, a fresh start
        assert not json_path.exists() and not st_path.exists()
        with pytest.raises(CheckpointError, match="not found"):
            _load(stem)
    else:                                    # the previous checkpoint, whole
        assert _load(stem)["epoch"] == 1

    # the next save succeeds, even if it too is cut short before its commit
    _step(model, optimizer, scheduler)
    with monkeypatch.context() as m:
        _crash_at(m, "before-commit", st_path)
        with pytest.raises(_Killed):
            _save(stem, model, optimizer, scheduler, epoch=3)
    expected = 2 if point == "before-rename" else (None if first else 1)
    if expected is None:
        assert not json_path.exists()
    else:
        assert _load(stem)["epoch"] == expected
    _save(stem, model, optimizer, scheduler, epoch=4)
    state = _load(stem)
    assert state["epoch"] == 4 and not ckpt._pending_path(st_path).exists()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state["model"].items())
