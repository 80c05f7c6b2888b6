"""vaekit.score: the per-example numbers of evaluate, in evaluate's draw order; the streamed path; thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaekit import VAEConfig, build_vae, evaluate, score
from vaekit.cli.score_output import check_format
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.data.stream import NpyStream
from vaekit.errors import ConfigError
from vaekit.inference.scores import HIGHER_IS_NORMAL, Scores, flags, threshold
from vaekit.store.runs import eval_tensor


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=3, arch="mlp", arch_args={"hidden": (16,)}))
    dataset = load_dataset("digits")
    prep = fit_preprocessing(dataset, "gaussian")                 # dequantised 17-level images: bits/dim apply
    return model, dataset, prep


def test_scores_are_evaluates_numbers_per_example(setup):
    model, dataset, prep = setup
    x = eval_tensor(prep, dataset.test[:50], seed=0)
    torch.manual_seed(3)
    ev = evaluate(model, x, importance_samples=20, batch_size=16, levels=prep.levels)
    torch.manual_seed(3)
    sc = score(model, x, importance_samples=20, batch_size=16, levels=prep.levels)
    assert len(sc) == 50 and sc.importance_samples == 20
    assert float(torch.tensor(sc.log_likelihood).mean()) == ev.log_likelihood     # the same op on the same values
    for name in ("elbo", "kl", "reconstruction", "posterior_gap"):                  # evaluate's batch-by-batch sums
        total = sum(float(torch.tensor(getattr(sc, name)[s:s + 16]).sum()) for s in range(0, 50, 16))
        assert total / 50 == getattr(ev, name), name
    np.testing.assert_allclose(sc.elbo, sc.reconstruction - sc.kl, rtol=0, atol=1e-4)
    d, levels = 64, prep.levels                                                   # bits/dim, Theis et al.'s form
    np.testing.assert_allclose(sc.bits_per_dim, -(sc.log_likelihood - d * math.log(levels)) / (d * math.log(2)))
    assert float(np.mean(sc.bits_per_dim)) == pytest.approx(ev.bits_per_dim, rel=1e-12)
    assert np.all(sc.log_likelihood_se > 0) and np.all(sc.posterior_gap >= 0)


def test_log_likelihood_se_is_the_spread_of_repeated_estimates(setup):
    """The delta-method standard error of one example's log p-hat against the spread of 200 repeats."""
    model, dataset, prep = setup
    x = eval_tensor(prep, dataset.test[:2], seed=0).repeat(200, 1, 1, 1)
    torch.manual_seed(0)
    sc = score(model, x, importance_samples=50, batch_size=400)
    for i in range(2):
        spread = np.std(sc.log_likelihood[i::2], ddof=1)
        assert np.median(sc.log_likelihood_se[i::2]) == pytest.approx(spread, rel=0.3)


def test_a_streamed_file_scores_as_the_file_in_memory(setup, tmp_path):
    model, dataset, prep = setup
    raw = dataset.train[:70]
    np.save(tmp_path / "x.npy", raw)
    stream = NpyStream(tmp_path / "x.npy", block_bytes=20 * raw[0].nbytes)         # 4 blocks of 20 rows, and 10
    torch.manual_seed(1)
    streamed = score(model, stream, importance_samples=10, batch_size=8, preprocessing=prep, data_seed=0)
    torch.manual_seed(1)
    memory = score(model, eval_tensor(prep, raw, seed=0), importance_samples=10, batch_size=8)
    for name, values in memory.columns().items():
        np.testing.assert_array_equal(streamed.columns()[name], values, err_msg=name)
    with pytest.raises(ConfigError, match="preprocessing"):
        score(model, stream)


def _scores(values: np.ndarray) -> Scores:
    zeros = np.zeros_like(values)
    return Scores(log_likelihood=values, log_likelihood_se=zeros, elbo=values, reconstruction=values, kl=values,
                  posterior_gap=values, bits_per_dim=None, importance_samples=1)


def test_threshold_leaves_the_quantile_of_the_reference_unflagged():
    reference = _scores(np.random.default_rng(0).permutation(1000).astype(np.float64))   # 0..999
    for name in ("log_likelihood", "kl"):
        cut = threshold(reference, name, 0.99)
        flagged = flags(reference, name, cut)
        assert flagged.sum() == 10                                  # 1 % of 1000 distinct values
        tail = reference.kl[flagged]
        assert (tail.max() < 10) if name in HIGHER_IS_NORMAL else (tail.min() >= 990)   # the low or high tail
    with pytest.raises(ConfigError, match="bits_per_dim"):
        threshold(reference, "bits_per_dim", 0.9)
    with pytest.raises(ConfigError, match="quantile"):
        threshold(reference, "elbo", 1.0)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"pip install 'vaekit\[parquet\]'"):
        check_format(tmp_path / "scores.parquet")
    check_format(tmp_path / "scores.csv")
