"""benchmarks/frechet.py: the Fréchet distance against its closed forms for two Gaussians."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from frechet import frechet_distance, gaussian_statistics  # noqa: E402


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(a)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def test_one_dimension_and_commuting_covariances():
    # 1-D: d² = (μ1 − μ2)² + (σ1 − σ2)²
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9.0 + (2.0 - 0.5) ** 2)
    # diagonal covariances: d² = |μ1 − μ2|² + Σ_i (σ1_i − σ2_i)²
    s1, s2 = np.array([1.0, 2.0, 0.3]), np.array([0.5, 2.5, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected)


def test_general_covariances_against_the_symmetric_form():
    """d² = |μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½), with symmetric square roots by eigh."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    cov1, cov2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    r1 = _sym_sqrt(cov1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * _sym_sqrt(r1 @ cov2 @ r1))
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(frechet_distance(mu2, cov2, mu1, cov1))


def test_statistics_of_samples_converge_to_the_distance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0.0, 1.0, size=(20000, 2)), rng.normal(1.0, 2.0, size=(20000, 2))
    d = frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y))
    assert d == pytest.approx(2 * 1.0 + 2 * (2.0 - 1.0) ** 2, rel=0.05)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
