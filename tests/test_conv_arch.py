"""The ``conv`` and ``resnet`` architectures (vaekit.models.conv_nets, vaekit.models.architectures): images
(C, H, W) of any size, square or not, odd or even, map to features and back to exactly their own shape.

The networks are checked against an independent re-implementation with torch.nn.functional (stride-2
convolutions, output padding p = n_{i-1} - (2 n_i - 1), residual blocks x + W2*σ(W1*σ(x))), so a wrong
padding or a missing skip fails; the sizes against ⌈n / 2^i⌉. Slow end-to-end runs: test_conv_arch_runs.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit.cli import main
from vaekit.data import load_dataset
from vaekit.errors import ConfigError, ShapeError
from vaekit.models.architectures import ConvArch, ResNetArch, resolve_arch
from vaekit.models.conv_nets import ConvDecoder, ConvEncoder, ResidualBlock, down_sizes
from vaekit.models.vae import VAEConfig, build_vae
from vaekit.store.model_files import load_model, save_model

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
ARCHS = ("conv", "resnet")
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 13, 21), (1, 1, 1), (2, 1, 9), (4, 17, 2), (1, 5, 64)]


def _model(shape, arch, latent=3, **args):
    torch.manual_seed(0)
    return build_vae(VAEConfig(shape, latent_dim=latent, arch=arch, arch_args={"width": 4, **args}))


# ----------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", SHAPES)
def test_decoder_output_has_the_input_shape(arch, shape):
    model = _model(shape, arch)
    x = torch.rand(5, *shape)
    q = model.encode(x)
    assert tuple(q.mean.shape) == (5, 3)
    z = q.rsample((2,))                                                # (S, B, K)
    assert tuple(model.decoder.f(z.reshape(-1, 3)).shape) == (10, *shape)
    assert tuple(model.decode(z).mean.shape) == (2, 5, *shape)
    assert tuple(model.sample(4).shape) == (4, *shape)
    assert tuple(model.reconstruct(x).shape) == x.shape


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(1, 4), h=st.integers(1, 45), w=st.integers(1, 45), stages=st.integers(1, 5),
       blocks=st.integers(0, 2))
def test_any_size_round_trips_to_its_shape(c, h, w, stages, blocks):
    """Property: for every (C, H, W) and depth, f(z) is (N, C, H, W) and the trunk has c_S ⌈H/2^S⌉ ⌈W/2^S⌉ features."""
    encoder = ConvEncoder((c, h, w), 2, stages, blocks)
    decoder = ConvDecoder((c, h, w), 3, 2, stages, blocks)
    features = encoder(torch.rand(2, c, h, w))
    expected = 2 * 2 ** (stages - 1) * math.ceil(h / 2**stages) * math.ceil(w / 2**stages)
    assert tuple(features.shape) == (2, expected) and encoder.out_features == expected
    assert tuple(decoder(torch.randn(3, 3)).shape) == (3, c, h, w)


def test_down_sizes_halve_rounding_up():
    assert down_sizes(13, 21, 3) == [(13, 21), (7, 11), (4, 6), (2, 3)]
    assert down_sizes(1, 2, 2) == [(1, 2), (1, 1), (1, 1)]
    for n in range(1, 70):
        assert [s for s, _ in down_sizes(n, 1, 4)] == [math.ceil(n / 2**i) for i in range(5)]


@pytest.mark.parametrize("blocks", [0, 2])
def test_decoder_retraces_the_encoder_sizes_in_reverse(blocks):
    """The spatial size after every decoder layer is the encoder's, stage by stage, in reverse."""
    shape = (3, 13, 21)
    encoder, decoder = ConvEncoder(shape, 2, 3, blocks), ConvDecoder(shape, 2, 2, 3, blocks)
    seen: dict[str, list] = {"enc": [], "dec": []}
    for key, net, kind in (("enc", encoder, torch.nn.Conv2d), ("dec", decoder, torch.nn.ConvTranspose2d)):
        for layer in net.layers:
            if type(layer) is kind:
                layer.register_forward_hook(lambda m, i, o, key=key: seen[key].append((i[0].shape[-2:],
                                                                                      o.shape[-2:])))
    encoder(torch.rand(1, *shape))
    decoder(torch.randn(1, 2))
    enc = [(tuple(a), tuple(b)) for a, b in seen["enc"]]
    dec = [(tuple(a), tuple(b)) for a, b in seen["dec"]]
    assert enc == [((13, 21), (7, 11)), ((7, 11), (4, 6)), ((4, 6), (2, 3))]
    assert dec == [(b, a) for a, b in reversed(enc)]


# ------------------------------------------------------------------------------ the formula, independently


def _act(x):
    return F.relu(x)


def _block(x, block: ResidualBlock):
    return x + F.conv2d(_act(F.conv2d(_act(x), block.conv1.weight, block.conv1.bias, padding=1)),
                        block.conv2.weight, block.conv2.bias, padding=1)


def _reference_encoder(x, encoder: ConvEncoder):
    convs = [m for m in encoder.layers if isinstance(m, torch.nn.Conv2d)]
    blocks = [m for m in encoder.layers if isinstance(m, ResidualBlock)]
    per_stage = len(blocks) // len(convs)
    for i, conv in enumerate(convs):
        x = _act(F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1))
        for block in blocks[i * per_stage:(i + 1) * per_stage]:
            x = _block(x, block)
    return x.reshape(x.shape[0], -1)


def _reference_decoder(z, decoder: ConvDecoder, shape):
    linear = decoder.layers[0]
    ups = [m for m in decoder.layers if isinstance(m, torch.nn.ConvTranspose2d)]
    blocks = [m for m in decoder.layers if isinstance(m, ResidualBlock)]
    per_stage = len(blocks) // len(ups)
    sizes = [(shape[1], shape[2])]
    for _ in ups:
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    x = _act(F.linear(z, linear.weight, linear.bias)).reshape(z.shape[0], ups[0].in_channels, *sizes[-1])
    for j, up in enumerate(ups):
        for block in blocks[j * per_stage:(j + 1) * per_stage]:
            x = _block(x, block)
        (h_in, w_in), (h_out, w_out) = sizes[-1 - j], sizes[-2 - j]
        x = F.conv_transpose2d(x, up.weight, up.bias, stride=2, padding=1,
                               output_padding=(h_out - 2 * h_in + 1, w_out - 2 * w_in + 1))
        if j < len(ups) - 1:
            x = _act(x)
    return x


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(3, 13, 21), (1, 8, 8), (2, 6, 1)])
def test_networks_compute_the_documented_formula(arch, shape, float64):
    model = _model(shape, arch, stages=2, **({"blocks": 2} if arch == "resnet" else {}))
    trunk, f = model.encoder.trunk, model.decoder.f
    x, z = torch.rand(4, *shape), torch.randn(6, 3)
    torch.testing.assert_close(trunk(x), _reference_encoder(x, trunk), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f(z), _reference_decoder(z, f, shape), rtol=1e-12, atol=1e-12)
    widths = [m.out_channels for m in trunk.layers if isinstance(m, torch.nn.Conv2d)]
    assert widths == [4, 8]                                            # c_i = width · 2^(i−1)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch, float64):
    model = _model((3, 13, 21), arch)
    x = torch.rand(4, 3, 13, 21)
    q = model.encode(x)
    loss = -(model.decode(q.rsample()).log_prob(x) - torch.distributions.kl_divergence(q, model.prior())).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().max()) > 0, f"no gradient reaches {name}"
    small = ConvDecoder((2, 3, 5), 2, 2, 2, 1).double()
    assert torch.autograd.gradcheck(lambda z: small(z), torch.randn(2, 2, dtype=torch.float64, requires_grad=True))


def test_residual_blocks_are_the_only_difference():
    """resnet with the residual branches zeroed computes what conv does with the same other weights."""
    shape = (1, 9, 6)
    conv, res = _model(shape, "conv"), _model(shape, "resnet", blocks=2)
    with torch.no_grad():
        for m in res.modules():
            if isinstance(m, ResidualBlock):
                m.conv2.weight.zero_()
                m.conv2.bias.zero_()
        state = {k: v for k, v in res.state_dict().items() if "conv1" not in k and "conv2" not in k}
        mapping = dict(zip([k for k in conv.state_dict()], state.values(), strict=True))
        conv.load_state_dict(mapping)
    x, z = torch.rand(3, *shape), torch.randn(3, 3)
    torch.testing.assert_close(res.encoder.trunk(x), conv.encoder.trunk(x))
    torch.testing.assert_close(res.decoder.f(z), conv.decoder.f(z))


# ------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize("arch", ARCHS)
def test_config_round_trip_and_saved_model(arch, tmp_path):
    config = VAEConfig((3, 13, 21), latent_dim=2, arch=arch, arch_args={"width": 3, "stages": 3})
    d = config.to_dict()
    expected = {"width": 3, "stages": 3, "activation": "relu", **({"blocks": 1} if arch == "resnet" else {})}
    assert d["arch"] == arch and d["arch_args"] == expected
    assert VAEConfig.from_dict(d).to_dict() == d
    torch.manual_seed(1)
    model = build_vae(config)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config.to_dict() == d
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    z = torch.randn(2, 2)
    assert torch.equal(model.decoder.f(z), loaded.decoder.f(z))


def test_defaults():
    assert ConvArch().to_args() == {"width": 32, "stages": 2, "activation": "relu"}
    assert ResNetArch().to_args() == {"width": 32, "stages": 2, "blocks": 1, "activation": "relu"}
    assert resolve_arch("resnet", {"blocks": 3}) == ResNetArch(blocks=3)


@pytest.mark.parametrize(("arch", "args", "message"), [
    ("conv", {"width": 0}, "width of arch 'conv' must be from 1 to"),
    ("conv", {"width": "32"}, "width of arch 'conv' must be an integer, got '32'"),
    ("conv", {"width": 2.5}, "width of arch 'conv' must be an integer"),
    ("conv", {"width": True}, "width of arch 'conv' must be an integer"),
    ("conv", {"stages": 0}, "stages of arch 'conv' must be from 1 to 8, got 0"),
    ("resnet", {"stages": 9}, "stages of arch 'resnet' must be from 1 to 8, got 9"),
    ("resnet", {"blocks": 0}, "blocks of arch 'resnet' must be from 1 to 16, got 0"),
    ("resnet", {"blocks": None}, "blocks of arch 'resnet' must be an integer"),
    ("conv", {"blocks": 1}, "unknown ['blocks'] for arch 'conv'"),
    ("conv", {"hidden": [8]}, "unknown ['hidden'] for arch 'conv'"),
    ("resnet", {"activation": "swish"}, "activation of arch 'resnet': unknown 'swish'"),
    ("conv", {"width": 1024, "stages": 5}, "gives the last stage 16384 channels, more than 8192"),
])
def test_bad_arguments_are_config_errors_naming_them(arch, args, message):
    with pytest.raises(ConfigError, match="^arch_args: ") as info:
        VAEConfig((1, 8, 8), arch=arch, arch_args=args)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(64,), (8, 8), (1, 2, 8, 8)])
def test_data_that_are_not_images_are_refused(arch, shape):
    with pytest.raises(ConfigError, match=r"^arch: .* needs images of shape \(C, H, W\), got data_shape"):
        VAEConfig(shape, arch=arch)
    with pytest.raises(ShapeError):
        ConvEncoder((1, 8, 8), 2, 1)(torch.rand(2, 64))


def test_cli_refuses_a_table_with_one_line(tmp_path, capsys):
    path = tmp_path / "table.npy"
    np.save(path, np.random.default_rng(0).random((20, 6)).astype(np.float32))
    assert main(["train", "--data", str(path), "--arch", "conv", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--arch: conv needs images of shape (C, H, W), got data_shape (6,)" in err
    assert main(["train", "--arch", "resnet", "--arch-args", '{"blocks": -1}', "--out", str(tmp_path / "r")]) == 2
    assert "--arch-args: blocks of arch 'resnet' must be from 1 to 16, got -1" in capsys.readouterr().err


# ------------------------------------------------------------------------- what the loaders deliver


def test_every_image_source_gives_chw_examples_a_conv_model_takes(tmp_path):
    rng = np.random.default_rng(0)
    sources = {}
    for name, mode, size in (("rgb", "RGB", (13, 21, 3)), ("grey", "L", (13, 21))):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), mode).save(folder / f"{i}.png")
        sources[str(folder)] = (3 if mode == "RGB" else 1, 13, 21)
    for name, array, shape in (("hw.npy", rng.random((6, 9, 7)), (1, 9, 7)),
                               ("nhwc.npy", rng.random((6, 9, 7, 3)), (3, 9, 7)),
                               ("nchw.npy", rng.integers(0, 256, (6, 3, 5, 11), dtype=np.uint8), (3, 5, 11))):
        np.save(tmp_path / name, array)
        sources[str(tmp_path / name)] = shape
    sources["digits"] = (1, 8, 8)
    idx = MNIST / "t10k-images-idx3-ubyte.gz"           # an IDX file by path (the named mnist: the slow tests)
    if idx.is_file():
        sources[str(idx)] = (1, 28, 28)
    for spec, shape in sources.items():
        dataset = load_dataset(spec, val_fraction=0, test_fraction=0)
        assert dataset.shape == shape and dataset.train.shape[1:] == shape, spec
        model = _model(dataset.shape, "conv")
        x = torch.as_tensor(dataset.train[:3], dtype=torch.float32)
        assert model.reconstruct(x).shape == x.shape, spec
