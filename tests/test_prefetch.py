"""Batches drawn in a worker thread (vaekit.training.batches.Prefetcher): the same batches, the same
generator states, the same training, errors where their batch is asked for."""

from __future__ import annotations

import threading

import pytest
import torch

from vaekit import ConfigError, VAEConfig, build_vae
from vaekit.data import Preprocessing
from vaekit.training import TrainConfig, fit
from vaekit.training.batches import BatchPlan, Prefetcher, background_batches

BINARY = Preprocessing("image", 256, None, None, binarize=True, dequantize=False)


def _plan(n=70, batch=16):
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    plan = BatchPlan(x, BINARY, batch, torch.device("cpu"), latent=(3, (5,), torch.float32))
    plan.start_epoch(torch.Generator().manual_seed(2))
    return plan


def _drawn(background, first=0, states=True):
    plan, gen = _plan(), torch.Generator().manual_seed(3)
    with Prefetcher(plan, gen, background=background, states=states) as prefetch:
        return [(b, local.x.clone(), local.eps.clone(), state) for b, local, state in
                prefetch.steps(first, plan.steps_per_epoch)]


def test_background_draws_the_same_batches_and_states_as_drawing_each_when_asked():
    plan, gen = _plan(), torch.Generator().manual_seed(3)
    expected = []
    for b in range(plan.steps_per_epoch):           # the loop fit ran before batches were prefetched
        local = plan.batch(b, gen)
        expected.append((b, local.x, local.eps, gen.get_state()))
    for background in (False, True):
        got = _drawn(background)
        assert [g[0] for g in got] == list(range(5))
        for (b, x, eps, state), (b2, x2, eps2, state2) in zip(expected, got, strict=True):
            assert b == b2 and torch.equal(x, x2) and torch.equal(eps, eps2) and torch.equal(state, state2)
    assert set(torch.unique(expected[0][1]).tolist()) == {0.0, 1.0}            # binarised
    assert expected[-1][1].shape == (70 - 4 * 16, 1, 4, 4)                    # the last, smaller batch


def test_steps_from_the_middle_and_without_states():
    got = _drawn(True, first=3, states=False)
    assert [g[0] for g in got] == [3, 4] and all(g[3] is None for g in got)
    assert _drawn(True, first=5) == []


def test_an_error_in_the_worker_is_raised_where_its_batch_is_asked_for(monkeypatch):
    plan, gen = _plan(), torch.Generator().manual_seed(3)
    original = BatchPlan.batch

    def failing(self, step, generator):
        if step == 3:
            raise OSError("batch 3: the file could not be read")
        return original(self, step, generator)

    monkeypatch.setattr(BatchPlan, "batch", failing)
    seen = []
    with Prefetcher(plan, gen, background=True) as prefetch:
        with pytest.raises(OSError, match="batch 3"):
            for b, _, _ in prefetch.steps(0, plan.steps_per_epoch):
                seen.append(b)
    assert seen == [0, 1, 2]


def test_leaving_early_waits_for_the_draw_in_flight_and_stops_the_worker():
    plan, gen = _plan(), torch.Generator().manual_seed(3)
    with Prefetcher(plan, gen, background=True) as prefetch:
        for b, _, _ in prefetch.steps(0, plan.steps_per_epoch):
            if b == 1:
                break                                  # batch 2 is being drawn
    assert prefetch._pool is None and prefetch._pending is None
    assert not any(t.name.startswith("vaekit-batches") and t.is_alive() for t in threading.enumerate())
    # the generator stands after batch 2's draws: the next draw is batch 3's
    reference = torch.Generator().manual_seed(3)
    for b in range(3):
        plan.batch(b, reference)
    assert torch.equal(gen.get_state(), reference.get_state())


def test_background_batches_follows_the_environment(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("VAEKIT_BACKGROUND_BATCHES", raising=False)
    assert background_batches(cpu) and not background_batches(torch.device("cuda"))
    monkeypatch.setenv("VAEKIT_BACKGROUND_BATCHES", "0")
    assert not background_batches(cpu)
    monkeypatch.setenv("VAEKIT_BACKGROUND_BATCHES", "1")
    assert background_batches(cpu)
    monkeypatch.setenv("VAEKIT_BACKGROUND_BATCHES", "yes")
    with pytest.raises(ConfigError, match="VAEKIT_BACKGROUND_BATCHES: expected 0 or 1, got 'yes'"):
        background_batches(cpu)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_fit_trains_the_same_weights_with_batches_in_the_background_or_not(monkeypatch, objective):
    x = torch.rand(200, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    val = torch.rand(20, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    config = TrainConfig(epochs=2, batch_size=32, seed=5, objective=objective, samples=3, kl_warmup_epochs=0.0
                         if objective == "iwae" else 1.0)
    weights = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("VAEKIT_BACKGROUND_BATCHES", flag)
        torch.manual_seed(0)
        model = build_vae(VAEConfig((1, 6, 6), latent_dim=3, hidden=(16,), likelihood="bernoulli"))
        result = fit(model, x, val, config, preprocessing=BINARY)
        weights[flag] = (model.state_dict(), [m.train_elbo for m in result.history])
    (w0, h0), (w1, h1) = weights["0"], weights["1"]
    assert h0 == h1
    for k, value in w0.items():
        assert torch.equal(value, w1[k]), k
