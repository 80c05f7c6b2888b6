"""Discretized logistic likelihoods (PixelCNN++): exact probabilities of the integer levels of images.

Checked against SciPy's logistic CDF, a float64 NumPy transcription of PixelCNN++'s loss, mpmath in the far
tails, autograd's finite differences, and the closed forms of sums over the L levels (they must sum to 1)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import expit, logsumexp

from vaekit.data.dataset import Dataset, load_dataset
from vaekit.data.preprocessing import fit_preprocessing
from vaekit.errors import ConfigError, DataError, ShapeError
from vaekit.inference.evaluate import evaluate
from vaekit.models.config import VAEConfig
from vaekit.models.likelihoods import (
    DiscretizedLogisticLikelihood,
    DiscretizedLogisticMixtureLikelihood,
    build_likelihood,
    check_likelihood_args,
    likelihood_args_for_levels,
    log_scale_floor,
)
from vaekit.models.vae import build_vae
from vaekit.prob.discretized import DiscretizedLogistic, DiscretizedLogisticMixture, level_log_prob

LOCS = (-60.0, -1.0, -0.01, 0.0, 0.3, 0.5, 0.999, 1.0, 1.7, 60.0)
LOG_SCALES = (-12.0, -7.7, -5.0, -2.0, 0.0, 3.0, 12.0)


def _grid(bins: int, dtype=torch.float64) -> torch.Tensor:
    """The L values k / (L - 1), shape (L, 1): one level per row, broadcasting against the parameters."""
    return (torch.arange(bins, dtype=dtype) / (bins - 1))[:, None]


def _params(dtype):
    loc, log_scale = torch.meshgrid(torch.tensor(LOCS, dtype=dtype), torch.tensor(LOG_SCALES, dtype=dtype),
                                    indexing="ij")
    gen = torch.Generator().manual_seed(0)
    rand_loc = torch.randn(200, generator=gen, dtype=dtype) * 2 + 0.5
    rand_log_scale = torch.rand(200, generator=gen, dtype=dtype) * 16 - 9
    return torch.cat([loc.flatten(), rand_loc]), torch.cat([log_scale.flatten(), rand_log_scale])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bins", [2, 17, 256])
def test_probabilities_of_the_levels_sum_to_one(bins, dtype):
    loc, log_scale = _params(dtype)                                   # (P,)
    p = DiscretizedLogistic(loc, log_scale, bins, event_ndims=0).log_prob(_grid(bins, dtype)).exp()   # (L, P)
    assert torch.isfinite(p).all()
    assert float((p.double().sum(0) - 1).abs().max()) < 1e-5
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(loc.shape[0], 5, generator=gen, dtype=dtype) * 4
    mix_loc = loc[:, None] + torch.randn(loc.shape[0], 5, generator=gen, dtype=dtype)
    mix_log_scale = log_scale[:, None].expand(-1, 5)
    q = DiscretizedLogisticMixture(logits, mix_loc, mix_log_scale, bins, event_ndims=0).log_prob(_grid(bins, dtype))
    assert float((q.exp().double().sum(0) - 1).abs().max()) < 1e-5


def _scipy_log_prob(k: np.ndarray, loc: np.ndarray, scale: np.ndarray, bins: int) -> np.ndarray:
    """log P(k) from SciPy's logistic: F(upper edge) - F(lower edge), the edge bins to ±∞; in the upper
    tail as S(lower edge) - S(upper edge) with S = 1 - F (SciPy's sf), which keeps its precision there."""
    step = 1.0 / (bins - 1)
    up, lo = k * step + step / 2, k * step - step / 2
    mid = np.where(lo > loc, stats.logistic.sf(lo, loc, scale) - stats.logistic.sf(up, loc, scale),
                   stats.logistic.cdf(up, loc, scale) - stats.logistic.cdf(lo, loc, scale))
    return np.where(k == 0, stats.logistic.logcdf(up, loc, scale),
                    np.where(k == bins - 1, stats.logistic.logsf(lo, loc, scale), np.log(mid)))


def test_log_prob_matches_scipy_and_sums_over_the_event():
    gen = np.random.default_rng(0)
    bins, shape = 256, (4, 3, 5, 5)                                  # (B, C, H, W)
    k = gen.integers(0, bins, shape)
    k[:, :, 0, 0], k[:, :, 0, 1] = 0, bins - 1                       # both edge levels in every example
    loc = gen.uniform(-0.2, 1.2, shape)
    scale = np.exp(gen.uniform(-4, -1, shape))
    expected = _scipy_log_prob(k, loc, scale, bins).reshape(4, -1).sum(1)
    dist = DiscretizedLogistic(torch.tensor(loc), torch.tensor(np.log(scale)), bins, event_ndims=3)
    assert dist.batch_shape == (4,) and dist.event_shape == (3, 5, 5)
    got = dist.log_prob(torch.tensor(k / (bins - 1)))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)

    logits = gen.normal(size=(*shape, 3))                            # a mixture of 3
    locs = loc[..., None] + gen.normal(scale=0.2, size=(*shape, 3))
    scales = scale[..., None] * np.exp(gen.normal(size=(*shape, 3)))
    per_component = _scipy_log_prob(k[..., None], locs, scales, bins)
    log_w = logits - logsumexp(logits, -1, keepdims=True)
    expected = logsumexp(log_w + per_component, -1).reshape(4, -1).sum(1)
    mix = DiscretizedLogisticMixture(torch.tensor(logits), torch.tensor(locs), torch.tensor(np.log(scales)), bins, 3)
    np.testing.assert_allclose(mix.log_prob(torch.tensor(k / (bins - 1))).numpy(), expected, rtol=1e-10)


def _pixelcnn_log_prob(x: np.ndarray, means: np.ndarray, log_scales: np.ndarray) -> np.ndarray:
    """PixelCNN++'s discretized_mix_logistic_loss for one channel and component, on [-1, 1], in float64."""
    centred = x - means
    inv_stdv = np.exp(-log_scales)
    plus_in, min_in = inv_stdv * (centred + 1 / 255), inv_stdv * (centred - 1 / 255)
    cdf_delta = expit(plus_in) - expit(min_in)
    log_cdf_plus = plus_in - np.logaddexp(0, plus_in)
    log_one_minus_cdf_min = -np.logaddexp(0, min_in)
    mid_in = inv_stdv * centred
    log_pdf_mid = mid_in - log_scales - 2 * np.logaddexp(0, mid_in)
    inner = np.where(cdf_delta > 1e-5, np.log(np.maximum(cdf_delta, 1e-12)), log_pdf_mid - np.log(127.5))
    return np.where(x < -0.999, log_cdf_plus, np.where(x > 0.999, log_one_minus_cdf_min, inner))


def test_agrees_with_pixelcnn_on_minus_one_to_one():
    """The same probabilities as PixelCNN++ with x, μ on [-1, 1] (x' = 2x - 1, μ' = 2μ - 1, s' = 2s), exactly
    where it takes CDF differences, and within its mid-bin approximation's error where it does not."""
    gen = np.random.default_rng(1)
    k = gen.integers(0, 256, 20000)
    loc = gen.uniform(-0.5, 1.5, k.shape)
    log_scale = gen.uniform(-7.69, 0.0, k.shape)
    ours = level_log_prob(torch.tensor(k, dtype=torch.float64), torch.tensor(loc), torch.tensor(log_scale), 256)
    theirs = _pixelcnn_log_prob(2 * k / 255 - 1, 2 * loc - 1, log_scale + math.log(2))
    exact = (np.abs(theirs - np.log(1e-5)) > 1e-9) & (theirs > np.log(1e-5))   # their CDF branch or an edge
    np.testing.assert_allclose(ours.numpy()[exact], theirs[exact], rtol=1e-9, atol=1e-12)
    assert exact.sum() > 1000 and (~exact).sum() > 1000
    # mid-bin density × width: off by at most the relative curvature over a bin, (Δ/s)²/24 · (1 + ...)
    delta_over_s = np.exp(-log_scale) / 255
    close = ~exact & (delta_over_s < 0.05)
    np.testing.assert_allclose(ours.numpy()[close], theirs[close], atol=1e-3)


def test_far_tails_match_high_precision():
    """Where σ(b) - σ(a) underflows in floating point the factorised form still gives log P; mpmath checks it."""
    mpmath.mp.dps = 60
    cases = [(128, 0.0, -7.0), (255, 0.0, -6.0), (0, 1.0, -6.0), (3, 0.9, -7.5), (100, -50.0, 1.0), (140, 0.55, 4.0)]
    for k, loc, log_scale in cases:
        s, step = mpmath.exp(log_scale), mpmath.mpf(1) / 255
        lo, up = k * step - step / 2, k * step + step / 2
        if lo > loc:                                                 # upper tail: survival functions 1 - F
            sf_lo, sf_up = (1 / (1 + mpmath.exp((t - loc) / s)) for t in (lo, up))
            expected = float(mpmath.log(sf_lo - (0 if k == 255 else sf_up)))
        else:
            cdf_lo, cdf_up = (1 / (1 + mpmath.exp(-(t - loc) / s)) for t in (lo, up))
            expected = float(mpmath.log((1 if k == 255 else cdf_up) - (0 if k == 0 else cdf_lo)))
        got = float(level_log_prob(torch.tensor(float(k), dtype=torch.float64), torch.tensor(loc, dtype=torch.float64),
                                   torch.tensor(log_scale, dtype=torch.float64), 256))
        assert got == pytest.approx(expected, rel=1e-12), (k, loc, log_scale)
    naive = expit((128.5 / 255 - 0.0) / math.exp(-7.0)) - expit((127.5 / 255 - 0.0) / math.exp(-7.0))
    assert naive == 0.0                                              # the first case underflows as σ(b) - σ(a)


@pytest.mark.parametrize("bins", [17, 256])
def test_gradients_are_finite_at_the_edges_and_match_finite_differences(bins):
    loc = torch.tensor([-30.0, -0.5, 0.0, 0.0, 1.0, 1.0, 1.5, 30.0], dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor([-7.7, -7.7, -7.7, 3.0, -7.7, 9.0, -3.0, 0.0], dtype=torch.float64, requires_grad=True)
    k = torch.tensor([[0.0], [1.0], [bins - 2.0], [bins - 1.0]], dtype=torch.float64)   # the edges and their neighbours
    value = level_log_prob(k, loc, log_scale, bins)                  # (4, 8)
    grads = torch.autograd.grad(value.sum(), (loc, log_scale))
    assert torch.isfinite(value).all() and all(torch.isfinite(g).all() for g in grads)
    assert torch.autograd.gradcheck(lambda m, s: level_log_prob(k, m, s, bins), (loc, log_scale))
    float32 = DiscretizedLogistic(loc.detach().float().requires_grad_(), log_scale.detach().float(), bins, 0)
    x = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    (grad,) = torch.autograd.grad(float32.log_prob(x).sum(), float32.loc)
    assert torch.isfinite(grad).all()


def test_mixture_of_one_is_the_plain_distribution():
    gen = torch.Generator().manual_seed(2)
    loc = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    log_scale = torch.rand(6, 1, 4, 4, generator=gen, dtype=torch.float64) * 6 - 7
    x = torch.randint(0, 17, (6, 1, 4, 4), generator=gen).double() / 16
    plain = DiscretizedLogistic(loc, log_scale, 17, 3)
    mix = DiscretizedLogisticMixture(torch.randn(6, 1, 4, 4, 1, generator=gen, dtype=torch.float64),
                                     loc[..., None], log_scale[..., None], 17, 3)
    torch.testing.assert_close(mix.log_prob(x), plain.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mix.mean, plain.mean, rtol=1e-12, atol=1e-12)


def test_mean_and_samples_follow_the_level_probabilities():
    bins = 17
    loc = torch.tensor([0.3, -0.2, 0.95, 0.5], dtype=torch.float64)
    log_scale = torch.tensor([-2.5, -1.0, -3.0, 1.0], dtype=torch.float64)
    dist = DiscretizedLogistic(loc, log_scale, bins, 0)
    probs = dist.log_prob(_grid(bins)).exp()                        # (L, 4)
    torch.testing.assert_close(dist.mean, (probs * _grid(bins)).sum(0), rtol=1e-12, atol=1e-12)
    torch.manual_seed(3)
    draws = dist.sample((40000,))                                   # (n, 4), on the grid
    counts = torch.stack([(draws == g).double().mean(0) for g in _grid(bins)[:, 0]])
    assert float((counts - probs).abs().sum(0).max()) < 0.03        # total variation of 40000 draws
    logits = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)
    mix = DiscretizedLogisticMixture(logits, torch.tensor([[0.1, 0.5, 0.9]], dtype=torch.float64),
                                     torch.full((1, 3), -3.0, dtype=torch.float64), bins, 0)
    mix_probs = mix.log_prob(_grid(bins)).exp()                      # (L, 1)
    torch.testing.assert_close(mix.mean, (mix_probs * _grid(bins)).sum(0), rtol=1e-12, atol=1e-12)
    mix_draws = mix.sample((40000,))
    mix_counts = torch.stack([(mix_draws == g).double().mean(0) for g in _grid(bins)[:, 0]])
    assert float((mix_counts - mix_probs).abs().sum()) < 0.03


def test_values_off_the_grid_and_bad_shapes_are_refused():
    dist = DiscretizedLogistic(torch.zeros(2, 3), torch.zeros(2, 3), 256, 1, validate_args=True)
    with pytest.raises(DataError, match="levels k / 255"):
        dist.log_prob(torch.full((2, 3), 0.5))                      # a dequantised value, not k / 255
    with pytest.raises(DataError, match="levels"):
        dist.log_prob(torch.full((2, 3), 1.5))
    with pytest.raises(ShapeError, match="event shape"):
        dist.log_prob(torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="bins"):
        DiscretizedLogistic(torch.zeros(3), torch.zeros(3), 257, 1)


def test_likelihoods_read_the_network_output_and_floor_the_scale():
    torch.manual_seed(4)
    shape = (2, 3, 3)
    out = torch.randn(5, 2, *shape, dtype=torch.float64)             # (lead, P = 2, *data_shape)
    out[0, 1] = -50.0                                                # a raw log-scale far below the floor
    lik = DiscretizedLogisticLikelihood(256, shape)
    assert lik.params_per_dim == 2 and lik.data_kind == "discrete" and lik.probability_of_levels
    dist = lik.distribution(out, 3)
    floor = log_scale_floor(256)
    assert floor == pytest.approx(-7 - math.log(2))                  # PixelCNN++'s -7 on [-1, 1]
    assert float(dist.log_scale.min()) >= floor and float(dist.log_scale[0].max()) < floor + 1e-12
    torch.testing.assert_close(dist.loc, out[:, 0])
    torch.testing.assert_close(dist.log_scale[1:], floor + torch.nn.functional.softplus(out[1:, 1] - floor))
    learned = DiscretizedLogisticLikelihood(256, shape, scale="learned")
    assert learned.params_per_dim == 1 and learned.raw_log_scale is not None
    assert tuple(learned.distribution(out[:, 0], 3).log_scale.shape) == (5, *shape)
    mix = DiscretizedLogisticMixtureLikelihood(256, components=4)
    params = torch.randn(5, 12, *shape, dtype=torch.float64)         # (lead, 3K, *data_shape)
    mdist = mix.distribution(params, 3)
    torch.testing.assert_close(mdist.logits, params[:, 0:4].movedim(1, -1))
    torch.testing.assert_close(mdist.loc, params[:, 4:8].movedim(1, -1))


def test_likelihood_args_and_levels():
    assert check_likelihood_args("discretized-logistic-mixture", None) == {"bins": 256, "components": 10}
    assert check_likelihood_args("discretized-logistic", {}) == {"bins": 256, "scale": "network"}
    for name, args, needle in [("discretized-logistic", {"bins": 1}, "bins"),
                               ("discretized-logistic", {"scale": "fixed"}, "scale"),
                               ("discretized-logistic", {"components": 3}, "unknown"),
                               ("discretized-logistic-mixture", {"components": 0}, "components"),
                               ("discretized-logistic-mixture", {"components": 2.0}, "components")]:
        with pytest.raises(ConfigError, match=needle):
            check_likelihood_args(name, args)
    assert likelihood_args_for_levels("discretized-logistic-mixture", {"components": 2}, 17) == \
        {"bins": 17, "components": 2}
    assert likelihood_args_for_levels("discretized-logistic", {"bins": 17}, 17)["bins"] == 17
    with pytest.raises(ConfigError, match="bins 256 but the images have 17 levels"):
        likelihood_args_for_levels("discretized-logistic", {"bins": 256}, 17)
    assert likelihood_args_for_levels("gaussian", None, 17) == {}
    assert build_likelihood("discretized-logistic-mixture", (1, 2, 2)).params_per_dim == 30


def test_preprocessing_keeps_the_levels_and_refuses_other_data():
    digits = load_dataset("digits")
    prep = fit_preprocessing(digits, "discrete")
    assert (prep.levels, prep.binarize, prep.dequantize) == (17, False, False)
    x = prep.prepare(digits.val)
    torch.testing.assert_close(prep.augment(x), x)                   # no random part
    torch.testing.assert_close(x * 16, torch.round(x * 16))          # the levels k / 16 themselves
    table = Dataset("table", "tabular", (3,), None, np.zeros((4, 3), np.float32), np.zeros((1, 3), np.float32),
                    None, None, None, None)
    with pytest.raises(ConfigError, match="tabular data"):
        fit_preprocessing(table, "discrete")
    floats = Dataset("floats", "image", (1, 2, 2), None, np.zeros((4, 1, 2, 2), np.float32),
                     np.zeros((1, 1, 2, 2), np.float32), None, None, None, None)
    with pytest.raises(ConfigError, match="float images"):
        fit_preprocessing(floats, "discrete")
    deep = Dataset("deep", "image", (1, 2, 2), 1024, np.zeros((4, 1, 2, 2), np.uint16),
                   np.zeros((1, 1, 2, 2), np.uint16), None, None, None, None)
    with pytest.raises(ConfigError, match="1024 levels"):
        fit_preprocessing(deep, "discrete")


@pytest.mark.parametrize("likelihood", ["discretized-logistic", "discretized-logistic-mixture"])
def test_evaluate_reports_exact_bits_per_dim(likelihood):
    torch.manual_seed(5)
    config = VAEConfig(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), likelihood=likelihood,
                       likelihood_args={"bins": 17} if likelihood == "discretized-logistic" else
                       {"bins": 17, "components": 2})
    model = build_vae(config)
    assert model.probability_of_levels and not model.density_on_dequantised and model.closed_form() is None
    assert model.values_per_dim == (2 if likelihood == "discretized-logistic" else 6)   # chunks of draws shrink
    x = torch.randint(0, 17, (6, 1, 4, 4)).float() / 16
    for levels in (None, 17):                                        # no dequantisation term either way
        result = evaluate(model, x, importance_samples=8, levels=levels)
        assert math.isfinite(result.log_likelihood) and result.log_likelihood < 0
        assert result.bits_per_dim == pytest.approx(-result.log_likelihood / (16 * math.log(2)), rel=1e-9)
    samples = model.sample(3)
    assert samples.shape == (3, 1, 4, 4) and float(samples.min()) >= 0 and float(samples.max()) <= 1
    raw = model.sample(3, mean=False)
    torch.testing.assert_close(raw * 16, torch.round(raw * 16))      # draws are levels


class _Counting(torch.nn.Module):
    """A stand-in network f: z (N, K) ↦ 0, 1, 2, ... laid out in ``shape``."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.arange(math.prod(self.shape), dtype=z.dtype).reshape(self.shape)


def test_decoder_network_shapes_for_several_values_per_dimension():
    config = VAEConfig(data_shape=(3, 2, 2), latent_dim=2, arch="linear", likelihood="discretized-logistic")
    decoder = build_vae(config).decoder
    assert decoder.f(torch.zeros(5, 2)).shape == (5, 24)             # the architecture built P·D outputs
    z = torch.zeros(5, 2)
    for shape in [(5, 2, 3, 2, 2), (5, 6, 2, 2), (5, 24)]:
        decoder.f = _Counting(shape)
        out = decoder.mean_of(z)
        assert out.shape == (5, 2, 3, 2, 2)
        assert float(out[0, 1, 0, 0, 0]) == 12.0                     # parameter-major: channels [C, 2C) are p = 1
    decoder.f = _Counting((5, 3, 2, 2))
    with pytest.raises(ShapeError, match="2 values per data dimension"):
        decoder.mean_of(z)


def _vaekit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["discretized-logistic", "discretized-logistic-mixture"])
def test_train_evaluate_sample_on_digits(tmp_path, likelihood):
    run = tmp_path / "run"
    extra = ["--likelihood-args", '{"components": 3}'] if likelihood.endswith("mixture") else []
    proc = _vaekit("train", "--data", "digits", "--likelihood", likelihood, *extra, "--hidden", "32", "--latent-dim",
                   "2", "--epochs", "2", "--batch-size", "128", "--importance-samples", "10", "--no-progress",
                   "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "bits per dim" in proc.stdout
    stored = json.loads((run / "config.json").read_text())
    assert stored["model"]["likelihood_args"]["bins"] == 17                 # the digits' own 17 levels
    assert stored["extra"]["preprocessing"]["dequantize"] is False and stored["extra"]["preprocessing"]["levels"] == 17
    proc = _vaekit("evaluate", str(run), "--json", "--importance-samples", "20")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert math.isfinite(doc["log_likelihood"]) and doc["log_likelihood"] < 0
    assert doc["bits_per_dim"] == pytest.approx(-doc["log_likelihood"] / (64 * math.log(2)), rel=1e-9)
    assert 0 < doc["bits_per_dim"] < math.log2(17)                         # better than uniform over the levels
    for raw in ([], ["--raw"]):
        out = tmp_path / f"samples{len(raw)}.npy"
        proc = _vaekit("sample", str(run), "--n", "8", "--out", str(out), *raw)
        assert proc.returncode == 0, proc.stderr
        values = np.load(out)
        assert values.shape == (8, 1, 8, 8) and values.min() >= 0 and values.max() <= 1
        if raw:
            np.testing.assert_allclose(values * 16, np.round(values * 16), atol=1e-5)   # draws are levels
    assert _vaekit("sample", str(run), "--out", str(tmp_path / "s.png")).returncode == 0


@pytest.mark.slow
def test_train_refuses_tables_and_mismatched_bins(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(40)))
    proc = _vaekit("train", "--data", str(table), "--likelihood", "discretized-logistic", "--out", str(tmp_path / "a"))
    assert proc.returncode == 2 and "tabular data" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = _vaekit("train", "--data", "digits", "--likelihood", "discretized-logistic", "--likelihood-args",
                   '{"bins": 256}', "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "--likelihood-args: bins 256 but the images have 17 levels" in proc.stderr


def test_user_networks_get_the_values_per_dimension(tmp_path):
    module = tmp_path / "nets.py"
    module.write_text("import math\nfrom torch import nn\n\n"
                      "def build(data_shape, latent_dim, params_per_dim=1):\n"
                      "    return nn.Flatten(), nn.Linear(latent_dim, params_per_dim * math.prod(data_shape))\n\n"
                      "def plain(data_shape, latent_dim):\n"
                      "    return nn.Flatten(), nn.Linear(latent_dim, math.prod(data_shape))\n")
    config = VAEConfig(data_shape=(1, 4, 4), latent_dim=2, arch=f"{module}:build",
                       likelihood="discretized-logistic-mixture", likelihood_args={"bins": 17, "components": 2})
    model = build_vae(config, trust_code=True)
    assert model.decoder.f.out_features == 6 * 16
    assert model(torch.zeros(3, 1, 4, 4)).likelihood.log_prob(torch.zeros(3, 1, 4, 4)).shape == (1, 3)
    plain = VAEConfig(data_shape=(1, 4, 4), latent_dim=2, arch=f"{module}:plain", likelihood="discretized-logistic")
    with pytest.raises(ConfigError, match="params_per_dim"):
        build_vae(plain, trust_code=True)


def _brute_force_mode(loc: torch.Tensor, log_scale: torch.Tensor, bins: int) -> torch.Tensor:
    """argmax over all L levels of level_log_prob, as k / (L - 1): the definition of the mode."""
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    return level_log_prob(k, loc, log_scale, bins).argmax(0).double() / (bins - 1)


@pytest.mark.parametrize("bins", [2, 17, 256])
def test_mode_is_the_most_probable_level(bins):
    """The issue's case (μ = 0.3, log s = -2: the edge level 0 holds σ(-2.8) of the mass, more than any inner
    level) and 2000 random (μ, log s) with μ in [-0.2, 1.2], log s ~ N(-2, 1) and wider, against a brute-force
    argmax of the level probabilities, which SciPy's logistic CDF confirms for the issue's case."""
    gen = torch.Generator().manual_seed(3)
    loc = torch.cat([torch.tensor([0.3]), torch.rand(1000, generator=gen, dtype=torch.float64) * 1.4 - 0.2,
                     torch.randn(1000, generator=gen, dtype=torch.float64) * 2 + 0.5]).double()
    log_scale = torch.cat([torch.tensor([-2.0]), torch.randn(1000, generator=gen, dtype=torch.float64) - 2,
                           torch.rand(1000, generator=gen, dtype=torch.float64) * 10 - 8]).double()
    mode = DiscretizedLogistic(loc, log_scale, bins, event_ndims=0).mode
    assert torch.equal(mode, _brute_force_mode(loc, log_scale, bins))
    if bins == 256:
        assert mode[0] == 0.0                                        # not the level nearest μ, 77
        edges = (np.arange(bins + 1) - 0.5) / (bins - 1)
        cdf = stats.logistic.cdf(edges, loc=0.3, scale=math.exp(-2.0))
        cdf[0], cdf[-1] = 0.0, 1.0
        assert int(np.argmax(np.diff(cdf))) == 0


@pytest.mark.parametrize("bins", [2, 17, 256])
def test_mixture_mode_is_the_most_probable_level(bins):
    """The mixture's mode against a brute-force argmax of logsumexp_j [log π_j + log P_j(k)] over all levels,
    on 500 random three-component mixtures (a mixture of levels can be bimodal)."""
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(500, 3, generator=gen, dtype=torch.float64) * 2
    loc = torch.rand(500, 3, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    log_scale = torch.randn(500, 3, generator=gen, dtype=torch.float64) - 2
    mode = DiscretizedLogisticMixture(logits, loc, log_scale, bins, event_ndims=0).mode
    k = torch.arange(bins, dtype=torch.float64)[:, None, None]
    log_p = torch.logsumexp(torch.log_softmax(logits, -1) + level_log_prob(k, loc, log_scale, bins), -1)   # (L, 500)
    assert mode.shape == (500,)
    assert torch.equal(mode, log_p.argmax(0).double() / (bins - 1))
