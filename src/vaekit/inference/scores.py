"""Anomaly and novelty scores per example: the numbers of :func:`vaekit.inference.evaluate.evaluate`
kept for every example instead of averaged.

For each example x_i (nats, log-densities of the data as given: ``log_jacobian`` J added, see
:mod:`vaekit.inference.evaluate`):

* ``log_likelihood``    log p̂(x_i) = log (1/K) Σ_k w_ik + J, K importance samples from q_x(z)
                        (:func:`vaekit.inference.estimators.estimate_log_likelihood`);
* ``log_likelihood_se`` its delta-method standard error sqrt((mean w² / (mean w)² - 1) / K);
* ``elbo``              E_q[log p(x_i|z)] - KL(q_x(z) || p(z)) + J, one reparameterised draw;
* ``reconstruction``    E_q[log p(x_i|z)] + J from that draw (the "reconstruction probability"
                        of An & Cho 2015, in logs, with one draw);
* ``kl``                KL(q_{x_i}(z) || p(z)), closed form where there is one;
* ``posterior_gap``     log p̂(x_i) - mean_k log w_ik, the estimate of KL(q_x(z) || p(z|x_i));
* ``bits_per_dim``      where it applies, as ``evaluate`` defines it, per example:
                        -(log p̂(y_i) - D log L) / (D log 2) for a density on dequantised images with L
                        levels, -log P̂(x_i) / (D log 2) for a discretized likelihood; else None.

The draws follow ``evaluate``'s order exactly (per batch of ``batch_size``: the ELBO's draw, then the
K importance draws), so for the same seed (``torch.manual_seed``), batch size and data the values are
those ``evaluate`` averages: mean(``log_likelihood``) is its ``log_likelihood`` to the last digit where
J = 0. Low ``log_likelihood``, ``elbo`` or ``reconstruction`` and high ``kl``, ``posterior_gap`` or
``bits_per_dim`` mark an unusual example (:data:`HIGHER_IS_NORMAL`); :func:`threshold` turns a
quantile of a reference set's scores into a cut-off and :func:`flags` applies it.

A ``.npy`` file larger than memory is scored as a :class:`vaekit.data.stream.NpyStream` of raw rows,
read block by block, prepared with the run's preprocessing and augmented (binarised or dequantised)
with one generator seeded ``data_seed`` that runs on across the blocks: on the CPU the same draws as
preparing the whole file at once (:func:`vaekit.store.runs.eval_tensor`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.allocator import keep_freed_memory
from vaekit.data.inputs import as_examples
from vaekit.data.stream import NpyStream
from vaekit.errors import ConfigError
from vaekit.inference.estimators import bits_per_dim, estimate_log_likelihood, level_bits_per_dim
from vaekit.inference.evaluate import check_int, check_sampling_options, device_dtype
from vaekit.inference.objectives import check_batch, elbo_terms, evaluation_mode
from vaekit.models.protocol import LatentModel, with_labels

__all__ = ["Scores", "score", "iter_scores", "score_batches", "stream_batches", "threshold", "flags",
           "HIGHER_IS_NORMAL", "SCORE_NAMES"]

#: The scores for which a higher value is the more usual example (the others: a lower value).
HIGHER_IS_NORMAL = frozenset({"log_likelihood", "elbo", "reconstruction"})
#: The scores a threshold may be set on.
SCORE_NAMES = ("log_likelihood", "elbo", "reconstruction", "kl", "posterior_gap", "bits_per_dim")


@dataclass(frozen=True)
class Scores:
    """Per-example scores (module docstring), each a float64 array of shape (N,) in input order;
    ``bits_per_dim`` None where bits/dim do not apply."""

    log_likelihood: np.ndarray
    log_likelihood_se: np.ndarray
    elbo: np.ndarray
    reconstruction: np.ndarray
    kl: np.ndarray
    posterior_gap: np.ndarray
    bits_per_dim: np.ndarray | None
    importance_samples: int
    log_jacobian: float = 0.0

    def __len__(self) -> int:
        return int(self.log_likelihood.shape[0])

    def columns(self) -> dict[str, np.ndarray]:
        """The arrays by name, in a fixed order (``bits_per_dim`` only where it applies)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("importance_samples",
                                                                                      "log_jacobian")}
        return {name: value for name, value in out.items() if value is not None}

    @classmethod
    def concat(cls, parts: list[Scores]) -> Scores:
        """The scores of consecutive parts, joined in order."""
        if not parts:
            raise ConfigError("scores: nothing to join (no examples)")
        first = parts[0]
        joined: dict[str, Any] = {"bits_per_dim": None}
        joined.update({name: np.concatenate([p.columns()[name] for p in parts]) for name in first.columns()})
        return cls(**joined, importance_samples=first.importance_samples, log_jacobian=first.log_jacobian)


def _bits_per_dim(model: LatentModel, log_p: Tensor, levels: int | None) -> Tensor | None:
    """Bits/dim of each example from its log p̂ (without the log-Jacobian), as ``evaluate`` defines them."""
    d = math.prod(model.data_shape)
    if getattr(model, "probability_of_levels", False):
        return level_bits_per_dim(log_p, d)
    if levels is not None and model.density_on_dequantised:
        return bits_per_dim(log_p, d, levels=levels)
    return None


@torch.no_grad()
def iter_scores(model: LatentModel, batches: Iterable[tuple[Tensor, Tensor | None]], *, importance_samples: int = 5000,
                chunk_size: int | None = None, levels: int | None = None,
                log_jacobian: float = 0.0) -> Iterator[Scores]:
    """The :class:`Scores` of each batch (x (B, *data_shape), labels (B,) or None) in turn, drawing as
    ``evaluate`` does (one ELBO draw, then K importance draws, per batch). The model is in eval mode
    while a batch is scored."""
    shift = float(log_jacobian)
    for xb, yb in batches:
        check_batch(model, xb)
        with evaluation_mode(model):
            terms = elbo_terms(model, xb, n_samples=1, analytic_kl=True, y=yb)
            est = estimate_log_likelihood(model, xb, n_samples=importance_samples, chunk_size=chunk_size, y=yb)
        log_p = est.log_likelihood.double().cpu()                                 # (B,)
        bpd = _bits_per_dim(model, log_p, levels)
        yield Scores(log_likelihood=(log_p + shift).numpy(),
                     log_likelihood_se=est.standard_error.double().cpu().numpy(),
                     elbo=(terms.elbo.double().cpu() + shift).numpy(),
                     reconstruction=(terms.reconstruction.double().cpu() + shift).numpy(),
                     kl=terms.kl.double().cpu().numpy(), posterior_gap=est.posterior_gap.double().cpu().numpy(),
                     bits_per_dim=None if bpd is None else bpd.numpy(), importance_samples=importance_samples,
                     log_jacobian=shift)


def stream_batches(stream: NpyStream, preprocessing: Any, batch_size: int, *, data_seed: int = 0,
                   device: torch.device | str = "cpu",
                   dtype: torch.dtype | None = None) -> Iterator[tuple[Tensor, None]]:
    """Batches (x (B, *shape), None) of the raw rows of ``stream`` in file order, prepared with
    ``preprocessing`` and augmented with one generator (seed ``data_seed``, on ``device``) running on
    across the blocks read; about one block of rows is in memory at a time."""
    per_read = batch_size * max(1, stream.block_rows // batch_size)     # batches never straddle two reads
    generator = torch.Generator(device=device).manual_seed(data_seed)
    for start in range(0, len(stream), per_read):
        rows = stream.read(np.arange(start, min(len(stream), start + per_read)))
        prepared = preprocessing.augment(preprocessing.prepare(rows).to(device), generator)
        if dtype is not None:
            prepared = prepared.to(dtype)
        for b in range(0, prepared.shape[0], batch_size):
            yield prepared[b:b + batch_size], None


def score_batches(model: LatentModel, x: Any, *, batch_size: int = 256, y: Any = None, preprocessing: Any = None,
                  data_seed: int = 0) -> tuple[Iterator[tuple[Tensor, Tensor | None]], int]:
    """(the batches (x (B, *data_shape), labels (B,) or None) that :func:`score` scores, their number of
    examples) for ``x`` as :func:`score` takes it, on the model's device and in its dtype."""
    batch_size = check_int(batch_size, "batch_size", 1)
    device, dtype = device_dtype(model)
    data = x if isinstance(x, (Tensor, NpyStream)) else as_examples(x, name="x", data_shape=tuple(model.data_shape))
    if isinstance(data, NpyStream):
        if preprocessing is None:
            raise ConfigError("preprocessing: a streamed x holds raw rows; give the run's preprocessing")
        if y is not None:
            raise ConfigError("y: a streamed .npy file holds no labels; score a conditional model's examples in memory")
        return stream_batches(data, preprocessing, batch_size, data_seed=data_seed, device=device, dtype=dtype), \
            len(data)
    data = data.to(device=device, dtype=dtype)
    with_labels(model, y)                      # a conditional model without labels, or labels without one: refused
    labels = None if y is None else model.labels(y.cpu() if isinstance(y, Tensor) else y, len(data))
    return ((data[s:s + batch_size], None if labels is None else labels[s:s + batch_size])
            for s in range(0, len(data), batch_size)), len(data)


def score(model: LatentModel, x: Any, *, importance_samples: int = 5000, batch_size: int = 256,
          levels: int | None = None, progress: bool = False, chunk_size: int | None = None,
          log_jacobian: float = 0.0, y: Any = None, preprocessing: Any = None, data_seed: int = 0) -> Scores:
    """Per-example scores (module docstring) of x (N, *data_shape), N >= 1: a tensor, numpy array,
    Dataset or DataLoader prepared for the model (as for :func:`vaekit.inference.evaluate.evaluate`,
    whose ``levels``, ``chunk_size``, ``log_jacobian`` and ``y`` these are), or a
    :class:`vaekit.data.stream.NpyStream` of raw rows, scored block by block with ``preprocessing``
    (required then) and ``data_seed``. Randomness: torch's global generator (``torch.manual_seed``
    first to reproduce). ``progress`` shows a tqdm bar on stderr."""
    from tqdm.auto import tqdm

    keep_freed_memory()
    importance_samples = check_sampling_options(importance_samples, levels, chunk_size, log_jacobian)
    batches, n = score_batches(model, x, batch_size=batch_size, y=y, preprocessing=preprocessing, data_seed=data_seed)
    parts = []
    with tqdm(total=n, desc="score", unit="ex", disable=not progress, leave=False) as bar:
        for part in iter_scores(model, batches, importance_samples=importance_samples, chunk_size=chunk_size,
                                levels=levels, log_jacobian=log_jacobian):
            parts.append(part)
            bar.update(len(part))
    return Scores.concat(parts)


def _check_name(name: str, scores: Scores) -> np.ndarray:
    if name not in SCORE_NAMES:
        raise ConfigError(f"score: unknown {name!r}; choose one of {', '.join(SCORE_NAMES)}")
    values = scores.columns().get(name)
    if values is None:
        raise ConfigError(f"score {name}: does not apply to this model and data (no bits/dim: a continuous "
                          "likelihood on data that are not dequantised images)")
    return values


def threshold(reference: Scores, name: str = "log_likelihood", quantile: float = 0.99) -> float:
    """The cut-off that leaves the fraction ``quantile`` of the ``reference`` examples unflagged by
    :func:`flags`: the (1 - q)-quantile of ``name`` where a higher value is the usual one
    (:data:`HIGHER_IS_NORMAL`), else the q-quantile (numpy's linear interpolation)."""
    values = _check_name(name, reference)
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ConfigError(f"quantile: must lie strictly between 0 and 1, got {quantile!r}")
    q = 1 - quantile if name in HIGHER_IS_NORMAL else quantile
    return float(np.quantile(values, q))


def flags(scores: Scores, name: str, cutoff: float) -> np.ndarray:
    """Which examples are unusual, a bool array (N,): ``name`` < ``cutoff`` where a higher value is the
    usual one (:data:`HIGHER_IS_NORMAL`), else ``name`` > ``cutoff``."""
    values = _check_name(name, scores)
    return values < cutoff if name in HIGHER_IS_NORMAL else values > cutoff
