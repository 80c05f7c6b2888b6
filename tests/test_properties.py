"""Property-based tests (hypothesis): the loaders and the objectives on inputs nobody wrote by hand.

* Loaders: any array saved as .npy, and any CSV text, either loads with the shape and values the
  format rules of :mod:`vaekit.data.formats` promise, or is refused with a DataError/ConfigError
  (never another exception). For arrays the outcome is also predicted: valid arrays must load.
* Objectives: for any model configuration in the allowed ranges and any finite batch, ``elbo``,
  ``iwae_bound`` and ``estimate_log_likelihood`` give finite values of shape (B,), the closed-form
  KL of a diagonal posterior is never negative, and all stays finite when the encoder weights are
  blown up by 1e3 or a learned decoder variance is pushed far out (the soft bounds of
  :mod:`vaekit.prob.bounds` keep the variances in range).
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vaekit
from vaekit import VAEConfig, build_vae
from vaekit.data import load_dataset
from vaekit.data.formats import read_csv, read_npy
from vaekit.errors import ConfigError, DataError
from vaekit.models.variance import LearnedVariance

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- loaders: .npy arrays

DTYPES = (np.uint8, np.int16, np.float32, np.float64, np.bool_)
SPECIAL = (0.0, -0.0, 1.0, 255.0, 256.0, -1.0, 1e-30, 1e38, 3.5e38, 1e300, -1e300,
           math.nan, math.inf, -math.inf)


def _elements(dtype) -> st.SearchStrategy:
    if dtype == np.bool_:
        return st.booleans()
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        return st.one_of(st.integers(0, 255), st.integers(int(info.min), int(info.max)))
    width = 32 if dtype == np.float32 else 64
    return st.one_of(st.floats(0, 1, width=width), st.floats(-10, 10, width=width),
                     st.sampled_from([v for v in SPECIAL if width == 64 or not math.isfinite(v)
                                      or abs(v) < 3.4e38]),
                     st.floats(allow_nan=True, allow_infinity=True, width=width))


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    if ndim == 4 and draw(st.booleans()):               # exercise channels-last layouts
        shape = (shape[0], draw(st.integers(2, 6)), shape[2], draw(st.sampled_from([1, 3, 4])))
    return draw(hnp.arrays(dtype, shape, elements=_elements(dtype)))


def _expected(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], int | None] | None:
    """The examples, example shape and levels the module docstring of vaekit.data.formats promises
    for ``x`` loaded as a dataset with the default fractions, or None when it must be refused."""
    if x.ndim < 2 or x.ndim > 4 or x.shape[0] < 3 or x.size == 0:
        return None
    if x.dtype.kind == "f":
        with np.errstate(over="ignore"):
            if not np.isfinite(x.astype(np.float32)).all():
                return None
    if x.ndim == 2:
        return x.astype(np.float32), (x.shape[1],), None
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = np.transpose(x, (0, 3, 1, 2))
    if x.dtype.kind == "b":
        return x.astype(np.uint8), x.shape[1:], 2
    if x.dtype.kind in "ui":
        if x.min() < 0 or x.max() > 255:
            return None
        return x.astype(np.uint8), x.shape[1:], 256
    return x.astype(np.float32), x.shape[1:], None


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])] if flat.shape[1] else flat


@SETTINGS
@given(x=arrays())
def test_npy_round_trip_or_clean_error(x: np.ndarray):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, x, allow_pickle=False)
        raw, labels = read_npy(path)                     # the file itself always reads back exactly
        assert labels is None and raw.dtype == x.dtype and raw.shape == x.shape
        assert np.array_equal(raw, x, equal_nan=x.dtype.kind == "f")

        expected = _expected(x)
        try:
            ds = load_dataset(str(path))
        except (DataError, ConfigError) as exc:
            assert expected is None, f"valid array refused: {exc}"
            message = str(exc)
            assert "\n" not in message and message.strip()
            return
        assert expected is not None, f"invalid array of dtype {x.dtype}, shape {x.shape} accepted"
        values, shape, levels = expected
        assert ds.shape == tuple(shape) and ds.levels == levels
        got = np.concatenate([ds.train, ds.val, ds.test])
        assert got.dtype == values.dtype and got.shape == values.shape
        assert np.array_equal(_sorted_rows(got), _sorted_rows(values))
        assert got.dtype == np.uint8 or np.isfinite(got).all()


# --------------------------------------------------------------------------- loaders: CSV text

NUMBER_CELLS = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(-5, 5).map(lambda v: f"{v:.3e}"),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", " 2.5 ", "+3", ".5", "1_000"]),
)
OTHER_CELLS = st.one_of(st.sampled_from(["", " ", "abc", "1,5", "0x10", '"7"', "1.2.3", "\u00e9"]),
                        st.text(max_size=5))


@st.composite
def csv_texts(draw) -> tuple[str, list[list[str]]]:
    """CSV text built from a grid of cells (sometimes with a header, sometimes ragged or not numeric)."""
    n_rows, n_cols = draw(st.integers(0, 8)), draw(st.integers(1, 4))
    junk = draw(st.booleans())
    cell = st.one_of(NUMBER_CELLS, OTHER_CELLS) if junk else NUMBER_CELLS
    rows = [[draw(cell) for _ in range(n_cols)] for _ in range(n_rows)]
    if draw(st.booleans()) and rows:                                  # a ragged row
        rows[draw(st.integers(0, n_rows - 1))].append("1")
    if draw(st.booleans()):
        rows.insert(0, [f"col{i}" for i in range(n_cols)])
    buf = io.StringIO()
    csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(rows)
    return buf.getvalue(), rows


@SETTINGS
@given(data=csv_texts())
def test_csv_grid_round_trip_or_clean_error(data):
    text, _ = data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_text(text, encoding="utf-8", newline="")
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
        try:
            values, labels = read_csv(path)
        except (DataError, ConfigError) as exc:
            assert "\n" not in str(exc) and str(exc).strip()
            values = None
        if values is not None:
            assert labels is None
            body = rows[1:] if rows and any(_float(c) is None for c in rows[0]) else rows
            assert values.shape == (len(body), len(body[0]))
            expected = np.array([[_float(c) for c in r] for r in body], dtype=np.float64)
            assert np.array_equal(values, expected, equal_nan=True)
        try:
            ds = load_dataset(str(path))
        except (DataError, ConfigError):
            return
        assert values is not None and ds.kind == "tabular" and ds.shape == (values.shape[1],)
        got = np.concatenate([ds.train, ds.val, ds.test])
        assert got.dtype == np.float32 and np.isfinite(got).all()
        assert np.array_equal(_sorted_rows(got), _sorted_rows(values.astype(np.float32)))


def _float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


@SETTINGS
@given(text=st.text(max_size=80), raw=st.binary(max_size=80))
def test_arbitrary_csv_and_npy_bytes_never_crash(text: str, raw: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "t.csv").write_text(text, encoding="utf-8")
        (Path(tmp) / "b.csv").write_bytes(raw)
        (Path(tmp) / "b.npy").write_bytes(raw)
        (Path(tmp) / "h.npy").write_bytes(b"\x93NUMPY" + raw)
        for name in ("t.csv", "b.csv", "b.npy", "h.npy"):
            try:
                load_dataset(str(Path(tmp) / name))
            except (DataError, ConfigError) as exc:
                assert "\n" not in str(exc) and name in str(exc)


# --------------------------------------------------------------------------- objectives


@st.composite
def configs(draw) -> VAEConfig:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    likelihood = draw(st.sampled_from(["gaussian", "bernoulli"]))
    variance = draw(st.one_of(st.sampled_from(["learned", "learned-per-dim", "optimal"]),
                              st.floats(-4, 4).map(lambda e: float(10.0 ** e))))
    arch = draw(st.sampled_from(["mlp", "linear"]))
    mlp_args = {"hidden": tuple(draw(st.lists(st.integers(1, 8), min_size=1, max_size=2))),
                "activation": draw(st.sampled_from(sorted(vaekit.models.networks.ACTIVATIONS)))}
    return VAEConfig(
        data_shape=shape,
        latent_dim=draw(st.integers(1, 4)),
        arch=arch,
        arch_args=mlp_args if arch == "mlp" else {},      # a linear model has no hidden layers
        likelihood=likelihood,
        decoder_variance=variance,
        posterior=draw(st.sampled_from(["diagonal", "full"])),
    )


@st.composite
def model_and_batch(draw):
    config = draw(configs())
    batch = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    size = batch * config.data_dim
    if config.likelihood == "bernoulli":
        values = draw(st.lists(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1)), min_size=size,
                               max_size=size))
    else:
        values = draw(st.lists(st.floats(-100, 100, width=32), min_size=size, max_size=size))
    x = torch.tensor(values, dtype=torch.float32).reshape(batch, *config.data_shape)
    return config, x, seed, draw(st.booleans()), draw(st.sampled_from([1.0, 1e3]))


def _check_objectives(model, x: torch.Tensor, config: VAEConfig, *, importance: bool = True) -> None:
    """Finite (B,) values from elbo_terms, elbo and (``importance``) iwae_bound/estimate_log_likelihood."""
    b = x.shape[0]
    terms = vaekit.elbo_terms(model, x, n_samples=2)
    for name in ("elbo", "reconstruction", "kl", "objective"):
        value = getattr(terms, name)
        assert value.shape == (b,) and torch.isfinite(value).all(), (name, value, config)
    if config.posterior == "diagonal":
        assert (terms.kl >= -1e-5).all(), (terms.kl, config)      # closed form, never negative
    value = vaekit.elbo(model, x, n_samples=1)
    assert value.shape == (b,) and torch.isfinite(value).all(), (value, config)
    if not importance:
        return
    bound = vaekit.iwae_bound(model, x, n_samples=3)
    assert bound.shape == (b,) and torch.isfinite(bound).all(), (bound, config)
    est = vaekit.estimate_log_likelihood(model, x, n_samples=8, chunk_size=3)
    for name in ("log_likelihood", "elbo", "posterior_gap", "standard_error"):
        value = getattr(est, name)
        assert value.shape == (b,) and torch.isfinite(value).all(), (name, value, config)
    assert (est.posterior_gap >= -1e-4 * (1 + est.log_likelihood.abs())).all()  # Jensen, same draws


@FAST
@given(case=model_and_batch())
def test_objectives_finite_for_random_models(case):
    config, x, seed, training, scale = case
    torch.manual_seed(seed)
    model = build_vae(config)
    if scale != 1.0:                                   # extreme weights: 1e3 x every encoder parameter
        with torch.no_grad():
            for p in model.encoder.parameters():
                p.mul_(scale)
    model.train(training)
    _check_objectives(model, x, config, importance=True)


@FAST
@given(case=model_and_batch(), raw_log_c=st.sampled_from([-1e3, 1e3]))
def test_objectives_finite_at_the_soft_bounds(case, raw_log_c: float):
    """Encoder weights x 1e3 (log-variances pushed far past [-20, 12]) and, for a learned decoder
    variance, its raw log c at +-1e3 (far past [-16, 16]): the soft bounds keep everything finite."""
    config, x, seed, training, _ = case
    torch.manual_seed(seed)
    model = build_vae(config)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.mul_(1e3)
        variance = getattr(model.decoder, "variance", None)
        if isinstance(variance, LearnedVariance):
            variance.log_c.fill_(raw_log_c)
            c = variance()
            assert torch.isfinite(c).all() and (c > 0).all()
    model.train(training)
    _check_objectives(model, x, config, importance=config.posterior == "diagonal")


@pytest.mark.parametrize("c", [1e-4, 1e4])
@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_extreme_fixed_variance_and_encoder_weights(c: float, posterior: str):
    torch.manual_seed(0)
    config = VAEConfig((5,), latent_dim=3, hidden=(4,), decoder_variance=c, posterior=posterior)
    model = build_vae(config).eval()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.mul_(1e3)
    x = torch.randn(4, 5) * 10
    q = model.encode(x)
    variances = q.variance if posterior == "diagonal" else torch.diagonal(q.covariance_matrix, dim1=-2, dim2=-1)
    assert torch.isfinite(variances).all() and (variances > 0).all()
    _check_objectives(model, x, config)


def test_full_posterior_importance_weights_with_blown_up_encoder():
    torch.manual_seed(0)
    config = VAEConfig((1,), latent_dim=4, hidden=(1, 5), activation="elu", decoder_variance="learned",
                       posterior="full")
    model = build_vae(config).eval()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.mul_(1e3)
    assert torch.isfinite(vaekit.iwae_bound(model, torch.zeros(1, 1), n_samples=2)).all()
