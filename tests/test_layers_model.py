"""Several stochastic layers (``layers`` > 1): the configuration, the model protocol it fills (ancestral
sampling, the ε route of common random numbers, log-densities as sums of conditionals), training signals
and save/load. The exactness against closed forms is tests/test_two_layer.py."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit import ConfigError, ShapeError, VAEConfig, build_vae, load_model, save_model
from vaekit.errors import CheckpointError
from vaekit.inference.objectives import ELBO, IWAE
from vaekit.inference.training_objectives import make_objective
from vaekit.models.stacked import StackedVAE
from vaekit.prob.chain import MarkovChain
from vaekit.prob.distributions import noise_shape, rsample_with_log_prob, standard_normal
from vaekit.store.model_files import _shapes_of, check_shapes
from vaekit.store.weights import read_header, read_weights_bytes

SHAPE = (1, 4, 4)


def _model(layers: int = 3, seed: int = 0, **kw) -> StackedVAE:
    torch.manual_seed(seed)
    kw = {"hidden": (12, 10), **kw}
    model = build_vae(VAEConfig(SHAPE, latent_dim=4, layers=layers, decoder_variance=0.3, **kw))
    assert isinstance(model, StackedVAE)
    return model


def test_the_paper_model_from_three_options():
    """--hidden 200,200 --latent-dim 100 --layers 2: 784-200-200-100 and 100-100-50, tanh (Burda et al. 2016)."""
    config = VAEConfig((784,), latent_dim=100, hidden=(200, 200), layers=2, likelihood="bernoulli")
    assert config.layer_args == {"latent_dims": [50], "hidden": [[100, 100]], "activation": "tanh"}
    with torch.device("meta"):
        model = build_vae(config)
    assert model.latent_dim == 150 and model.dims == (100, 50) and model.noise_shape == (150,)
    linears = {name: tuple(m.weight.shape) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert [linears[k] for k in ("encoder.trunk.layers.0", "encoder.trunk.layers.2", "encoder.mean")] == \
        [(200, 784), (200, 200), (100, 200)]
    assert [linears[k] for k in ("up.0.trunk.layers.0", "up.0.trunk.layers.2", "up.0.mean", "up.0.log_var")] == \
        [(100, 100), (100, 100), (50, 100), (50, 100)]
    assert [linears[k] for k in ("prior_module.layers.0.trunk.layers.0", "prior_module.layers.0.mean")] == \
        [(100, 50), (100, 100)]
    assert [linears[k] for k in ("decoder.f.layers.0", "decoder.f.layers.4")] == [(200, 100), (784, 200)]
    assert all(isinstance(m, torch.nn.Tanh) for name, m in model.named_modules() if "layers.1" in name)
    # weights + biases: x-z1 (2 trunk + 2 heads), z1-z2 (2 trunk + 2 heads), z2-z1 (2 + 2), z1-x (3)
    expected = (784 * 200 + 200 * 200 + 2 * 200 * 100 + 2 * 200 + 2 * 100
                + 100 * 100 + 100 * 100 + 2 * 100 * 50 + 2 * 100 + 2 * 50
                + 50 * 100 + 100 * 100 + 2 * 100 * 100 + 2 * 100 + 2 * 100
                + 100 * 200 + 200 * 200 + 200 * 784 + 2 * 200 + 784)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("kw", [{"hidden": (12, 10), "layers": 3},
                                {"arch": "linear", "layers": 2, "layer_args": {"latent_dims": [7]}},
                                {"hidden": (8,), "layers": 2, "layer_args": {"latent_dims": [3], "hidden": [[5, 6]],
                                                                             "activation": "relu"}}])
def test_config_round_trip_and_defaults(kw):
    config = VAEConfig(SHAPE, latent_dim=4, **kw)
    assert VAEConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["layer_args"] == config.layer_args
    if kw.get("layers") == 3:
        assert config.layer_args == {"latent_dims": [2, 1], "hidden": [[6, 5], [3, 2]], "activation": "tanh"}


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"layer_args": {"latent_dims": [0]}}, "layer_args.latent_dims: every size"),
    ({"layer_args": {"latent_dims": [-3]}}, "layer_args.latent_dims: every size"),
    ({"layer_args": {"latent_dims": [3, 2]}}, "layer_args.latent_dims: 2 layers need 1 sizes"),
    ({"layer_args": {"latent_dims": "3"}}, "layer_args.latent_dims: expected"),
    ({"layer_args": {"hidden": [[0]]}}, "layer_args.hidden[0]: every size"),
    ({"layer_args": {"hidden": [[]]}}, "layer_args.hidden: every upper layer needs"),
    ({"layer_args": {"hidden": [8, 8]}}, "layer_args.hidden: 2 layers need 1 lists"),
    ({"layer_args": {"activation": "sigmoid"}}, "layer_args.activation: unknown 'sigmoid'"),
    ({"layer_args": {"width": 3}}, "layer_args: unknown ['width']"),
    ({"layer_args": [50]}, "layer_args: expected a JSON object"),
    ({"arch": "linear", "hidden": None, "layer_args": {"hidden": [[4]]}}, "layer_args: unknown ['hidden'] for linear"),
    ({"inference": "sideways"}, "inference: unknown 'sideways'"),
    ({"inference": "top-down", "layers": 1}, "inference: top-down needs layers > 1"),
    ({"inference": "top-down", "posterior": "full"}, "inference: top-down merges diagonal Gaussians"),
    ({"prior": "vamp", "posterior": "iaf"}, "prior: vamp on several layers encodes its pseudo-inputs"),
    ({"layers": 1, "layer_args": {"latent_dims": [2]}}, "layer_args: apply to layers > 1 only"),
    ({"layers": 9}, "layers: must be an integer from 1 to 8"),
])
def test_bad_layer_arguments_are_one_line_config_errors(kw, fragment):
    args = {"latent_dim": 4, "hidden": (8,), "layers": 2, **kw}
    if args["hidden"] is None:
        del args["hidden"]
    with pytest.raises(ConfigError) as info:
        VAEConfig(SHAPE, **args)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_a_user_architecture_builds_z1_and_names_the_upper_widths(tmp_path):
    nets = tmp_path / "nets.py"
    nets.write_text("from torch import nn\n\ndef build(data_shape, latent_dim):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Tanh()), nn.Linear(latent_dim, 16)\n")
    with pytest.raises(ConfigError, match=r"^layer_args.hidden: a user architecture builds the networks of z_1 only"):
        VAEConfig(SHAPE, latent_dim=4, arch=f"{nets}:build", layers=2)
    config = VAEConfig(SHAPE, latent_dim=4, arch=f"{nets}:build", layers=2, layer_args={"hidden": [[5]]})
    assert config.layer_args == {"latent_dims": [2], "hidden": [[5]], "activation": "tanh"}
    model = build_vae(config, trust_code=True)
    x = torch.rand(3, *SHAPE)
    assert model.encode(x).rsample((2,)).shape == (2, 3, 6)


def test_ancestral_log_q_and_log_p_are_sums_of_the_conditionals():
    model = _model(layers=3)
    x = torch.rand(5, *SHAPE)
    q = model.encode(x)
    z, log_q = rsample_with_log_prob(q, 4)                                        # (4, 5, 7), (4, 5)
    z1, z2, z3 = torch.split(z, model.dims, -1)
    by_hand = model.encoder(x).log_prob(z1) + model.up[0](z1).log_prob(z2) + model.up[1](z2).log_prob(z3)
    torch.testing.assert_close(log_q, by_hand)
    torch.testing.assert_close(q.log_prob(z), by_hand)
    down = model.prior_module.layers
    prior = standard_normal(1).log_prob(z3) + down[1](z3).log_prob(z2) + down[0](z2).log_prob(z1)
    torch.testing.assert_close(model.log_pz(z), prior)
    eps = torch.randn(3, 7)
    z_p, log_p = rsample_with_log_prob(model.prior(), 3, eps)                  # drawn downwards, ε in z's order
    torch.testing.assert_close(log_p, model.log_pz(z_p))
    assert torch.equal(z_p[:, 6:], eps[:, 6:])                                   # z_3 ~ N(0, I): its own ε
    step = down[1](z_p[:, 6:])
    torch.testing.assert_close(z_p[:, 4:6], step.loc + step.scale * eps[:, 4:6])
    # z_2 given z_1 is drawn from q(z_2|z_1): the block means follow the drawn z_1, not its mean
    assert not torch.allclose(z2, model.up[0](model.encoder(x).mean).mean.expand_as(z2))


def test_the_eps_route_equals_the_default_route_and_lays_out_one_block_per_layer():
    model = _model(layers=3)
    x = torch.rand(5, *SHAPE)
    q = model.encode(x)
    assert model.noise_shape == noise_shape(q) == (7,)
    torch.manual_seed(3)
    z_default, log_default = rsample_with_log_prob(q, 6)
    torch.manual_seed(3)
    eps = torch.randn(6, 5, 7)
    z_eps, log_eps = rsample_with_log_prob(q, 6, eps)
    assert torch.equal(z_default, z_eps) and torch.equal(log_default, log_eps)
    first = model.encoder(x)
    torch.testing.assert_close(z_eps[..., :4], first.loc + first.scale * eps[..., :4])
    step = model.up[0](z_eps[..., :4])
    torch.testing.assert_close(z_eps[..., 4:6], step.loc + step.scale * eps[..., 4:6])
    with pytest.raises(ShapeError, match="eps: has shape"):
        rsample_with_log_prob(q, 6, eps[..., :6])


def test_decode_reads_z1_sample_and_summary():
    model = _model(layers=2)
    x = torch.rand(3, *SHAPE)
    z = torch.randn(2, 3, 6)
    moved = z.clone()
    moved[..., 4:] += 5.0                                                         # z_2 only
    assert torch.equal(model.decode(z).mean, model.decode(moved).mean)
    with pytest.raises(ShapeError, match="latent_dim 6"):
        model.decode(z[..., :4])
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    b = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, *SHAPE) and torch.equal(a, b)
    summary = model.summary(x)
    first = model.encoder(x).mean
    torch.testing.assert_close(summary, torch.cat([first, model.up[0](first).mean], -1))
    assert model.closed_form() is None                                           # tanh networks: no closed form


@pytest.mark.parametrize("arch", ["mlp", "linear"])
@pytest.mark.parametrize("objective", [ELBO(samples=2), IWAE(samples=3)])
def test_both_objectives_train_every_layer(objective, arch):
    model = _model(layers=3) if arch == "mlp" else _model(layers=3, arch="linear", hidden=None)
    x = torch.rand(6, *SHAPE)
    eps = torch.randn(objective.samples, 6, model.noise_shape[0])
    terms = objective.terms(model, x, eps=eps)
    assert terms.objective.shape == terms.kl.shape == (6,) and torch.all(torch.isfinite(terms.objective))
    (-terms.objective.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = float(terms.objective.detach().mean())
    for _ in range(30):
        optimizer.zero_grad()
        (-objective.terms(model, x, eps=eps).objective.mean()).backward()
        optimizer.step()
    assert float(objective.terms(model, x, eps=eps).objective.detach().mean()) > before + 1.0


def test_free_bits_floor_each_layers_kl_term():
    """With layers, free bits floor the batch mean of each layer's KL term k_l = log q(z_l|z_{l-1}) −
    log p(z_l|z_{l+1}) (bottom-up; on the objective's own draws): a layer below λ enters as λ, the others as
    their terms, whose sum is the ELBO's KL; the ELBO is unchanged and the objective not a bound."""
    model = _model(layers=3)
    x = torch.rand(5, *SHAPE)
    eps = torch.randn(2, 5, model.noise_shape[0], generator=torch.Generator().manual_seed(0))
    plain = make_objective("elbo", samples=2).terms(model, x, eps=eps)
    z, _ = rsample_with_log_prob(model.encode(x), 2, eps)
    q, p = model.encode(x), model.prior()
    blocks = torch.split(z, list(model.dims), -1)
    terms = []
    for i in range(3):                              # by hand: q's parent is the block below, p's the one above
        q_l = model.encoder(x) if i == 0 else model.up[i - 1](blocks[i - 1])
        p_l = p.first if i == 2 else model.prior_module.layers[i](blocks[i + 1])
        terms.append((q_l.log_prob(blocks[i]) - p_l.log_prob(blocks[i])).mean(0))
    by_layer = torch.stack(terms, -1).detach()                                  # (B, 3)
    torch.testing.assert_close(by_layer.sum(-1), plain.kl)
    lam = float(by_layer.mean(0).sort().values[1])                               # between two layers' means
    floored = make_objective("elbo", samples=2, free_bits=lam).terms(model, x, eps=eps)
    active = by_layer.mean(0) > lam
    assert 0 < int(active.sum()) < 3
    want = torch.where(active, by_layer, torch.full_like(by_layer, lam)).sum(-1)
    torch.testing.assert_close(floored.kl_penalty, want)
    torch.testing.assert_close(floored.elbo, plain.elbo)
    assert plain.lower_bound and not floored.lower_bound
    assert isinstance(q, MarkovChain)


@pytest.mark.parametrize("arch", ["mlp", "linear"])
def test_save_load_and_the_meta_device_shape_check(tmp_path, arch):
    kw = {"hidden": (12, 10)} if arch == "mlp" else {"arch": "linear"}
    torch.manual_seed(0)
    model = build_vae(VAEConfig(SHAPE, latent_dim=4, layers=3, decoder_variance=0.3, **kw))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    x, z = torch.rand(3, *SHAPE), torch.randn(2, 3, 7)
    assert torch.equal(loaded.encode(x).log_prob(z), model.encode(x).log_prob(z))
    assert torch.equal(loaded.log_pz(z), model.log_pz(z)) and torch.equal(loaded.log_px(x, z), model.log_px(x, z))
    other = VAEConfig(SHAPE, latent_dim=4, layers=3, decoder_variance=0.3, layer_args={"latent_dims": [3, 1]}, **kw)
    assert _shapes_of(other, False) is not None                                  # built on the meta device
    path = tmp_path / "m" / "model.safetensors"
    header = read_header(read_weights_bytes(path), path)
    with pytest.raises(CheckpointError, match="weights do not match"):
        check_shapes(other, header, path, "the model")
    check_shapes(model.config, header, path, "the model")


def test_latent_sizes_add_up():
    model = _model(layers=3)
    assert model.latent_dim == sum(model.dims) == 7 and math.prod(model.prior().event_shape) == 7
