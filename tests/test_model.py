"""The model object: build, encode, decode, sample, reconstruct, plug-in modules, save/load."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from torch import nn

from vaekit import (
    ELBO,
    VAE,
    BernoulliDecoder,
    CheckpointError,
    ConfigError,
    GaussianDecoder,
    GaussianEncoder,
    LearnedVariance,
    OptimalVariance,
    ShapeError,
    VAEConfig,
    build_vae,
    elbo,
    load_model,
    save_model,
)
from vaekit.prob.distributions import DiagonalNormal
from vaekit.store.model_files import read_config


@pytest.mark.parametrize("config", [
    VAEConfig((1, 8, 8), latent_dim=3, hidden=(16, 8)),
    VAEConfig((1, 8, 8), latent_dim=3, hidden=(16,), posterior="full", activation="relu"),
    VAEConfig((7,), latent_dim=2, arch="linear", decoder_variance="learned-per-dim"),
    VAEConfig((7,), latent_dim=2, hidden=(8,), decoder_variance="optimal"),
    VAEConfig((1, 4, 4), latent_dim=2, hidden=(8,), likelihood="bernoulli"),
])
def test_model_api_shapes(config):
    model = build_vae(config)
    x = torch.rand(5, *config.data_shape)
    q = model.encode(x)
    assert q.batch_shape == (5,) and q.event_shape == (config.latent_dim,)
    out = model(x, n_samples=3)
    assert out.z.shape == (3, 5, config.latent_dim)
    assert out.likelihood.batch_shape == (3, 5) and tuple(out.likelihood.event_shape) == config.data_shape
    assert model.sample(4).shape == (4, *config.data_shape)
    assert model.reconstruct(x).shape == x.shape
    assert model.prior().event_shape == (config.latent_dim,)


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=4, hidden=(16,), decoder_variance="learned"))
    with torch.no_grad():
        model.decoder.variance.log_c.fill_(-1.3)
    save_model(model, tmp_path / "m", extra={"note": "hello"})
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(1)
    e1 = elbo(model, x)
    torch.manual_seed(1)
    torch.testing.assert_close(elbo(loaded, x), e1, rtol=0, atol=0)
    assert read_config(tmp_path / "m")[1] == {"note": "hello"}
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]   # no temp files left


def test_optimal_variance_tracks_the_mean_squared_error():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((6,), latent_dim=2, hidden=(8,), decoder_variance="optimal"))
    x = torch.randn(64, 6) * 3
    model.train()
    ELBO()(model, x)                                   # the training objective fits c* (vaekit.elbo would not)
    mse = ((model.decode(model.encode(x).rsample((1,))).mean - x) ** 2).mean()
    c = model.decoder.variance()
    assert 0.5 * mse < c < 2 * mse                     # first batch: the running estimate is c* itself
    model.eval()
    assert isinstance(model.decode(torch.zeros(1, 2)), DiagonalNormal)
    assert model.decode(torch.zeros(1, 2)).scale[0, 0].pow(2).item() == pytest.approx(c.item())


def test_pickled_file_posing_as_weights_is_refused_without_running(tmp_path):
    model = build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,)))
    save_model(model, tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path)
    assert not marker.exists()


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown keys"):
        VAEConfig.from_dict({"data_shape": [3], "latent_dims": 2})
    with pytest.raises(ConfigError, match="posterior"):
        VAEConfig((3,), posterior="banana")
    with pytest.raises(ConfigError, match="latent_dim"):
        VAEConfig((3,), latent_dim=0)
    model = build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,)))
    save_model(model, tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="newer"):
        load_model(tmp_path)


def test_weights_of_another_model_are_refused(tmp_path):
    save_model(build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,))), tmp_path / "a")
    save_model(build_vae(VAEConfig((4,), latent_dim=3, hidden=(8,))), tmp_path / "b")
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "a", weights=tmp_path / "b" / "model.safetensors")


class ConvTrunk(nn.Module):
    """A user's own network: (B, 1, 8, 8) -> (B, 32)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 32), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def test_plug_in_modules_serve_as_encoder_and_decoder():
    encoder = GaussianEncoder(ConvTrunk(), 32, 3, (1, 8, 8))
    decoder = GaussianDecoder(nn.Sequential(nn.Linear(3, 64), nn.Unflatten(-1, (1, 8, 8))), 3, (1, 8, 8),
                              LearnedVariance(()))
    model = VAE(encoder, decoder, 3, (1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    value = elbo(model, x, requires_grad=True)
    assert value.shape == (5,) and torch.isfinite(value).all()
    value.mean().backward()
    assert encoder.trunk.net[0].weight.grad is not None
    with pytest.raises(CheckpointError, match="no VAEConfig"):
        save_model(model, "unused")


def test_shape_mismatch_errors_name_both_shapes():
    bad = BernoulliDecoder(nn.Linear(3, 10), 3, (1, 4, 4))
    with pytest.raises(ShapeError, match=r"\(2, 10\).*\(2, 1, 4, 4\)"):
        bad(torch.zeros(2, 3))
    with pytest.raises(ShapeError, match="latent_dim 3"):
        bad(torch.zeros(2, 5))
    encoder = GaussianEncoder(ConvTrunk(), 32, 3, (1, 8, 8))
    with pytest.raises(ShapeError, match=r"\(2, 64\)"):
        encoder(torch.zeros(2, 64))
    with pytest.raises(ShapeError):
        GaussianDecoder(nn.Linear(3, 4), 3, (4,), LearnedVariance((5,)))
    with pytest.raises(ConfigError):
        OptimalVariance(momentum=0)
