"""Preprocessing: JSON round trip, deterministic scaling, binarisation and dequantisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from vaekit.data import Dataset, Preprocessing, fit_preprocessing, load_dataset
from vaekit.errors import ConfigError, DataError


def _dataset(train: np.ndarray, kind: str, levels: int | None) -> Dataset:
    """A dataset whose splits all equal ``train`` (enough for fitting)."""
    return Dataset("test", kind, tuple(train.shape[1:]), levels, train, train, None, None, None, None)


def _image_pre(levels: int | None, binarize: bool = False, dequantize: bool = False) -> Preprocessing:
    return Preprocessing("image", levels, None, None, binarize, dequantize)


# --------------------------------------------------------------------------------------------
# serialisation


@pytest.mark.parametrize(
    "pre",
    [
        _image_pre(256, binarize=True),
        _image_pre(17, dequantize=True),
        _image_pre(None),
        Preprocessing("tabular", None, [0.5, -1.25], [2.0, 1e-3], False, False),
        Preprocessing("tabular", None, None, None, False, False),
    ],
)
def test_round_trip_through_json(pre: Preprocessing) -> None:
    text = json.dumps(pre.to_dict())
    again = Preprocessing.from_dict(json.loads(text))
    assert again == pre and again.to_dict() == pre.to_dict()


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    d = _image_pre(256, binarize=True).to_dict()
    with pytest.raises(ConfigError, match="unknown key.*'scale'"):
        Preprocessing.from_dict({**d, "scale": 2.0})
    del d["levels"]
    with pytest.raises(ConfigError, match="missing key.*'levels'"):
        Preprocessing.from_dict(d)
    with pytest.raises(ConfigError, match="expected a dict"):
        Preprocessing.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(kind="audio"), "kind"),
        (dict(levels=1), "levels"),
        (dict(levels=2.0), "levels"),
        (dict(binarize=1), "binarize"),
        (dict(binarize=True, dequantize=True), "mutually exclusive"),
        (dict(levels=None, dequantize=True), "dequantize"),
        (dict(mean=[0.0]), "both or neither"),
        (dict(mean=[0.0], std=[1.0]), "tabular data only"),
        (dict(kind="tabular", levels=None, mean=[0.0, 1.0], std=[1.0]), "lengths differ"),
        (dict(kind="tabular", levels=None, mean=[0.0], std=[0.0]), "positive"),
        (dict(kind="tabular", levels=None, mean=[math.nan], std=[1.0]), "finite"),
        (dict(kind="tabular", levels=None, mean=[0.0], std=[1.0], binarize=True), "binarize"),
    ],
)
def test_impossible_fields_are_config_errors(fields: dict, match: str) -> None:
    d = {**_image_pre(256).to_dict(), **fields}
    with pytest.raises(ConfigError, match=match):
        Preprocessing.from_dict(d)


# --------------------------------------------------------------------------------------------
# prepare


def test_prepare_scales_levels_to_unit_interval() -> None:
    x = np.arange(256, dtype=np.uint8).reshape(4, 1, 8, 8)
    out = _image_pre(256).prepare(x)
    assert out.dtype == torch.float32 and out.shape == (4, 1, 8, 8)
    assert torch.equal(out.flatten(), torch.arange(256, dtype=torch.float32) / 255)
    out = _image_pre(17).prepare(np.arange(17, dtype=np.uint8).reshape(1, 17))
    assert out[0, 0] == 0 and out[0, -1] == 1 and torch.allclose(out[0, 8], torch.tensor(0.5))


def test_prepare_checks_ranges() -> None:
    with pytest.raises(DataError, match=r"0\.\.16 for 17 levels"):
        _image_pre(17).prepare(np.array([[0, 17]], dtype=np.uint8))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        _image_pre(None).prepare(np.array([[0.0, 1.5]], dtype=np.float32))
    with pytest.raises(DataError, match="non-finite"):
        _image_pre(None).prepare(np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(DataError, match="not numeric"):
        _image_pre(None).prepare(np.array([["a"]]))
    x = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    assert torch.equal(_image_pre(None).prepare(x), torch.from_numpy(x))


def test_tabular_standardisation_gives_mean_0_std_1_on_train() -> None:
    rng = np.random.default_rng(0)
    train = np.column_stack(
        [rng.normal(5, 3, 2000), rng.exponential(0.01, 2000), np.full(2000, 7.0), rng.normal(-1e4, 1e2, 2000)]
    ).astype(np.float32)
    pre = fit_preprocessing(_dataset(train, "tabular", None), "gaussian")
    assert pre.kind == "tabular" and not pre.binarize and not pre.dequantize
    assert pre.std[2] == 1.0  # a constant column gets std 1
    out = pre.prepare(train).double()
    assert out.dtype == torch.float64 and torch.allclose(out.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-4)
    std = out.std(0, unbiased=False)
    assert torch.allclose(std[[0, 1, 3]], torch.ones(3, dtype=torch.float64), atol=1e-4) and std[2] == 0
    assert torch.all(out[:, 2] == 0)
    with pytest.raises(DataError, match="3 features.*fitted on 4"):
        pre.prepare(train[:, :3])


def test_tabular_bernoulli_needs_unit_interval() -> None:
    x = np.random.default_rng(1).random((50, 3)).astype(np.float32)
    pre = fit_preprocessing(_dataset(x, "tabular", None), "bernoulli")
    assert pre.mean is None and not pre.binarize
    assert torch.equal(pre.prepare(x), torch.from_numpy(x))
    with pytest.raises(DataError, match="bernoulli likelihood needs data in"):
        fit_preprocessing(_dataset(x * 2 - 0.5, "tabular", None), "bernoulli")


def test_fit_preprocessing_choices() -> None:
    digits = load_dataset("digits")
    pre = fit_preprocessing(digits, "bernoulli")
    assert pre == _image_pre(17, binarize=True)
    pre = fit_preprocessing(digits, "gaussian")
    assert pre == _image_pre(17, dequantize=True)
    floats = np.random.default_rng(2).random((5, 1, 3, 3)).astype(np.float32)
    assert fit_preprocessing(_dataset(floats, "image", None), "gaussian") == _image_pre(None)
    assert fit_preprocessing(_dataset(floats, "image", None), "bernoulli") == _image_pre(None, binarize=True)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        fit_preprocessing(_dataset(floats * 3, "image", None), "gaussian")
    with pytest.raises(ConfigError, match="likelihood"):
        fit_preprocessing(digits, "poisson")


def test_fit_preprocessing_takes_the_likelihoods_data_kind() -> None:
    from vaekit.models.likelihoods import LIKELIHOODS, build_likelihood

    digits = load_dataset("digits")
    x = np.random.default_rng(1).random((50, 3)).astype(np.float32)
    tabular = _dataset(x, "tabular", None)
    for name in LIKELIHOODS:                      # the likelihood's data_kind means what its name meant
        kind = build_likelihood(name, (1, 8, 8)).data_kind
        assert kind in ("continuous", "binary", "discrete")
        if kind == "discrete":                    # the discretized logistics: no name of vaekit 0.1's API
            assert fit_preprocessing(digits, kind) == _image_pre(17)
            continue
        assert fit_preprocessing(digits, kind) == fit_preprocessing(digits, name)
        assert fit_preprocessing(tabular, kind) == fit_preprocessing(tabular, name)
    assert fit_preprocessing(digits, "binary") == _image_pre(17, binarize=True)
    assert fit_preprocessing(digits, "continuous") == _image_pre(17, dequantize=True)
    with pytest.raises(DataError, match=r"binary likelihood \(bernoulli\) needs data in \[0, 1\]"):
        fit_preprocessing(_dataset(x * 2 - 0.5, "tabular", None), "binary")
    with pytest.raises(ConfigError, match="binary, continuous, discrete"):
        fit_preprocessing(digits, "ordinal")


# --------------------------------------------------------------------------------------------
# augment


def test_augment_identity_without_flags() -> None:
    x = torch.rand(4, 3)
    assert _image_pre(None).augment(x) is x
    assert Preprocessing("tabular", None, [0.0] * 3, [1.0] * 3, False, False).augment(x) is x


def test_binarisation_matches_intensity_in_expectation() -> None:
    # M independent draws of each pixel; the empirical mean of pixel p has standard deviation
    # sqrt(p(1-p)/M) <= 0.5/sqrt(M) = 0.0035. A 5-sigma band fails by chance with probability
    # below 1e-6 per pixel (normal approximation, M = 20000 is large), and the generator is
    # seeded, so the test is deterministic. p = 0 and p = 1 must be exact.
    m = 20000
    p = torch.linspace(0, 1, 11)
    pre = _image_pre(256, binarize=True)
    draws = pre.augment(p.expand(m, 11).contiguous(), torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) <= {0.0, 1.0} and draws.dtype == torch.float32
    mean = draws.mean(0)
    tol = 5 * torch.sqrt(p * (1 - p) / m)
    assert torch.all((mean - p).abs() <= tol), (mean, p)
    assert mean[0] == 0 and mean[-1] == 1


def test_binarisation_on_real_digits_is_reproducible() -> None:
    digits = load_dataset("digits")
    pre = fit_preprocessing(digits, "bernoulli")
    x = pre.prepare(digits.train)
    a = pre.augment(x, torch.Generator().manual_seed(3))
    b = pre.augment(x, torch.Generator().manual_seed(3))
    c = pre.augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # over ~93,000 pixels the overall mean has sd < 0.0017; 5 sigma is 0.0085
    assert abs(a.mean().item() - x.mean().item()) < 0.0085


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_dequantisation_stays_in_its_bin_and_is_uniform(levels: int) -> None:
    m = 4000
    k = torch.arange(levels).repeat(m)
    raw = k.numpy().astype(np.uint8).reshape(m, levels)
    pre = _image_pre(levels, dequantize=True)
    y = pre.augment(pre.prepare(raw), torch.Generator().manual_seed(1)).flatten()
    assert y.dtype == torch.float32
    lo = (k.float() / levels)
    hi = ((k.float() + 1) / levels)
    assert torch.all(y >= lo) and torch.all(y < hi)
    assert torch.all(y >= 0) and torch.all(y < 1)
    frac = (y.double() * levels - k.double()).numpy()
    # per level, the mean of u ~ U[0,1) over m draws has sd sqrt(1/12/m) = 0.0046; 5 sigma
    per_level = frac.reshape(m, levels).mean(0)
    assert np.all(np.abs(per_level - 0.5) < 5 * math.sqrt(1 / 12 / m))
    # and the pooled offsets are uniform (deterministic seed; a true U[0,1) passes at 1e-4)
    assert stats.kstest(frac[:20000], "uniform").pvalue > 1e-4


def test_dequantisation_never_reaches_the_upper_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    # u = the largest float32 below 1: (k + u) / L rounds to (k + 1) / L in float32 for large k,
    # which must be clipped back into the half-open bin
    real_rand = torch.rand

    def nearly_one(*args, **kwargs):  # type: ignore[no-untyped-def]
        return torch.full_like(real_rand(*args, **kwargs), 1 - 2**-24)

    monkeypatch.setattr(torch, "rand", nearly_one)
    pre = _image_pre(256, dequantize=True)
    k = torch.arange(256)
    y = pre.augment(pre.prepare(k.numpy().astype(np.uint8)[None]))[0]
    assert torch.all(y < (k.float() + 1) / 256) and torch.all(y >= k.float() / 256)
    assert y[-1] < 1


def test_augment_stays_on_the_input_device_and_dtype() -> None:
    pre = _image_pre(17, dequantize=True)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    out = pre.augment(x)
    assert out.device == x.device and out.dtype == torch.float64 and out.shape == x.shape
    if torch.cuda.is_available():  # pragma: no cover - exercised on GPU machines
        xg = x.float().cuda()
        gen = torch.Generator(device="cuda").manual_seed(0)
        assert pre.augment(xg, gen).device == xg.device
        assert _image_pre(17, binarize=True).augment(xg, gen).device == xg.device
