"""The trainer and its checkpoints: learning, exact resume, KL warm-up, divergence, corrupted files."""

from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest
import torch

from vaekit import CheckpointError, ConfigError, VAEConfig, build_vae
from vaekit.data import Preprocessing, fit_preprocessing
from vaekit.store.checkpoint import capture_rng, load_training_state, save_training_state
from vaekit.store.runs import DataSpec
from vaekit.training import (
    DivergenceError,
    EpochMetrics,
    TrainConfig,
    fit,
    kl_beta,
    lr_factor,
)

TABULAR = Preprocessing("tabular", None, None, None, binarize=False, dequantize=False)


@pytest.fixture(scope="module")
def digits():
    """Digits, dequantised for a Gaussian decoder: (preprocessing, train_x, val_x)."""
    dataset = DataSpec().load()
    pp = fit_preprocessing(dataset, "gaussian")
    return pp, pp.prepare(dataset.train[:256]), pp.prepare(dataset.val[:64])


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(32,), **kw))


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fit_learns(digits):
    pp, x, v = digits
    model = _model(decoder_variance="optimal")
    result = fit(model, x, v, TrainConfig(epochs=6, batch_size=32, lr=3e-3), preprocessing=pp)
    h = result.history
    assert [m.epoch for m in h] == list(range(1, 7)) and h[-1].step == 6 * 8
    assert h[-1].train_loss < h[0].train_loss and h[-1].val_elbo > h[0].val_elbo
    assert result.best_val_elbo == max(m.val_elbo for m in h)
    assert h[result.best_epoch - 1].val_elbo == result.best_val_elbo and not result.stopped_early
    assert all(m.skipped_steps == 0 and m.val_log_likelihood is None for m in h)


def test_fit_leaves_the_global_rng_alone(digits):
    pp, x, v = digits
    model = _model()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fit(model, x[:64], v, TrainConfig(epochs=1, batch_size=32), preprocessing=pp)
    assert torch.equal(torch.get_rng_state(), before)


def test_iwae_adamw_clip_cosine_and_validation_likelihood(digits):
    pp, x, v = digits
    config = TrainConfig(epochs=2, batch_size=64, objective="iwae", samples=3, weight_decay=1e-4, grad_clip=5.0,
                         schedule="cosine", warmup_steps=2, val_importance_samples=4)
    result = fit(_model(decoder_variance="learned"), x, v[:16], config, preprocessing=pp)
    m = result.history[-1]
    assert all(math.isfinite(getattr(m, f)) for f in ("train_loss", "train_elbo", "train_kl", "val_log_likelihood"))
    assert m.train_loss <= -m.train_elbo + 1e-6          # L_K >= ELBO estimate on the same draws
    assert m.lr == pytest.approx(1e-3 * lr_factor(config, m.step - 1, m.step))


def test_kl_warmup_and_lr_schedule():
    c = TrainConfig(beta=2.0, kl_warmup_epochs=2.0)
    assert [kl_beta(c, t, 10) for t in (0, 5, 10, 20, 35)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert kl_beta(TrainConfig(beta=0.5), 0, 10) == 0.5
    w = TrainConfig(warmup_steps=3)
    assert [lr_factor(w, t, 100) for t in (0, 1, 2, 3, 50)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cos = TrainConfig(schedule="cosine", warmup_steps=2)
    assert lr_factor(cos, 2, 12) == 1.0 and lr_factor(cos, 7, 12) == pytest.approx(0.5)
    assert lr_factor(cos, 12, 12) == pytest.approx(0.0, abs=1e-12)


def test_beta_is_recorded_per_epoch(digits):
    pp, x, v = digits
    result = fit(_model(), x[:64], v, TrainConfig(epochs=3, batch_size=32, beta=1.0, kl_warmup_epochs=2.0),
                 preprocessing=pp)
    assert [m.beta for m in result.history] == [0.25, 0.75, 1.0]   # β at each epoch's last step (2 steps/epoch)


@pytest.mark.parametrize("kw", [dict(epochs=0), dict(batch_size=-1), dict(lr=0.0), dict(lr=math.nan),
                                dict(schedule="plateau"), dict(objective="vae"), dict(samples=0),
                                dict(beta=-1.0), dict(grad_clip=0.0), dict(early_stopping_patience=0),
                                dict(objective="iwae", beta=0.5), dict(device="gpu0"), dict(seed=-1),
                                dict(epochs=True)])
def test_train_config_rejects(kw):
    with pytest.raises(ConfigError, match=next(iter(kw)) if "objective" not in kw or len(kw) == 1 else "iwae"):
        TrainConfig(**kw)


def test_train_config_dict_round_trip():
    c = TrainConfig(epochs=3, grad_clip=1.0, early_stopping_patience=2, schedule="cosine")
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ConfigError, match="unknown keys.*'epoch'"):
        TrainConfig.from_dict({"epoch": 3})


# --------------------------------------------------------------------------- checkpoints


def _trained_state(tmp_path):
    model = _model(decoder_variance="optimal")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.9 ** t)
    for _ in range(3):
        loss = -model.decoder(model.encode(torch.rand(8, 1, 8, 8)).rsample()).log_prob(torch.rand(8, 1, 8, 8)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_checkpoint_round_trip_is_exact(tmp_path):
    model, opt, sched = _trained_state(tmp_path)
    np.random.seed(7)
    rng = capture_rng()
    extra = {"best": -math.inf, "history": [{"a": 1.5, "b": None}], "pair": (1, 2), "ids": {3: "x"}}
    st, js = save_training_state(tmp_path / "ck" / "last", model=model, optimizer=opt, scheduler=sched, epoch=4,
                                 step=12, rng=rng, extra=extra)
    assert st.name == "last.safetensors" and js.name == "last.json"
    doc = json.loads(js.read_text())
    assert doc["format_version"] == 1 and len(doc["sha256"]) == 64

    model2 = _model(seed=1, decoder_variance="optimal")
    opt2 = torch.optim.Adam(model2.parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda t: 0.9 ** t)
    out = load_training_state(tmp_path / "ck" / "last", model2, opt2, sched2)
    assert out["epoch"] == 4 and out["step"] == 12
    assert out["extra"]["best"] == -math.inf and out["extra"]["pair"] == (1, 2) and out["extra"]["ids"] == {3: "x"}
    assert out["extra"]["history"] == [{"a": 1.5, "b": None}]
    for k, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[k]) and value.dtype == model2.state_dict()[k].dtype
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i, state in s1["state"].items():
        for name, value in state.items():
            assert torch.equal(value, s2["state"][i][name]) and value.dtype == s2["state"][i][name].dtype
    assert sched.state_dict() == sched2.state_dict()
    assert torch.equal(out["rng"]["torch"], rng["torch"]) and out["rng"]["python"] == rng["python"]
    assert np.array_equal(out["rng"]["numpy"]["state"]["key"], rng["numpy"]["state"]["key"])
    np.random.set_state(out["rng"]["numpy"])
    assert np.random.random() == (np.random.seed(7), np.random.random())[1]


@pytest.mark.parametrize("damage", ["flip", "truncate", "json", "missing", "wrong-model", "version"])
def test_damaged_checkpoint_is_a_checkpoint_error(tmp_path, damage):
    model, opt, sched = _trained_state(tmp_path)
    stem = tmp_path / "last"
    st, js = save_training_state(stem, model=model, optimizer=opt, scheduler=sched, epoch=1, step=3, rng={}, extra={})
    if damage == "flip":
        data = bytearray(st.read_bytes())
        data[-3] ^= 0xFF
        st.write_bytes(bytes(data))
    elif damage == "truncate":
        st.write_bytes(st.read_bytes()[:40])
    elif damage == "json":
        js.write_text("{not json")
    elif damage == "missing":
        st.unlink()
    elif damage == "version":
        doc = json.loads(js.read_text())
        doc["format_version"] = 99
        js.write_text(json.dumps(doc))
    if damage == "wrong-model":
        model = build_vae(VAEConfig((1, 8, 8), latent_dim=3, hidden=(32,)))
        opt = torch.optim.Adam(model.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    with pytest.raises(CheckpointError, match="last"):
        load_training_state(stem, model, opt, sched)


# --------------------------------------------------------------------------- runs and resume


def test_exact_resume_after_more_epochs(digits, tmp_path):
    pp, x, v = digits
    config = TrainConfig(epochs=4, batch_size=64, seed=3)
    full = _model()
    fit(full, x, v, config, preprocessing=pp, run_dir=tmp_path / "a")

    part = _model()
    fit(part, x, v, TrainConfig(epochs=2, batch_size=64, seed=3), preprocessing=pp, run_dir=tmp_path / "b")
    resumed = _model(seed=99)                                  # weights come from the checkpoint
    result = fit(resumed, x, v, config, preprocessing=pp, run_dir=tmp_path / "b", resume=True)
    for k, value in _params(full).items():
        assert torch.equal(value, resumed.state_dict()[k]), k
    assert [m.epoch for m in result.history] == [1, 2, 3, 4]
    a = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    strip = [{k: val for k, val in row.items() if k != "seconds"} for row in a]
    assert strip == [{k: val for k, val in row.items() if k != "seconds"} for row in b]
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 1 + 4


class _Interrupt:
    """A callback that raises KeyboardInterrupt when epoch ``at`` ends (before it is saved)."""

    def __init__(self, at):
        self.at = at

    def __call__(self, metrics):
        if metrics.epoch == self.at:
            raise KeyboardInterrupt


def test_exact_resume_after_interrupt_with_every_random_part(digits, tmp_path):
    pp, x, v = digits
    assert pp.dequantize
    config = TrainConfig(epochs=4, batch_size=48, seed=5, schedule="cosine", warmup_steps=3, kl_warmup_epochs=1.5,
                         samples=2, grad_clip=50.0, early_stopping_patience=10)
    full = _model(decoder_variance="optimal")
    ref = fit(full, x, v, config, preprocessing=pp, run_dir=tmp_path / "a")

    part = _model(decoder_variance="optimal")
    with pytest.raises(KeyboardInterrupt):
        fit(part, x, v, config, preprocessing=pp, run_dir=tmp_path / "b", callbacks=[_Interrupt(3)])
    assert json.loads((tmp_path / "b" / "checkpoints" / "last.json").read_text())["epoch"] == 2
    with (tmp_path / "b" / "metrics.jsonl").open("a") as fh:        # a row written just before a crash
        fh.write(json.dumps({"epoch": 3}) + "\n")
    resumed = _model(seed=42, decoder_variance="optimal")
    result = fit(resumed, x, v, config, preprocessing=pp, run_dir=tmp_path / "b", resume=True)
    for k, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[k]), k
    assert result.best_epoch == ref.best_epoch and result.best_val_elbo == ref.best_val_elbo
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == (tmp_path / "a" / "model.safetensors").read_bytes()


class _InterruptOnCall:
    """Wraps a function of the trainer: on its ``at``-th call, after running it, either raises
    KeyboardInterrupt (``batch_loss`` of vaekit.training.step: mid-step, the step's random numbers
    drawn) or sends a real SIGINT (``lr_factor``, which scheduler.step calls while the step
    commits: the interrupt waits for the commit to finish)."""

    def __init__(self, real, at, signal_it):
        self.real, self.at, self.signal_it, self.calls = real, at, signal_it, 0

    def __call__(self, *args, **kwargs):
        out = self.real(*args, **kwargs)
        self.calls += 1
        if self.calls == self.at:
            if not self.signal_it:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        return out


# 8 steps per epoch. (batch_loss, 12): the 12th step is interrupted, 11 done (epoch 2, batch 3);
# (batch_loss, 17): the first step of epoch 3; (lr_factor, 17): call 1 is the scheduler's set-up, so
# SIGINT arrives while step 16, the last of epoch 2, commits: epoch 2 has all its batches but no metrics.
@pytest.mark.parametrize(("target", "at", "steps_done"),
                         [("batch_loss", 12, 11), ("batch_loss", 17, 16), ("lr_factor", 17, 16)])
def test_exact_resume_after_interrupt_mid_epoch(digits, tmp_path, monkeypatch, target, at, steps_done):
    import vaekit.training.loop as loop_mod
    import vaekit.training.step as step_mod

    train_mod = step_mod if target == "batch_loss" else loop_mod
    pp, x, v = digits
    assert pp.dequantize
    config = TrainConfig(epochs=3, batch_size=32, seed=7, schedule="cosine", warmup_steps=3, kl_warmup_epochs=1.5,
                         samples=2, grad_clip=50.0)
    full = _model(decoder_variance="optimal")
    ref = fit(full, x, v, config, preprocessing=pp, run_dir=tmp_path / "a")

    part = _model(decoder_variance="optimal")
    monkeypatch.setattr(train_mod, target, _InterruptOnCall(getattr(train_mod, target), at, target == "lr_factor"))
    with pytest.raises(KeyboardInterrupt):
        fit(part, x, v, config, preprocessing=pp, run_dir=tmp_path / "b")
    monkeypatch.undo()
    doc = json.loads((tmp_path / "b" / "checkpoints" / "last.json").read_text())
    record = doc["extra"]["partial_epoch"]
    epoch, batches = divmod(steps_done, 8)
    if target == "lr_factor":
        epoch, batches = epoch - 1, 8
    assert doc["epoch"] == epoch and doc["step"] == steps_done
    assert record["epoch"] == epoch + 1 and record["batches"] == batches
    assert len(record["sums"]) == 4 and record["counted"] == 32.0 * batches and record["skipped"] == 0
    assert {"augment_rng", "torch_rng"} <= set(record)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epoch + 1))          # completed epochs only

    resumed = _model(seed=42, decoder_variance="optimal")
    result = fit(resumed, x, v, config, preprocessing=pp, run_dir=tmp_path / "b", resume=True)
    for k, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[k]), k
    assert result.best_epoch == ref.best_epoch and result.best_val_elbo == ref.best_val_elbo
    strip = [{k: val for k, val in m.to_dict().items() if k != "seconds"} for m in ref.history]
    assert strip == [{k: val for k, val in m.to_dict().items() if k != "seconds"} for m in result.history]
    final = json.loads((tmp_path / "b" / "checkpoints" / "last.json").read_text())
    assert final["epoch"] == 3 and "partial_epoch" not in final["extra"]


def test_resume_rules(digits, tmp_path):
    pp, x, v = digits
    config = TrainConfig(epochs=2, batch_size=128)
    first = fit(_model(), x, v, config, preprocessing=pp, run_dir=tmp_path)
    with pytest.raises(ConfigError, match="already holds a training run"):
        fit(_model(), x, v, config, preprocessing=pp, run_dir=tmp_path)
    model = _model(seed=9)
    again = fit(model, x, v, config, preprocessing=pp, run_dir=tmp_path, resume=True)   # finished: returns
    assert again.history == first.history and again.best_epoch == first.best_epoch
    with pytest.raises(ConfigError, match="lr: the run being resumed used 0.001"):
        fit(_model(), x, v, TrainConfig(epochs=3, batch_size=128, lr=0.01), preprocessing=pp, run_dir=tmp_path,
            resume=True)
    with pytest.raises(ConfigError, match="resume: needs a run directory"):
        fit(_model(), x, v, config, preprocessing=pp, resume=True)
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["extra"]["train"] == config.to_dict() and config_json["extra"]["preprocessing"] == pp.to_dict()


def test_early_stopping(digits):
    pp, x, v = digits
    result = fit(_model(), x[:32], v, TrainConfig(epochs=30, batch_size=32, lr=0.5, early_stopping_patience=2),
                 preprocessing=pp)
    assert result.stopped_early and len(result.history) == result.best_epoch + 2 < 30


# --------------------------------------------------------------------------- non-finite losses


def test_non_finite_steps_are_skipped(monkeypatch):
    torch.manual_seed(0)
    model = build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,), decoder_variance="optimal"))
    x = torch.randn(64, 4)
    x[5, 1] = math.nan                       # exactly one bad batch per epoch
    captured = {}
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        captured["opt"] = self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    result = fit(model, x, torch.randn(16, 4), TrainConfig(epochs=3, batch_size=8), preprocessing=TABULAR)
    assert [m.skipped_steps for m in result.history] == [1, 1, 1]
    assert all(math.isfinite(m.train_loss) and math.isfinite(m.val_elbo) for m in result.history)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    # the skipped steps changed no optimizer state: 3 x 7 good steps
    assert {float(s["step"]) for s in captured["opt"].state.values()} == {21.0}


def test_divergence_raises():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,)))
    x = torch.full((200, 4), math.nan)
    with pytest.raises(DivergenceError, match="learning rate too high") as info:
        fit(model, x, torch.randn(8, 4), TrainConfig(epochs=2, batch_size=8), preprocessing=TABULAR)
    assert isinstance(info.value, RuntimeError)


def test_epoch_metrics_json_round_trip():
    m = EpochMetrics(1, 2, math.nan, -1.0, 0.5, -0.5, -1.0, 0.5, -0.5, 1.0, 1e-3, 0.1)
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["train_loss"] is None
    back = EpochMetrics.from_dict(d)
    assert math.isnan(back.train_loss) and back.val_log_likelihood is None and back.val_elbo == -1.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_trains_close_to_fp32(digits, precision):
    pp, x, v = digits
    ref = _model()
    fit(ref, x, v, TrainConfig(epochs=6, batch_size=32, lr=3e-3, precision="fp32"), preprocessing=pp)
    low = _model()
    result = fit(low, x, v, TrainConfig(epochs=6, batch_size=32, lr=3e-3, precision=precision), preprocessing=pp)
    assert all(p.dtype == torch.float32 for p in low.parameters())          # master weights stay float32
    diffs = [float((a - b).abs().max())
             for a, b in zip(ref.state_dict().values(), low.state_dict().values(), strict=True)]
    assert max(diffs) > 0                                                   # the arithmetic did change
    first, last = result.history[0].val_elbo, result.history[-1].val_elbo
    assert math.isfinite(last) and last > first + 1                         # and it still learns
    ref_last = fit(_model(), x, v, TrainConfig(epochs=6, batch_size=32, lr=3e-3, precision="fp32"),
                   preprocessing=pp).history[-1]
    assert abs(last - ref_last.val_elbo) < 3.0


def test_auto_precision_is_bf16_on_a_cpu_with_native_bf16_and_fp32_elsewhere():
    from vaekit.training.config import native_bfloat16, resolve_precision

    assert TrainConfig().precision == "auto"
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native_bfloat16() else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, torch.device("cpu")) == name


def test_bf16_on_the_cpu_casts_only_the_products():
    """--precision bf16 on the CPU is bfloat16_products (no autocast: every other operation stays
    float32); fp16 and other devices keep torch.autocast."""
    from vaekit.ops.linear import bfloat16_products
    from vaekit.training.step import precision_context

    factory, scaler = precision_context("bf16", torch.device("cpu"))
    assert factory is bfloat16_products and scaler is None
    with factory():
        assert not torch.is_autocast_enabled("cpu")
    factory, scaler = precision_context("fp16", torch.device("cpu"))
    with factory():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
    assert scaler is not None


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision: unknown 'fp8'"):
        TrainConfig(precision="fp8")
