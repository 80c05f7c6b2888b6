"""Experiment tracking: what ``fit`` writes to TensorBoard (read back with tensorboard's EventAccumulator)
and ``vaekit train --mlflow`` (read back with mlflow's client from a local store). The MLflow tests that
create a store are marked slow: MLflow builds its sqlite database with a few seconds of migrations.

The optional packages are skipped when missing, with the reason, except in CI (``CI`` set), whose
``.ci/run`` installs them with the ``test`` extra: there a missing package fails."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import VAEConfig, build_vae
from vaekit.errors import ConfigError
from vaekit.store.layout import RunLayout
from vaekit.store.metrics import read_history
from vaekit.store.model_files import save_model
from vaekit.training import EpochMetrics, TrainConfig, fit
from vaekit.training.tensorboard import MIN_TILE_PX, N_RECONSTRUCTIONS, N_SAMPLES, image_grid

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")      # the tests send nothing anywhere

SHAPE = (1, 8, 8)
SEED = 3


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"optional package(s) {', '.join(missing)} not installed (pip install 'vaekit[tensorboard,mlflow]')"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI installs them with the test extra")
        pytest.skip(reason)


def _png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L")).astype(float)


# --------------------------------------------------------------------------- image grids


def test_image_grid_is_padded_and_enlarged_by_a_whole_factor():
    images = torch.arange(6 * 64, dtype=torch.float32).reshape(6, 1, 8, 8) / (6 * 64)
    grid = image_grid(images, 3)
    s = math.ceil(MIN_TILE_PX / 8)
    assert grid.shape == (1, (2 * 10 + 2) * s, (3 * 10 + 2) * s)
    tile = grid[0, 2 * s:(2 + 8) * s:s, (2 + 10) * s:(2 + 10 + 8) * s:s]         # row 0, column 1
    np.testing.assert_array_equal(tile, images[1, 0].numpy())
    assert np.all(grid[0, :2 * s] == 0.5)                                       # the grey gap above
    assert np.all(image_grid(images * 5 - 2, 3) >= 0)                             # clipped to [0, 1]


# --------------------------------------------------------------------------- TensorBoard


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    """Two epochs of three steps (48 examples, batches of 16) with TensorBoard, read back."""
    _require("tensorboard")
    run_dir = tmp_path_factory.mktemp("tb") / "run"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, *SHAPE, generator=g)
    torch.manual_seed(0)
    model = build_vae(VAEConfig(SHAPE, latent_dim=2, arch_args={"hidden": (16,)}))
    config = TrainConfig(epochs=2, batch_size=16, seed=SEED, lr=2e-3)
    result = fit(model, x[:48], x[48:], config, run_dir=run_dir, tensorboard_images=1, tensorboard_steps=1)
    return {"events": _events(run_dir), "model": model, "val_x": x[48:], "history": read_history(RunLayout.of(run_dir)),
            "result": result, "config": config, "x": x}


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(RunLayout.of(run_dir).tensorboard),
                              size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def _scalars(events, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in events.Scalars(tag)}


def test_step_scalars_average_to_the_epoch_metrics(tb_run):
    events, history = tb_run["events"], tb_run["history"]
    loss, elbo = _scalars(events, "step/loss"), _scalars(events, "step/elbo")
    kl, rec = _scalars(events, "step/kl"), _scalars(events, "step/reconstruction")
    assert sorted(loss) == [1, 2, 3, 4, 5, 6]                             # one value per step, global step 1..T
    for row in history:                                                   # equal batches: the plain mean
        steps = range(3 * row["epoch"] - 2, 3 * row["epoch"] + 1)
        assert np.mean([loss[t] for t in steps]) == pytest.approx(row["train_loss"], rel=1e-5)
        assert np.mean([kl[t] for t in steps]) == pytest.approx(row["train_kl"], rel=1e-5)
    for t in loss:                                                        # β = 1: loss = -ELBO = -(rec - KL)
        assert loss[t] == pytest.approx(-elbo[t], rel=1e-5)
        assert elbo[t] == pytest.approx(rec[t] - kl[t], rel=1e-4, abs=1e-4)
    np.testing.assert_allclose(list(_scalars(events, "step/lr").values()), 2e-3, rtol=1e-6)
    assert list(_scalars(events, "step/beta").values()) == [1.0] * 6


def test_step_points_every_n_steps_are_the_means_of_their_steps(tb_run, tmp_path):
    # the same training with a point every 2 steps: epochs are steps 1-3 and 4-6, so the points are
    # t = 2 (steps 1, 2), 3 (the epoch's end: step 3), 4 (the new epoch's first step) and 6 (steps 5, 6)
    torch.manual_seed(0)
    model = build_vae(VAEConfig(SHAPE, latent_dim=2, arch_args={"hidden": (16,)}))
    x = tb_run["x"]
    fit(model, x[:48], x[48:], tb_run["config"], run_dir=tmp_path / "run", tensorboard_images=0, tensorboard_steps=2)
    events, every = _events(tmp_path / "run"), tb_run["events"]
    for tag in ("step/loss", "step/kl"):
        one, two = _scalars(every, tag), _scalars(events, tag)
        assert sorted(two) == [2, 3, 4, 6]
        for t, steps in {2: (1, 2), 3: (3,), 4: (4,), 6: (5, 6)}.items():
            assert two[t] == pytest.approx(np.mean([one[s] for s in steps]), rel=1e-5)
    assert sorted(_scalars(events, "step/lr")) == [2, 3, 4, 6]
    assert events.Tags()["images"] == []
    model_small = build_vae(VAEConfig(SHAPE, latent_dim=2, arch_args={"hidden": (4,)}))
    with pytest.raises(ConfigError, match="tensorboard_steps: must be an integer >= 1, got 0"):
        fit(model_small, x, x, TrainConfig(epochs=1), tensorboard_steps=0)


def test_epoch_scalars_equal_metrics_jsonl(tb_run):
    events, history = tb_run["events"], tb_run["history"]
    for key in ("train_elbo", "val_elbo", "train_kl", "val_kl", "lr"):
        assert _scalars(events, f"epoch/{key}") == {r["epoch"]: pytest.approx(r[key], rel=1e-6) for r in history}


def test_images_are_samples_and_reconstructions_of_each_epoch(tb_run):
    events, model, val_x = tb_run["events"], tb_run["model"], tb_run["val_x"]
    samples, recon = events.Images("images/samples"), events.Images("images/reconstructions")
    assert [e.step for e in samples] == [1, 2] and [e.step for e in recon] == [1, 2]
    s = math.ceil(MIN_TILE_PX / 8)
    last = _png(samples[-1].encoded_image_string)
    assert last.shape == ((N_SAMPLES // 8 * 10 + 2) * s, (8 * 10 + 2) * s)
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):                 # the documented draws: seed's first
        torch.manual_seed(SEED)
        z = model.prior().sample((N_SAMPLES,))
        mean = model.decode(z).mean.clamp(0, 1)
        rec_mean = model.decode(model.summary(val_x)).mean.clamp(0, 1)
    for i in (0, 9, 63):                                                     # the last epoch's weights
        r, c = divmod(i, 8)
        tile = last[(2 + r * 10) * s:(2 + r * 10 + 8) * s:s, (2 + c * 10) * s:(2 + c * 10 + 8) * s:s]
        np.testing.assert_allclose(tile, np.round(mean[i, 0].numpy() * 255), atol=1)
    pair = _png(recon[-1].encoded_image_string)
    n = min(N_RECONSTRUCTIONS, val_x.shape[0])
    for c in (0, n - 1):
        top = pair[2 * s:10 * s:s, (2 + c * 10) * s:(2 + c * 10 + 8) * s:s]
        bottom = pair[12 * s:20 * s:s, (2 + c * 10) * s:(2 + c * 10 + 8) * s:s]
        np.testing.assert_allclose(top, np.round(val_x[c, 0].numpy() * 255), atol=1)     # the originals above
        np.testing.assert_allclose(bottom, np.round(rec_mean[c, 0].numpy() * 255), atol=1)


def test_hparams_carry_the_options_and_the_final_metrics(tb_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    events, history, result = tb_run["events"], tb_run["history"], tb_run["result"]
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["train.lr"].number_value == pytest.approx(2e-3) and hp["train.epochs"].number_value == 2
    assert hp["train.seed"].number_value == SEED and hp["model.latent_dim"].number_value == 2
    assert hp["train.objective"].string_value == "elbo" and hp["model.arch_args"].string_value.startswith("{")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"hparam/best_val_elbo", "hparam/final_train_elbo"}
    best = max(r["val_elbo"] for r in history)
    assert result.best_val_elbo == pytest.approx(best)
    assert _scalars(events, "hparam/best_val_elbo") == {2: pytest.approx(best, rel=1e-6)}
    assert _scalars(events, "hparam/final_train_elbo") == {2: pytest.approx(history[-1]["train_elbo"], rel=1e-6)}


def test_tensorboard_images_must_be_a_count():
    model = build_vae(VAEConfig(SHAPE, latent_dim=2, arch_args={"hidden": (4,)}))
    x = torch.rand(8, *SHAPE)
    with pytest.raises(ConfigError, match="tensorboard_images"):
        fit(model, x, x, TrainConfig(epochs=1), tensorboard_images=-1)


# --------------------------------------------------------------------------- MLflow


def _mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return MlflowClient(tracking_uri=uri)


def _expected_params(run_dir) -> dict[str, str]:
    """config.json read as a plain document: every model, train and data field, and the preprocessing."""
    doc = json.loads((run_dir / "config.json").read_text())
    text = (lambda v: v if isinstance(v, str) else json.dumps(v, sort_keys=True))  # noqa: E731
    out = {f"model.{k}": text(v) for k, v in doc["model"].items()}
    for section in ("train", "data"):
        out.update({f"{section}.{k}": text(v) for k, v in doc["extra"][section].items()})
    prep = doc["extra"]["preprocessing"]
    out.update({f"preprocessing.{k}": text(prep[k]) for k in ("kind", "levels", "binarize", "dequantize")})
    out["preprocessing.standardized"] = text(prep["mean"] is not None)
    return out


def _fake_run(run_dir, epochs: int = 3) -> list[EpochMetrics]:
    """A run directory with config.json, two epochs of metrics, an evaluation and a figure, as train writes."""
    from vaekit.data import fit_preprocessing, load_dataset
    from vaekit.store.metrics import append_metrics
    from vaekit.store.runs import DataSpec
    from vaekit.training.state import METRIC_FIELDS

    model = build_vae(VAEConfig(SHAPE, latent_dim=2, arch_args={"hidden": (8,)}))
    prep = fit_preprocessing(load_dataset("digits"), "gaussian")
    save_model(model, run_dir, extra={"preprocessing": prep.to_dict(), "data": DataSpec().to_dict(),
                                      "train": TrainConfig(epochs=epochs, lr=3e-4).to_dict()})
    rows = [EpochMetrics(e, 10 * e, 50.0 - e, -50.0 + e, 3.0 + e / 7, -47.0 + e, -51.5 + e, 3.1, -48.4, 1.0, 3e-4,
                         0.25, None if e == 1 else -49.0, 0) for e in (1, 2)]
    for row in rows:
        append_metrics(RunLayout.of(run_dir), row.to_dict(), METRIC_FIELDS)
    (run_dir / "evaluation-test.json").write_text(json.dumps({"split": "test", "n": 180, "elbo": -48.25,
                                                              "log_likelihood": -47.5, "seed": 0, "limit": None}))
    (run_dir / "figures").mkdir()
    Image.new("RGB", (4, 4)).save(run_dir / "figures" / "prior-samples.png")
    (run_dir / "report.html").write_text("<html></html>")
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One local MLflow store for the tests of this module (creating its database takes a while)."""
    _require("mlflow", "sqlalchemy", "alembic")
    return tmp_path_factory.mktemp("mlflow") / "store"


@pytest.mark.slow                                           # creating a local store's database: seconds
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_run_logs_params_metrics_and_artefacts(tmp_path, store):
    from vaekit.cli.mlflow_tracking import MlflowRun

    run_dir = tmp_path / "run"
    rows = _fake_run(run_dir)
    tracker = MlflowRun.start(str(store), RunLayout.of(run_dir), experiment="tests")
    for row in rows:
        assert tracker.log_epoch(row) is None                              # a fit callback that never stops training
    tracker.finish()

    link = json.loads((run_dir / "mlflow.json").read_text())
    assert link["tracking_uri"] == f"sqlite:///{(store / 'mlflow.db').resolve()}"
    client = _mlflow_client(link["tracking_uri"])
    run = client.get_run(link["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    assert run.data.params == _expected_params(run_dir)                  # params equal the config
    for key in ("train_elbo", "val_elbo", "train_kl", "lr", "seconds"):  # metrics equal metrics.jsonl
        history = client.get_metric_history(run.info.run_id, key)
        expected = {(r["epoch"], r[key]) for r in read_history(RunLayout.of(run_dir))}
        assert {(m.step, m.value) for m in history} == expected
    logged = {(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_log_likelihood")}
    assert logged == {(2, -49.0)}                                          # None (epoch 1) is left out
    assert run.data.metrics["test/elbo"] == -48.25 and run.data.metrics["test/log_likelihood"] == -47.5
    assert "test/seed" not in run.data.metrics and "epoch" not in run.data.metrics
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "metrics.jsonl", "report.html", "evaluation-test.json", "figures"} <= artefacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/prior-samples.png"]
    assert (store / "artifacts").is_dir()


@pytest.mark.slow                                           # creating a local store's database: seconds
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_resume_continues_the_same_run(tmp_path, store):
    from vaekit.cli.mlflow_tracking import MlflowRun

    run_dir = tmp_path / "run"
    rows = _fake_run(run_dir, epochs=3)
    first = MlflowRun.start(str(store), RunLayout.of(run_dir))
    first.log_epoch(rows[0])
    doc = json.loads((run_dir / "config.json").read_text())
    doc["extra"]["train"]["epochs"] = 5                                   # --resume --epochs 5
    (run_dir / "config.json").write_text(json.dumps(doc))
    again = MlflowRun.start(str(store), RunLayout.of(run_dir), resume=True)
    assert again.run_id == first.run_id
    again.log_epoch(rows[1])
    again.finish()
    link = json.loads((run_dir / "mlflow.json").read_text())
    run = _mlflow_client(link["tracking_uri"]).get_run(again.run_id)
    assert run.data.params["train.epochs"] == "3" and run.data.tags["vaekit.resumed.train.epochs"] == "5"
    steps = [m.step for m in again.client.get_metric_history(again.run_id, "train_elbo")]
    assert sorted(steps) == [1, 2]
    fresh = MlflowRun.start(str(store), RunLayout.of(run_dir))                 # not resuming: a new MLflow run
    assert fresh.run_id != first.run_id
    assert fresh.end(KeyboardInterrupt, KeyboardInterrupt(), None) is False     # a stop signal: KILLED, re-raised
    assert fresh.client.get_run(fresh.run_id).info.status == "KILLED"


def test_mlflow_missing_is_a_one_line_error_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from vaekit.cli import main

    monkeypatch.setitem(sys.modules, "mlflow", None)                     # import mlflow now fails
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--mlflow", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mlflow" in err and "pip install 'vaekit[mlflow]'" in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "store").exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_train_with_mlflow_end_to_end(tmp_path):
    """``vaekit train --mlflow DIR`` on digits: params equal config.json, metrics equal metrics.jsonl,
    the evaluation and the figures and report are in the run."""
    _require("mlflow", "sqlalchemy", "alembic")
    from vaekit.cli import main

    out, store = tmp_path / "run", tmp_path / "store"
    assert main(["train", "--epochs", "2", "--latent-dim", "2", "--hidden", "32", "--importance-samples", "10",
                 "--out", str(out), "--mlflow", str(store), "--mlflow-experiment", "e2e", "--no-progress"]) == 0
    link = json.loads((out / "mlflow.json").read_text())
    client = _mlflow_client(link["tracking_uri"])
    run = client.get_run(link["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params == _expected_params(out)
    history = read_history(RunLayout.of(out))
    assert [r["epoch"] for r in history] == [1, 2]
    for key in ("train_loss", "train_elbo", "train_kl", "train_reconstruction", "val_elbo", "val_kl", "lr"):
        assert {(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)} == \
            {(r["epoch"], r[key]) for r in history}
    evaluation = json.loads((out / "evaluation-test.json").read_text())
    assert run.data.metrics["test/log_likelihood"] == evaluation["log_likelihood"]
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/latent-scatter.png", "figures/reconstructions.png"} <= figures
    assert "report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}


# --------------------------------------------------------------------------- MLflow: bad locations, failures


def _free_port() -> int:
    """A port of 127.0.0.1 with nothing listening (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_env(monkeypatch):
    """The environment variables ``--mlflow`` sets, restored after the test."""
    _require("mlflow", "sqlalchemy", "alembic")
    from vaekit.cli.mlflow_tracking import _HTTP_LIMITS

    for name in (*_HTTP_LIMITS, "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.setenv(name, os.environ.get(name, _HTTP_LIMITS.get(name, "true")))


@pytest.mark.parametrize("location, says", [
    ("http://127.0.0.1:{port}/", "cannot connect to 127.0.0.1:{port} (Connection refused)"),
    ("bogus://x", "unknown tracking URI scheme 'bogus'"),
    ("sqlite:///{tmp}/missing/deeper/m.db", "the directory {tmp}/missing/deeper does not exist"),
    ("{tmp}/afile", "is a file"),
], ids=["nothing-listening", "bogus-scheme", "sqlite-missing-folder", "store-is-a-file"])
def test_bad_mlflow_location_is_one_line_before_anything_is_written(tmp_path, capsys, mlflow_env, location, says):
    from vaekit.cli import main

    port = _free_port()
    (tmp_path / "afile").write_text("not a folder")
    location, says = (v.format(port=port, tmp=tmp_path) for v in (location, says))
    started = time.monotonic()
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--mlflow", location]) == 2
    assert time.monotonic() - started < 30                                   # no minutes of retries
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"vaekit train: error: --mlflow {location}: "), err
    assert says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]          # no run directory, no store folders


class _FailingClient:
    """An MlflowClient whose server went away after the run was opened."""

    def __init__(self) -> None:
        self.calls = 0

    def log_batch(self, *args, **kwargs):
        self.calls += 1
        raise ConnectionError("HTTPConnectionPool(host='127.0.0.1'): Max retries exceeded")

    def set_terminated(self, *args, **kwargs):
        self.calls += 1
        raise ConnectionError("gone")


def test_a_tracker_failing_mid_run_is_one_warning_and_then_silent(tmp_path, capsys):
    from vaekit.cli.mlflow_tracking import MlflowRun

    client = _FailingClient()
    run = MlflowRun(client, "r1", RunLayout.of(tmp_path))
    row = EpochMetrics(1, 10, 50.0, -50.0, 3.0, -47.0, -51.5, 3.1, -48.4, 1.0, 3e-4, 0.25, None, 0)
    assert run.log_epoch(row) is None and run.failed                        # training goes on
    run.log_epoch(row)
    run.finish()
    assert run.end(RuntimeError, RuntimeError("x"), None) is False         # the run's own error is re-raised
    assert client.calls == 1                                                # nothing more was tried
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("vaekit train: warning: --mlflow: the tracker failed (ConnectionError")
    assert "training goes on without it" in err[0]


@pytest.mark.slow                                           # a real training run in a subprocess
def test_a_server_that_fails_costs_the_run_nothing(tmp_path):
    """A server that accepts connections but answers every request with HTTP 500: one warning, exit 0, the run whole."""
    _require("mlflow")
    import http.server
    import subprocess
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def _fail(self):
            self.send_response(500)
            self.end_headers()

        do_GET = do_POST = _fail

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        proc = subprocess.run([sys.executable, "-m", "vaekit", "train", "--epochs", "1", "--hidden", "8",
                               "--latent-dim", "2", "--no-progress", "--no-figures", "--importance-samples", "2",
                               "--out", str(tmp_path / "run"), "--mlflow", url], capture_output=True, text=True,
                              timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    warnings_ = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings_) == 1 and warnings_[0].startswith("vaekit train: warning: --mlflow: the tracker failed")
    assert (tmp_path / "run" / "evaluation-test.json").is_file() and (tmp_path / "run" / "model.safetensors").is_file()
