"""The Fréchet distance between two Gaussians, the FID formula (Heusel et al. 2017) on features.

For N(μ1, Σ1) and N(μ2, Σ2) the squared 2-Wasserstein (Fréchet) distance is (Dowson & Landau 1982)

    d² = |μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}),

with (Σ1 Σ2)^{1/2} the principal square root (:func:`scipy.linalg.sqrtm`), whose eigenvalues are the
non-negative square roots of those of Σ1 Σ2 (real: Σ1 Σ2 is similar to Σ1^{1/2} Σ2 Σ1^{1/2}); as in
pytorch-fid, a tiny imaginary part from rounding is dropped, and a singular product (SciPy warns, or the
root is not finite: features that are constant, such as a dead ReLU unit) is regularised by adding ``eps``
to both diagonals. Not part of vaekit: the benchmarks' helper (tested in
tests/test_benchmark_frechet.py against closed forms).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

__all__ = ["frechet_distance", "gaussian_statistics"]


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D), ddof 1) of ``features`` (N, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """d² between N(mu1, cov1) and N(mu2, cov2) (module docstring)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes {mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape} do not agree")
    with warnings.catch_warnings(record=True) as caught:       # a singular product (e.g. a dead ReLU feature)
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov1 @ cov2)
    if caught or not np.isfinite(root).all():
        offset = np.eye(mu1.size) * eps
        root = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary part {np.max(np.abs(root.imag)):.3g} in the square root")
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root))
