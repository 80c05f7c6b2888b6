"""The conditional VAE (vaekit.models.conditional): q(z|x, y), p(x|z, y), p(z).

The networks against a hand computation of [t(x), e_y] and f([z, e_y]), the ELBO's terms against their
closed forms, the label actually mattering (an ELBO classifier after a short fit), the labels travelling
with their examples through the batch gather, configuration and files, reproducible class samples, the
Python API (fit, evaluate, sample) and the one-line refusals of the command line. Slow: real runs of
``vaekit train --conditional`` on digits and on a folder of class sub-folders, and two ranks against one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaekit
from vaekit import VAEConfig, build_vae
from vaekit.cli import main
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.errors import ConfigError, DataError, ShapeError
from vaekit.inference.estimators import active_units, estimate_log_likelihood
from vaekit.inference.evaluate import evaluate
from vaekit.inference.objectives import elbo_terms
from vaekit.models.conditional import ConditionalVAE, LabelledModel, with_labels
from vaekit.models.conditioning import check_labels, label_index
from vaekit.store.model_files import load_model, save_model
from vaekit.store.runs import DataSpec, align_labels
from vaekit.training import TrainConfig, fit
from vaekit.training.batches import BatchPlan

_IDENTITY = {"kind": "tabular", "mean": None, "std": None, "levels": None, "binarize": False, "dequantize": False}


def _model(num_classes: int = 3, seed: int = 0, **kw) -> ConditionalVAE:
    torch.manual_seed(seed)
    kw.setdefault("hidden", (8,))
    model = build_vae(VAEConfig((5,), latent_dim=2, num_classes=num_classes, **kw)).double()
    assert isinstance(model, ConditionalVAE)
    return model


def _x(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- the model: networks, shapes, formulas -----------------------------------------------------------------------

def test_encoder_and_decoder_see_the_one_hot_label_as_the_formulas_say():
    model = _model(decoder_variance=0.5)
    x, y = _x(4), torch.tensor([0, 2, 1, 2])
    e = torch.nn.functional.one_hot(y, 3).double()
    enc = model.encoder.encoder
    hidden = torch.cat([enc.trunk(x), e], -1)                          # [t(x), e_y]
    q = model.encode(x, y)
    torch.testing.assert_close(q.mean, enc.mean(hidden))
    z = torch.randn(7, 4, 2, dtype=torch.float64)                      # (S, B, K)
    f = model.decoder.f(torch.cat([z, e.expand(7, 4, 3)], -1).reshape(-1, 5)).reshape(7, 4, 5)   # f([z, e_y])
    torch.testing.assert_close(model.decode(z, y).mean, f)
    expected = (-0.5 * ((x - f) ** 2 / 0.5 + math.log(2 * math.pi * 0.5))).sum(-1)
    torch.testing.assert_close(model.log_px(x, z, y), expected)        # log N(x; f([z, e_y]), cI), (S, B)


def test_the_label_changes_the_decoder_and_the_encoder():
    model = _model()
    z, x = torch.randn(4, 2, dtype=torch.float64), _x(4)
    means = [model.decode(z, c).mean for c in range(3)]
    posteriors = [model.encode(x, c).mean for c in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert (means[a] - means[b]).abs().max() > 1e-3
            assert (posteriors[a] - posteriors[b]).abs().max() > 1e-3


def test_elbo_terms_given_labels_are_the_closed_forms():
    model = _model(decoder_variance=0.3)
    x, y = _x(5), torch.tensor([1, 0, 2, 2, 1])
    eps = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = elbo_terms(model, x, y=y, n_samples=3, eps=eps)
    q = model.encode(x, y)
    mu, var = q.mean, q.variance
    kl = 0.5 * (mu**2 + var - 1 - var.log()).sum(-1)                   # KL(q(z|x,y) || N(0, I))
    z = mu + var.sqrt() * eps
    f = model.decode(z, y).mean
    rec = (-0.5 * ((x - f) ** 2 / 0.3 + math.log(2 * math.pi * 0.3))).sum(-1).mean(0)
    torch.testing.assert_close(t.kl, kl)
    torch.testing.assert_close(t.reconstruction, rec)
    torch.testing.assert_close(t.elbo, rec - kl)
    viewed = elbo_terms(model.given(y), x, n_samples=3, eps=eps)       # the view is the same model
    torch.testing.assert_close(viewed.elbo, t.elbo)


def test_shapes_of_sample_and_class_grid_and_views():
    model = _model(decoder_variance=1.0)
    assert model.sample(4, 2).shape == (4, 5) and model.sample(3, [0, 1, 2]).shape == (3, 5)
    grid = model.sample_classes(2, generator=torch.Generator().manual_seed(0))
    assert grid.shape == (2, 3, 5)
    assert not torch.allclose(grid[:, 0], grid[:, 1])                  # one z per row, a class per column
    view = model.given(torch.tensor([0, 1]))
    assert isinstance(view, LabelledModel) and isinstance(view, vaekit.LatentModel) and view.num_classes == 0
    assert view.encode(_x(2)).batch_shape == (2,) and view.noise_shape == (2,)
    with pytest.raises(ShapeError, match="labels y of shape"):
        view.encode(_x(3))
    est = estimate_log_likelihood(model, _x(2), n_samples=20, y=torch.tensor([0, 1]))
    assert est.log_likelihood.shape == (2,) and torch.isfinite(est.log_likelihood).all()


def test_sample_with_a_generator_is_reproducible_and_takes_class_names():
    model = _model(class_names=("cat", "dog", "eel"), decoder_variance=1.0)
    a = model.sample(6, "dog", generator=torch.Generator().manual_seed(3))
    b = model.sample(6, 1, generator=torch.Generator().manual_seed(3))
    c = model.sample(6, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-3
    assert label_index("eel", 3, ("cat", "dog", "eel")) == 2 and label_index("1", 3) == 1
    with pytest.raises(ConfigError, match="no class 'fox'.*cat, dog, eel"):
        model.sample(2, "fox")
    with pytest.raises(ConfigError, match="label 3 is outside"):
        model.sample(2, [0, 3])


def test_missing_and_superfluous_labels_are_one_line_errors():
    model, plain = _model(), build_vae(VAEConfig((5,), latent_dim=2, hidden=(8,))).double()
    with pytest.raises(ConfigError, match="conditional on 3 classes"):
        elbo_terms(model, _x(2))
    with pytest.raises(ConfigError, match="not conditional"):
        elbo_terms(plain, _x(2), y=torch.tensor([0, 1]))
    assert with_labels(plain, None) is plain
    with pytest.raises(ConfigError, match="expected integer class labels"):
        check_labels(torch.tensor([0.5, 1.0]), 3)
    with pytest.raises(ShapeError, match=r"expected \(2,\)"):
        check_labels([0, 1, 2], 3, n=2)


# ---- configuration and files -----------------------------------------------------------------------------------

def test_config_round_trip_and_refusals(tmp_path):
    config = VAEConfig((1, 4, 4), latent_dim=2, hidden=(8,), num_classes=3, class_names=["a", "b", "c"])
    d = config.to_dict()
    assert d["num_classes"] == 3 and d["class_names"] == ["a", "b", "c"]
    assert VAEConfig.from_dict(json.loads(json.dumps(d))) == config
    assert "num_classes" not in VAEConfig((1, 4, 4)).to_dict()       # an unconditional config reads as before
    for kw, match in [({"num_classes": -1}, "num_classes"), ({"num_classes": True}, "num_classes"),
                      ({"num_classes": 2, "class_names": ["a"]}, "class_names: 1 names"),
                      ({"num_classes": 2, "class_names": ["a", "a"]}, "must differ"),
                      ({"class_names": ["a"]}, "class_names"),
                      ({"num_classes": 2, "prior": "vamp"}, "^prior: the vamp prior")]:
        with pytest.raises(ConfigError, match=match):
            VAEConfig((1, 4, 4), latent_dim=2, **kw)
    model = build_vae(config)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, ConditionalVAE) and loaded.class_names == ("a", "b", "c")
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(loaded.reconstruct(x, "b"), model.reconstruct(x, 1))


@pytest.mark.parametrize(("arch", "posterior", "prior"), [("linear", "full", "standard"), ("mlp", "iaf", "mixture"),
                                                          ("conv", "diagonal", "standard")])
def test_every_family_conditions(arch, posterior, prior):
    kw = {} if arch != "mlp" else {"hidden": (8,)}
    args = {"width": 4, "stages": 1} if arch == "conv" else None
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 4, 4), latent_dim=2, arch=arch, arch_args=args, posterior=posterior, prior=prior,
                                decoder_variance=1.0, num_classes=2, **kw))
    x = torch.rand(3, 1, 4, 4)
    t = elbo_terms(model, x, y=torch.tensor([0, 1, 1]), analytic_kl=posterior != "iaf")
    assert t.elbo.shape == (3,) and torch.isfinite(t.elbo).all()
    assert model.closed_form() is None


def test_a_user_architecture_conditions(tmp_path):
    """A user's builder is called with latent_dim + C: its f takes [z, e_y]; its trunk is unchanged."""
    (tmp_path / "nets.py").write_text("from torch import nn\n\ndef build(data_shape, latent_dim):\n"
                                      "    trunk = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))\n"
                                      "    return trunk, nn.Linear(latent_dim, 16)\n")
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 4, 4), latent_dim=2, arch=f"{tmp_path / 'nets.py'}:build", decoder_variance=1.0,
                                num_classes=3), trust_code=True)
    assert model.decoder.f.in_features == 5 and model.encoder.encoder.mean.in_features == 6 + 3
    assert torch.isfinite(elbo_terms(model, torch.rand(2, 1, 4, 4), y=[2, 0]).elbo).all()


# ---- data ----------------------------------------------------------------------------------------------------------

def test_labels_come_from_class_folders_idx_npz_and_csv(tmp_path):
    from PIL import Image

    from vaekit.data.idx import write_idx

    for c, name in enumerate(("b_dog", "a_cat")):                       # sorted: a_cat is class 0
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3 + c):
            Image.fromarray(np.full((4, 4), 40 * i + c, np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    ds = load_dataset(tmp_path / "imgs", val_fraction=0, test_fraction=0)
    x, y = ds.every_example()
    assert ds.classes == ("a_cat", "b_dog") and x.shape == (7, 1, 4, 4) and list(y) == [0] * 4 + [1] * 3
    (tmp_path / "imgs" / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no image files"):
        load_dataset(tmp_path / "imgs")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 1, 4, 1, 5], np.uint8))
    assert list(load_dataset(tmp_path / "train-images-idx3-ubyte", val_fraction=0, test_fraction=0)
                .every_example()[1]) == [3, 1, 4, 1, 5]
    np.savez(tmp_path / "d.npz", x=np.random.rand(4, 3), y=np.array([0, 1, 1, 0]))
    assert list(load_dataset(tmp_path / "d.npz", val_fraction=0, test_fraction=0).train_labels) == [0, 1, 1, 0]
    (tmp_path / "t.csv").write_text("a,cls,b\n1,2,3\n4,0,6\n")
    spec = DataSpec(spec=str(tmp_path / "t.csv"), val_fraction=0, test_fraction=0, label_column="cls")
    ds = spec.load()
    assert ds.train.shape == (2, 2) and list(ds.train_labels) == [2, 0]
    assert DataSpec.from_dict(spec.to_dict()) == spec and "label_column" not in DataSpec().to_dict()
    remapped = align_labels(np.array([0, 1, 1]), ("dog", "cat"), ("cat", "dog", "eel"), "--data x")
    assert list(remapped) == [1, 0, 0]
    with pytest.raises(DataError, match=r"--data x: classes \['fox'\]"):
        align_labels(np.array([0]), ("fox",), ("cat",), "--data x")


# ---- the trainer: labels stay with their examples ------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2])
def test_batch_gather_keeps_each_label_with_its_example(world):
    n, classes = 37, 5
    x = torch.arange(n, dtype=torch.float64)[:, None].expand(n, 3).clone()     # example i holds the value i
    y = (torch.arange(n) * 7) % classes                                        # label of example i
    pp = vaekit.data.Preprocessing.from_dict(_IDENTITY)
    seen = []
    for rank in range(world):
        plan = BatchPlan(x, pp, 8, torch.device("cpu"), rank=rank, world=world, labels=y)
        plan.start_epoch(torch.Generator().manual_seed(2))
        for step in range(plan.steps_per_epoch):
            b = plan.batch(step, torch.Generator().manual_seed(step))
            index = b.x[:, 0].long()
            assert torch.equal(b.y, (index * 7) % classes)
            if b.weight:
                seen += index.tolist()
    assert sorted(seen) == list(range(n))                                      # every example once, shuffled


def test_fit_hands_every_step_the_labels_of_its_examples(monkeypatch):
    import vaekit.training.step as step_mod

    model = _model(num_classes=4, decoder_variance=1.0)
    x = torch.arange(40, dtype=torch.float64)[:, None].expand(40, 5) / 40
    labels = torch.arange(40) % 4
    real, calls = step_mod.batch_loss, []

    def checking(model, objective, xb, *args, y=None, **kwargs):
        calls.append(torch.equal(y, (xb[:, 0] * 40).round().long() % 4))
        return real(model, objective, xb, *args, y=y, **kwargs)

    monkeypatch.setattr(step_mod, "batch_loss", checking)
    fit(model, x, x[:8], TrainConfig(epochs=2, batch_size=16, seed=0), train_y=labels, val_y=labels[:8])
    assert len(calls) == 6 and all(calls)


def test_fit_and_evaluate_refuse_missing_or_bad_labels():
    model, x = _model(), _x(8)
    config = TrainConfig(epochs=1, batch_size=4)
    with pytest.raises(ConfigError, match="^val_y: the model is conditional"):
        fit(model, x, x, config, train_y=torch.zeros(8, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"^train_y: labels of shape \(7,\)"):
        fit(model, x, x, config, train_y=torch.zeros(7, dtype=torch.long), val_y=torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match="^train_y: label 3 is outside"):
        fit(model, x, x, config, train_y=torch.full((8,), 3), val_y=torch.zeros(8, dtype=torch.long))
    plain = build_vae(VAEConfig((5,), latent_dim=2, hidden=(8,))).double()
    with pytest.raises(ConfigError, match="^train_y: the model is not conditional"):
        fit(plain, x, x, config, train_y=torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match="conditional on 3 classes"):
        evaluate(model, x, importance_samples=2)
    with pytest.raises(ConfigError, match="not conditional"):
        evaluate(plain, x, importance_samples=2, y=np.zeros(8, dtype=np.int64))


def test_short_fit_on_digits_true_label_has_the_highest_elbo():
    """After a short fit the label matters: classifying test digits by argmax_y ELBO(x|y) beats chance (10%)."""
    dataset = load_dataset("digits")
    pp = fit_preprocessing(dataset, "gaussian")
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(64,), num_classes=10))
    result = fit(model, pp.prepare(dataset.train), pp.prepare(dataset.val), TrainConfig(epochs=12, batch_size=64,
                 lr=3e-3, seed=0), train_y=dataset.train_labels, val_y=dataset.val_labels)
    test = pp.prepare(dataset.test)
    truth = torch.as_tensor(dataset.test_labels)
    torch.manual_seed(1)
    model.eval()
    with torch.no_grad():
        scores = torch.stack([elbo_terms(model, test, y=c, n_samples=4).elbo for c in range(10)], 1)   # (N, 10)
    accuracy = float((scores.argmax(1) == truth).double().mean())
    true_elbo = scores.gather(1, truth[:, None]).mean()
    assert accuracy > 0.5, accuracy
    assert true_elbo > scores.mean() + 1.0                               # nats: the true label explains x better
    ev = evaluate(model, test, y=dataset.test_labels, importance_samples=20)
    assert math.isfinite(ev.log_likelihood) and ev.log_likelihood > ev.elbo - 0.5
    assert result.history[-1].val_elbo > result.history[0].val_elbo
    units = active_units(model, [(test, truth)])
    assert units.count == 2


# ---- the command line: refusals before any training ----------------------------------------------------------------

def _save_run(path: Path, model) -> Path:
    extra = {"preprocessing": _IDENTITY, "data": DataSpec(spec="x.npy").to_dict(), "train": {}}
    save_model(model, path, extra=extra)
    return path


@pytest.mark.parametrize(("argv", "message"), [
    (["--data", "{npy}", "--conditional"], "--conditional: --data .* has no labels"),
    (["--conditional", "--prior", "vamp"], "--prior: the vamp prior"),
    (["--data", "{npy}", "--label-column", "3"], "--label-column: applies to a .csv"),
    (["--data", "{npy}", "--conditional", "--stream"], "--conditional: a --stream"),
])
def test_train_refusals_exit_2_with_one_line(tmp_path, capsys, argv, message):
    np.save(tmp_path / "x.npy", np.random.rand(20, 3).astype(np.float32))
    argv = [a.replace("{npy}", str(tmp_path / "x.npy")) for a in argv]
    code = main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists()


def test_resume_cannot_add_conditional(tmp_path, capsys):
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_model(build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(8,))), run,
               extra={"preprocessing": _IDENTITY, "data": DataSpec().to_dict(), "train": TrainConfig().to_dict()})
    assert main(["train", "--out", str(run), "--resume", "--conditional"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--conditional: the run in " + str(run) + " was trained without --conditional; that cannot "
                        "change on --resume"), err


def test_sample_label_options(tmp_path, capsys):
    torch.manual_seed(0)
    conditional = _save_run(tmp_path / "c", build_vae(VAEConfig((5,), latent_dim=2, hidden=(8,), num_classes=3,
                                                                class_names=("cat", "dog", "eel"))))
    plain = _save_run(tmp_path / "p", build_vae(VAEConfig((5,), latent_dim=2, hidden=(8,))))
    out = tmp_path / "s.npy"
    assert main(["sample", str(conditional), "--label", "dog", "--n", "4", "--out", str(out)]) == 0
    by_name = np.load(out)
    assert main(["sample", str(conditional), "--label", "1", "--n", "4", "--out", str(out), "--force"]) == 0
    np.testing.assert_array_equal(np.load(out), by_name)
    assert main(["sample", str(conditional), "--n", "7", "--out", str(out), "--force"]) == 0   # the classes in turn
    assert np.load(out).shape == (7, 5)
    capsys.readouterr()
    for run, label, message in [(conditional, "11", "--label: no class 11; the model's 3 classes are cat, dog, eel"),
                                (conditional, "fox", "--label: no class 'fox'"),
                                (plain, "3", "--label: the model is not conditional")]:
        assert main(["sample", str(run), "--label", label, "--out", str(tmp_path / "t.npy")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


# ---- slow: real runs -----------------------------------------------------------------------------------------------

def _vaekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False, cwd=cwd)


@pytest.mark.slow
def test_cli_train_digits_conditional_then_evaluate_sample_figures(tmp_path):
    run = tmp_path / "run"
    proc = _vaekit("train", "--data", "digits", "--conditional", "--latent-dim", "2", "--hidden", "32",
                   "--epochs", "2", "--importance-samples", "20", "--no-progress", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["model"]["num_classes"] == 10
    ev = _vaekit("evaluate", str(run), "--importance-samples", "50", "--limit", "60", "--json")
    assert ev.returncode == 0, ev.stderr
    doc = json.loads(ev.stdout)
    assert doc["given_labels"] is True and math.isfinite(doc["log_likelihood"]) and doc["n"] == 60
    arrays = []
    for _ in range(2):
        sample = _vaekit("sample", str(run), "--label", "3", "--n", "9", "--seed", "4", "--out",
                         str(tmp_path / "x.npy"), "--force")
        assert sample.returncode == 0, sample.stderr
        arrays.append(np.load(tmp_path / "x.npy"))
    assert arrays[0].shape == (9, 1, 8, 8) and np.isfinite(arrays[0]).all()
    np.testing.assert_array_equal(arrays[0], arrays[1])
    assert {"prior-samples.png", "reconstructions.png", "latent-traversals.png"} <= \
        {p.name for p in (run / "figures").glob("*.png")}
    for command in (["reconstruct", "--out", "r.npy"], ["encode", "--out", "e.npy"],
                    ["interpolate", "--out", "i.npy"], ["figures", "--label", "7"]):
        done = _vaekit(command[0], str(run), *command[1:], cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
    resumed = _vaekit("train", "--out", str(run), "--resume", "--epochs", "3", "--no-figures", "--no-progress",
                      "--importance-samples", "5")
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.slow
def test_cli_trains_on_a_folder_of_class_folders(tmp_path):
    from PIL import Image

    dataset = load_dataset("digits", val_fraction=0, test_fraction=0)
    for c, name in enumerate(("zero", "one", "two")):
        folder = tmp_path / "imgs" / name
        folder.mkdir(parents=True)
        for i in np.flatnonzero(dataset.train_labels == c)[:30]:
            Image.fromarray((dataset.train[i, 0] * 15).astype(np.uint8)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    proc = _vaekit("train", "--data", str(tmp_path / "imgs"), "--conditional", "--latent-dim", "2", "--hidden", "16",
                   "--epochs", "2", "--importance-samples", "5", "--no-progress", "--no-figures", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["num_classes"] == 3 and model["class_names"] == ["one", "two", "zero"]
    sample = _vaekit("sample", str(run), "--label", "two", "--n", "4", "--out", str(tmp_path / "s.npy"))
    assert sample.returncode == 0, sample.stderr
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8)
    (tmp_path / "other" / "two").mkdir(parents=True)                     # one class: matched to the run's by name
    for png in sorted((tmp_path / "imgs" / "two").glob("*.png"))[:5]:
        (tmp_path / "other" / "two" / png.name).write_bytes(png.read_bytes())
    ev = _vaekit("evaluate", str(run), "--data", str(tmp_path / "other"), "--split", "all",
                 "--importance-samples", "5", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["n"] == 5


@pytest.mark.slow
def test_two_ranks_equal_one_process_for_a_conditional_model(tmp_path):
    """tests/test_distributed.py's claim with labels: the batch gather hands each rank its examples' labels,
    so a step on 2 ranks (the last batch of 1: rank 1 stands in) is the step of one process (float64)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import conditional_ddp_worker
    from test_distributed import _env

    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node=2",
                           str(Path(__file__).with_name("conditional_ddp_worker.py")), str(tmp_path), "33", "32",
                           "2"], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model, train_x, val_x, train_y, val_y, config, pp = conditional_ddp_worker.setup(33, 32, 2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, train_x, val_x, config, preprocessing=pp, train_y=train_y, val_y=val_y)
    ddp = load_file(str(tmp_path / "params.safetensors"))
    assert max(float((model.state_dict()[k] - initial[k]).abs().max()) for k in initial) > 1e-3
    for k, value in model.state_dict().items():
        torch.testing.assert_close(ddp[k], value, rtol=1e-10, atol=1e-12, msg=k)
    history = json.loads((tmp_path / "rank0.json").read_text())["val_elbo"]
    assert history == pytest.approx([m.val_elbo for m in result.history], abs=1e-9)
