"""The latent-model protocol: ordinary PyTorch data and modules, objectives as objects, a model of
the user's own with a learned prior, and the layering rule (training and inference see the protocol only)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal
from torch.utils.data import DataLoader, TensorDataset

import vaekit
from vaekit import (
    ELBO,
    IWAE,
    VAE,
    Decoder,
    GaussianEncoder,
    GaussianLikelihood,
    LatentModel,
    TrainConfig,
    VAEConfig,
    build_vae,
)
from vaekit.models.variance import FixedVariance

SRC = Path(vaekit.__file__).parent


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("decoder_variance", 1.0)            # a fixed c: the IWAE bound needs one (the default is optimal)
    return build_vae(VAEConfig((1, 8, 8), latent_dim=3, hidden=(16,), **kw))


def test_fit_from_a_dataloader_equals_fit_from_the_tensor():
    """vaekit.fit reads a DataLoader over a TensorDataset (labels ignored) into the same examples:
    the same training, bit for bit, as from the tensor itself and from a numpy array; the loader's own
    batch size, which differs from the config's, is warned about (the config's is the one trained on)."""
    x, v = _data(), _data(32, seed=1)
    config = TrainConfig(epochs=2, batch_size=16, seed=3)
    ref = _model()
    vaekit.fit(ref, x, v, config)
    labels = torch.arange(len(x))
    loader = DataLoader(TensorDataset(x, labels), batch_size=10, shuffle=False)
    from_loader = _model()
    with pytest.warns(UserWarning, match=r"DataLoader's batch_size=10 only reads the data; fit trains on batches "
                                         r"of TrainConfig.batch_size=16"):
        result = vaekit.fit(from_loader, loader, TensorDataset(v), config)
    from_numpy = _model()
    vaekit.fit(from_numpy, x.numpy(), v.numpy(), config)
    for key, value in ref.state_dict().items():
        assert torch.equal(value, from_loader.state_dict()[key]), key
        assert torch.equal(value, from_numpy.state_dict()[key]), key
    assert len(result.history) == 2 and math.isfinite(result.best_val_elbo)


def test_fit_refuses_data_of_another_shape_in_one_line():
    with pytest.raises(vaekit.ShapeError, match="train_x") as info:
        vaekit.fit(_model(), torch.rand(10, 64), _data(8), TrainConfig(epochs=1))
    assert "\n" not in str(info.value)


def test_objective_objects_are_what_the_trainer_runs():
    """fit(objective=IWAE(samples=3)) is the run the configuration's "iwae", samples 3, names."""
    x, v = _data(), _data(32, seed=1)
    by_name = _model()
    vaekit.fit(by_name, x, v, TrainConfig(epochs=1, batch_size=32, objective="iwae", samples=3))
    by_object = _model()
    vaekit.fit(by_object, x, v, TrainConfig(epochs=1, batch_size=32, objective="iwae", samples=3),
               objective=IWAE(samples=3))
    for key, value in by_name.state_dict().items():
        assert torch.equal(value, by_object.state_dict()[key]), key
    with pytest.raises(vaekit.ConfigError, match="objective"):
        vaekit.fit(_model(), x, v, TrainConfig(epochs=1), objective="elbo")


def test_iwae_terms_are_the_bound_and_its_parts():
    """IWAE.terms: objective = log mean_k w_k, and elbo = reconstruction - kl = mean_k log w_k, on
    the same draws (eps given); ELBO.terms with one draw equals elbo_terms."""
    model = _model()
    x = _data(5)
    eps = torch.randn(4, 5, 3, dtype=torch.float32)
    t = IWAE(samples=4).terms(model, x, eps=eps)
    log_px, log_pz, log_q = vaekit.inference.objectives.importance_terms(model, x, 4, eps=eps)
    log_w = (log_px + log_pz - log_q).double()
    torch.testing.assert_close(t.objective.double(), torch.logsumexp(log_w, 0) - math.log(4), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t.elbo.double(), log_w.mean(0), rtol=1e-5, atol=1e-5)
    e = ELBO(samples=1).terms(model, x, eps=eps[:1])
    ref = vaekit.elbo_terms(model, x, eps=eps[:1])
    torch.testing.assert_close(e.objective, ref.objective)


class ConvTrunk(nn.Module):
    """x (N, 1, 8, 8) -> (N, 32); records the shapes it was called with."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return self.net(x)


class ConvDecoder(nn.Module):
    """z (N, K) -> (N, 1, 8, 8) through a transposed convolution; records the shapes it was called with."""

    def __init__(self, k):
        super().__init__()
        self.fc = nn.Linear(k, 4 * 4 * 4)
        self.up = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, z):
        self.seen.append(tuple(z.shape))
        return self.up(self.fc(z).reshape(-1, 4, 4, 4))


def test_ordinary_conv_modules_see_flattened_leading_dimensions():
    """An encoder network sees (N, *data_shape) and a decoder network (N, latent_dim), whatever the
    number of samples: S draws of z (S, B, K) reach f as (S·B, K) and come back as (S, B, 1, 8, 8)."""
    torch.manual_seed(0)
    trunk, f = ConvTrunk(), ConvDecoder(3)
    model = VAE(GaussianEncoder(trunk, 64, 3, (1, 8, 8)), Decoder(f, 3, (1, 8, 8),
                GaussianLikelihood(FixedVariance(0.1), (1, 8, 8))), 3, (1, 8, 8))
    x = _data(6)
    value = vaekit.elbo(model, x, n_samples=5)
    assert value.shape == (6,) and torch.isfinite(value).all()
    assert trunk.seen[-1] == (6, 1, 8, 8) and f.seen[-1] == (30, 3)
    vaekit.fit(model, _data(), _data(16, 1), TrainConfig(epochs=1, batch_size=32, samples=2))
    assert all(len(s) == 2 for s in f.seen)


class LearnedPriorModel(LatentModel):
    """A model of the user's own on the protocol: p(z) = N(μ, diag σ²) with μ, σ learned."""

    def __init__(self, k=2, d=6):
        super().__init__()
        self.data_shape, self.latent_dim = (d,), k
        self.prior_loc = nn.Parameter(torch.full((k,), 0.5))
        self.prior_log_scale = nn.Parameter(torch.zeros(k))
        self.enc = nn.Linear(d, 2 * k)
        self.dec = nn.Linear(k, d)

    def prior(self):
        return Independent(Normal(self.prior_loc, self.prior_log_scale.exp()), 1)

    def encode(self, x):
        loc, log_scale = self.enc(x).chunk(2, -1)
        return Independent(Normal(loc, log_scale.clamp(-5, 5).exp()), 1)

    def decode(self, z, *, reduce=None):
        return Independent(Normal(self.dec(z), torch.ones(())), 1)


def test_a_model_of_the_users_own_trains_and_evaluates_through_the_protocol():
    """Objectives, the trainer and evaluation use only the protocol: a model with a learned prior
    trains (its prior moves), and evaluate reports an ELBO at most the importance-sampled log p(x)."""
    torch.manual_seed(0)
    model = LearnedPriorModel()
    x = torch.randn(200, 6) * 0.5 + 1.0
    before = model.prior_loc.detach().clone()
    result = vaekit.fit(model, x[:160], x[160:], TrainConfig(epochs=3, batch_size=32, lr=1e-2))
    assert not torch.equal(before, model.prior_loc.detach())
    assert model.noise_shape is None and model.closed_form() is None
    ev = vaekit.evaluate(model, x[160:], importance_samples=200)
    assert math.isfinite(result.best_val_elbo)
    assert ev.elbo <= ev.log_likelihood + 3 * ev.log_likelihood_se
    assert ev.bits_per_dim is None and ev.exact_log_likelihood is None


def test_free_bits_and_kl_per_dimension_use_the_models_prior():
    """With a prior N(μ, I), μ ≠ 0, the per-dimension KLs are those against N(μ, I) (closed form),
    not against N(0, I)."""
    model = _model()
    x = _data(4)
    q = model.encode(x)
    shift = torch.tensor([1.0, -2.0, 0.5])
    model.prior = lambda: vaekit.DiagonalNormal(shift, torch.ones(3))      # type: ignore[method-assign]
    got = vaekit.kl_per_dimension(model, x)
    want = 0.5 * (q.scale**2 + (q.loc - shift) ** 2 - 1 - (q.scale**2).log())
    torch.testing.assert_close(got, want.detach())
    terms = vaekit.elbo_terms(model, x, free_bits=1e-6)
    torch.testing.assert_close(terms.kl_penalty, got.sum(-1), rtol=1e-5, atol=1e-5)


def test_estimators_never_change_the_model_they_evaluate():
    """Estimates on a model left in training mode with the optimal c (as fit returns it) neither refit
    c on the data nor leave the mode changed, and equal the estimates in eval mode (same seed)."""
    model = _model(decoder_variance="optimal")
    vaekit.fit(model, _data(), _data(16, 1), TrainConfig(epochs=1, batch_size=32))   # a running c ≠ its start
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _data(16, seed=5)

    def estimates():
        torch.manual_seed(3)
        return (vaekit.estimate_log_likelihood(model, x, n_samples=20).log_likelihood, vaekit.elbo(model, x),
                vaekit.iwae_bound(model, x, n_samples=4), vaekit.kl_per_dimension(model, x),
                vaekit.active_units(model, [x]).variances)

    in_training = estimates()
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.eval()
    for a, b in zip(in_training, estimates(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the training objective, by contrast, fits c* to the batch in training mode (and so differs)
    model.train()
    torch.manual_seed(3)
    assert not torch.equal(ELBO()(model, x), in_training[1])


def test_sample_draws_from_the_models_prior():
    """VAE.sample draws z from prior(): with the prior replaced by a point mass far from 0 the
    samples are the decoder's mean there."""
    model = _model()
    where = torch.full((3,), 4.0)
    model.prior = lambda: vaekit.DiagonalNormal(where, torch.full((3,), 1e-12))   # type: ignore[method-assign]
    got = model.sample(2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, model.decoder_mean(where.expand(2, 3)))
    again = model.sample(2)
    torch.testing.assert_close(again, got)


_CONCRETE = {"DiagonalNormal", "ProfiledNormal", "MultivariateNormal", "Normal", "Bernoulli", "Independent",
             "GaussianEncoder", "Decoder", "GaussianDecoder", "BernoulliDecoder", "MLP", "Affine", "Flatten",
             "GaussianLikelihood", "BernoulliLikelihood", "OptimalVariance", "LearnedVariance", "FixedVariance",
             "LinearGaussian", "VAE"}


@pytest.mark.parametrize("package", ["training", "inference"])
def test_training_and_inference_import_no_concrete_model_part(package):
    """The layering rule: no module of vaekit.training or vaekit.inference imports a concrete
    distribution, encoder, decoder, network or likelihood class, nor anything of vaekit.models
    but the protocol, nor calls isinstance/hasattr on a model part."""
    for path in sorted((SRC / package).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = {a.name for a in node.names}
                assert not names & _CONCRETE, (path.name, node.module, names & _CONCRETE)
                if node.module and node.module.startswith("vaekit.models"):
                    assert node.module == "vaekit.models.protocol", (path.name, node.module)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance",
                                                                                                  "hasattr"):
                target = ast.unparse(node.args[0])
                assert "model" not in target and "decoder" not in target and "encoder" not in target, \
                    (path.name, ast.unparse(node))


def test_numpy_inputs_to_evaluate():
    model = _model()
    x = np.random.default_rng(0).random((8, 1, 8, 8)).astype(np.float32)
    ev = vaekit.evaluate(model, x, importance_samples=10)
    assert ev.n == 8 and math.isfinite(ev.log_likelihood)


def test_the_iwae_objective_refuses_the_optimal_decoder_variance(tmp_path):
    """c* = MSE maximises the ELBO, not L_K: training the IWAE bound with it is refused in one line, before
    the run directory is created and with the model's state unchanged; evaluating L_K of such a model (eval
    mode: the running c) is fine."""
    model = _model(decoder_variance="optimal")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(vaekit.ConfigError, match="objective iwae: the model's decoder variance is optimal") as info:
        vaekit.fit(model, _data(), _data(16, 1), TrainConfig(epochs=1), objective=vaekit.IWAE(samples=3),
                   run_dir=tmp_path / "run")
    assert "\n" not in str(info.value) and "decoder_variance='learned'" in str(info.value)
    assert not (tmp_path / "run").exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.isfinite(vaekit.iwae_bound(model, _data(4), n_samples=3)).all()
    vaekit.fit(_model(decoder_variance="learned"), _data(), _data(16, 1),
               TrainConfig(epochs=1, objective="iwae", samples=3))


def test_the_command_line_trains_iwae_with_a_learned_c_by_default(tmp_path):
    """`vaekit train --objective iwae` on a Gaussian decoder takes a learned c (the optimal c is the ELBO's
    maximiser); asking for the optimal c with iwae exits 2 in one line before anything is written."""
    import json
    import subprocess
    import sys

    base = [sys.executable, "-m", "vaekit", "train", "--objective", "iwae", "--samples", "2", "--epochs", "1",
            "--hidden", "8", "--latent-dim", "2", "--no-figures", "--no-progress", "--importance-samples", "5"]
    ok = subprocess.run([*base, "--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "a" / "config.json").read_text())["model"]["decoder_variance"] == "learned"
    bad = subprocess.run([*base, "--decoder-variance", "optimal", "--out", str(tmp_path / "b")], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "--decoder-variance optimal" in bad.stderr and not (tmp_path / "b").exists()
