"""Disentanglement metrics of a representation against known generative factors.

Each metric compares codes ``c`` (N, K) (a VAE's posterior means E_q[z|x]) with the integer factor
indices ``v`` (N, F) of the same examples, as disentanglement_lib (Locatello et al. 2019) defines them:

* **MIG** (Chen et al. 2018): each code dimension is discretised into ``bins`` equal-width bins;
  ``I[k, j] = I(c_k; v_j)`` (scikit-learn's ``mutual_info_score``) and ``H_j = H(v_j)``;
  ``MIG = mean_j (I_(1)j − I_(2)j) / H_j``, the gap between the largest and second largest I[·, j].
* **SAP** (Kumar et al. 2018): ``S[k, j]`` the R² of a linear regression of v_j on c_k alone
  (= corr(c_k, v_j)², disentanglement_lib's SAP for continuous factors; the dSprites factors other than
  shape are grids of continuous values); ``SAP = mean_j (S_(1)j − S_(2)j)``.
* **DCI** (Eastwood & Williams 2018): a gradient-boosted tree classifier per factor predicts v_j from c
  (scikit-learn's ``GradientBoostingClassifier``); ``R[k, j]`` its feature importance of c_k. With
  ``P_k· = R[k, ·] / Σ_j R[k, j]`` and entropies in base F, disentanglement
  ``D = Σ_k ρ_k (1 − H_F(P_k·))`` with code weights ``ρ_k = Σ_j R[k, j] / Σ R``; with
  ``P_·j = R[·, j] / Σ_k R[k, j]`` and base K, completeness ``C = Σ_j ρ_j (1 − H_K(P_·j))`` with
  ``ρ_j = Σ_k R[k, j] / Σ R``; informativeness the classifiers' mean accuracy on held-out examples.
* **FactorVAE score** (Kim & Mnih 2018): codes are divided by their standard deviation over the data
  (dimensions with std < 0.05 are left out); each vote fixes one factor j at a random value, draws
  ``batch_size`` examples and votes (j, argmin_k Var(c_k / s_k)); a majority-vote classifier from
  dimension to factor is fitted on ``train_votes`` votes; the score is its accuracy on ``eval_votes``.

Examples are drawn through ``represent(v) -> c``, the codes of the examples with factor rows ``v``, so that
the FactorVAE score can draw batches with one factor fixed. Everything is seeded by ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DisentanglementScores", "mutual_information_gap", "sap_score", "dci_scores", "factorvae_score",
           "disentanglement_scores", "sample_factors"]

Represent = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DisentanglementScores:
    """The metrics of one representation (each in [0, 1], higher is more disentangled)."""

    mig: float
    sap: float
    dci_disentanglement: float
    dci_completeness: float
    dci_informativeness: float
    factorvae_score: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def sample_factors(sizes: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` factor rows (n, F), each factor uniform over its ``sizes[j]`` values, independently."""
    return np.stack([rng.integers(0, size, n) for size in sizes], axis=1).astype(np.int64)


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, v = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    if c.ndim != 2 or v.ndim != 2 or len(c) != len(v) or len(c) < 2:
        raise ValueError(f"codes (N, K) and factors (N, F) with the same N >= 2, got {c.shape} and {v.shape}")
    if not np.isfinite(c).all():
        raise ValueError("codes: not all finite")
    return c, v


def _discretise(c: np.ndarray, bins: int) -> np.ndarray:
    """Each column in ``bins`` equal-width bins over its range (disentanglement_lib's histogram discretiser)."""
    out = np.empty(c.shape, dtype=np.int64)
    for k in range(c.shape[1]):
        edges = np.histogram(c[:, k], bins)[1]
        out[:, k] = np.digitize(c[:, k], edges[:-1])
    return out


def mutual_information_gap(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> float:
    """MIG = mean_j (I_(1)j − I_(2)j) / H(v_j) over the factors with H(v_j) > 0 (see the module)."""
    from sklearn.metrics import mutual_info_score

    c, v = _check(codes, factors)
    if c.shape[1] < 2:
        raise ValueError("MIG needs at least 2 code dimensions")
    d = _discretise(c, bins)
    mi = np.array([[mutual_info_score(v[:, j], d[:, k]) for j in range(v.shape[1])] for k in range(c.shape[1])])
    entropy = np.array([mutual_info_score(v[:, j], v[:, j]) for j in range(v.shape[1])])
    top = np.sort(mi, axis=0)[::-1]
    keep = entropy > 0
    return float(np.mean((top[0, keep] - top[1, keep]) / entropy[keep]))


def sap_score(codes: np.ndarray, factors: np.ndarray) -> float:
    """SAP = mean_j (S_(1)j − S_(2)j), S[k, j] = corr(c_k, v_j)² (0 for a constant code or factor)."""
    c, v = _check(codes, factors)
    if c.shape[1] < 2:
        raise ValueError("SAP needs at least 2 code dimensions")
    cc, vc = c - c.mean(0), v - v.mean(0)
    cov = cc.T @ vc / (len(c) - 1)                                        # (K, F)
    var_c, var_v = cc.var(0, ddof=1), vc.var(0, ddof=1)
    ok = (var_c[:, None] > 1e-12) & (var_v[None, :] > 0)
    score = np.where(ok, cov ** 2 / np.where(ok, var_c[:, None] * var_v[None, :], 1.0), 0.0)
    top = np.sort(score, axis=0)[::-1]
    return float(np.mean(top[0] - top[1]))


def _normalised_entropy(weights: np.ndarray, base: int) -> np.ndarray:
    """Entropy in base ``base`` of each column of ``weights`` taken as a distribution (1e-11 added, as
    disentanglement_lib does, so that an all-zero column is uniform)."""
    p = (weights + 1e-11) / (weights + 1e-11).sum(0, keepdims=True)
    return -(p * np.log(p)).sum(0) / np.log(base)


def dci_scores(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
               estimators: int = 100, seed: int = 0) -> tuple[float, float, float]:
    """(disentanglement, completeness, informativeness) of codes against factors, fitted on ``train``
    (codes, factors) and scored on ``test`` (see the module)."""
    from sklearn.ensemble import GradientBoostingClassifier

    c, v = _check(*train)
    ct, vt = _check(*test)
    importance, accuracy = np.zeros((c.shape[1], v.shape[1])), []
    for j in range(v.shape[1]):
        if len(np.unique(v[:, j])) < 2:
            raise ValueError(f"factor {j} takes one value in the training examples; DCI needs at least 2")
        model = GradientBoostingClassifier(n_estimators=estimators, random_state=seed).fit(c, v[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        accuracy.append(float(np.mean(model.predict(ct) == vt[:, j])))
    total = importance.sum()
    weights = importance if total > 0 else np.ones_like(importance)
    code_weight = weights.sum(1) / weights.sum()
    factor_weight = weights.sum(0) / weights.sum()
    disentanglement = float(np.sum(code_weight * (1 - _normalised_entropy(importance.T, v.shape[1]))))
    completeness = float(np.sum(factor_weight * (1 - _normalised_entropy(importance, c.shape[1]))))
    return disentanglement, completeness, float(np.mean(accuracy))


def _votes(represent: Represent, sizes: tuple[int, ...], scale: np.ndarray, active: np.ndarray, n: int,
           batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Vote counts (F, K): each vote fixes a random factor j and votes for argmin_k Var(c_k / s_k)."""
    votes = np.zeros((len(sizes), len(active)), dtype=np.int64)
    for _ in range(n):
        j = int(rng.integers(len(sizes)))
        rows = sample_factors(sizes, batch_size, rng)
        rows[:, j] = rows[0, j]
        c = np.asarray(represent(rows), dtype=np.float64)
        spread = (c / scale).var(0, ddof=1)
        k = int(np.flatnonzero(active)[np.argmin(spread[active])])
        votes[j, k] += 1
    return votes


def factorvae_score(represent: Represent, sizes: tuple[int, ...], *, train_votes: int = 800,
                    eval_votes: int = 400, batch_size: int = 64, variance_samples: int = 5000,
                    seed: int = 0, min_std: float = 0.05) -> float:
    """The FactorVAE score: the eval accuracy of the majority-vote classifier (see the module); 0 when
    no code dimension varies over the data. ``min_std``: dimensions whose std over the data is below it
    take no part (0.05 as Kim & Mnih and disentanglement_lib; disent keeps every dimension, 0)."""
    rng = np.random.default_rng(seed)
    c = np.asarray(represent(sample_factors(sizes, variance_samples, rng)), dtype=np.float64)
    scale = c.std(0, ddof=1)
    active = (scale >= min_std) & (scale > 0)
    if not active.any():
        return 0.0
    scale = np.where(active, scale, 1.0)
    train = _votes(represent, sizes, scale, active, train_votes, batch_size, rng)
    classifier = np.argmax(train, axis=0)                                # dimension k -> factor
    held_out = _votes(represent, sizes, scale, active, eval_votes, batch_size, rng)
    return float(held_out[classifier, np.arange(held_out.shape[1])].sum() / held_out.sum())


def disentanglement_scores(represent: Represent, sizes: tuple[int, ...], *, samples: int = 2000,
                           test_samples: int = 1000, seed: int = 0, estimators: int = 100,
                           train_votes: int = 800, eval_votes: int = 400) -> DisentanglementScores:
    """All the metrics of ``represent`` on factors of ``sizes``: MIG, SAP and the DCI classifiers'
    training on ``samples`` uniformly drawn examples (DCI scored on ``test_samples`` more), the
    FactorVAE score on its own votes."""
    rng = np.random.default_rng(seed)
    v = sample_factors(sizes, samples, rng)
    vt = sample_factors(sizes, test_samples, rng)
    c, ct = np.asarray(represent(v)), np.asarray(represent(vt))
    d, comp, info = dci_scores((c, v), (ct, vt), estimators=estimators, seed=seed)
    return DisentanglementScores(
        mig=mutual_information_gap(c, v), sap=sap_score(c, v), dci_disentanglement=d, dci_completeness=comp,
        dci_informativeness=info,
        factorvae_score=factorvae_score(represent, sizes, train_votes=train_votes, eval_votes=eval_votes,
                                        seed=seed + 1))
