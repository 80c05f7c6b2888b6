"""The family tests' shared check: a run stopped by a signal mid-epoch and resumed is bitwise the uninterrupted one.

``assert_resume_is_exact(tmp_path, monkeypatch, make_model)`` trains ``make_model()`` on 256 digits for 3 epochs
(batch 32, two draws per example, a cosine schedule with warm-up) without a stop, then again with ``signum``
raised inside the ``at``-th call of the training step, resumes it from ``tmp_path`` and compares the two runs:
every parameter and buffer with ``torch.equal``, the metric history exactly (durations left out).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from test_signals import _SignalOnCall
from vaekit import TrainConfig, fit
from vaekit.data import fit_preprocessing
from vaekit.store.runs import DataSpec
from vaekit.training.interrupts import TrainingInterrupted


def assert_resume_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_model: Callable[[], torch.nn.Module],
                           *, at: int = 13, signum: int = signal.SIGTERM) -> dict:
    """Run the check; returns the stopped run's ``checkpoints/last.json`` for the caller's own assertions."""
    import vaekit.training.step as step_mod

    dataset = DataSpec().load()
    pp = fit_preprocessing(dataset, "gaussian")
    x, v = pp.prepare(dataset.train[:256]), pp.prepare(dataset.val[:64])
    config = TrainConfig(epochs=3, batch_size=32, seed=7, schedule="cosine", warmup_steps=3, samples=2)
    full = make_model()
    reference = fit(full, x, v, config, preprocessing=pp)
    monkeypatch.setattr(step_mod, "batch_loss", _SignalOnCall(step_mod.batch_loss, at, signum))
    with pytest.raises(TrainingInterrupted):
        fit(make_model(), x, v, config, preprocessing=pp, run_dir=tmp_path)
    monkeypatch.undo()
    stopped = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    resumed = make_model()
    result = fit(resumed, x, v, config, preprocessing=pp, run_dir=tmp_path, resume=True)
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    strip = [{k: val for k, val in m.to_dict().items() if k != "seconds"} for m in reference.history]
    assert strip == [{k: val for k, val in m.to_dict().items() if k != "seconds"} for m in result.history]
    return stopped
