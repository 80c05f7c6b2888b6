"""Preprocessing stored with a model: a deterministic scaling plus a per-batch random augmentation.

``prepare`` (deterministic, once per array, numpy -> float32 tensor):

* images with ``levels`` L: ``x / (L - 1)``, so level k maps to ``k / (L - 1)`` in [0, 1];
* images without levels (floats): checked to lie in [0, 1] and passed through;
* tabular: ``(x - mean) / std`` with the training set's per-feature mean and (population) std,
  or passed through when no standardisation was fitted.

``augment`` (random, every batch, on the batch's device):

* ``binarize`` (Bernoulli likelihood on images): ``torch.bernoulli(x)``, dynamic binarisation, so
  each pixel is 1 with probability equal to its intensity;
* ``dequantize`` (continuous likelihood on discrete images): uniform dequantisation

      y = (k + u) / L,   k = x * (L - 1) in {0, ..., L-1},   u ~ U[0, 1),

  so y lies in [k/L, (k+1)/L) and the bins tile [0, 1). For any density p on [0, 1]^D the
  discrete model P(k) = (integral of p over the bin of k) = L^-D E_u[p((k + u)/L)], so by
  Jensen ``log P(k) >= E_u[log p(y)] - D log L``: ``log p(y) - D log L`` is (in expectation) a
  lower bound on the discrete log-probability, and the usual bits per dimension are

      bits/dim = -(log p(y) - D log L) / (D log 2).

Nothing else is random: with neither flag ``augment`` is the identity.

Units of the reported numbers (:attr:`Preprocessing.log_jacobian`). A model's log-densities are of
its inputs, the prepared values. For a table given in the user's units, log p(x) of the raw rows is

    log p_raw(x) = log p_model(prepare(x)) + log |det d prepare / dx|
                 = log p_model(prepare(x)) - sum_d log std_d          (standardised columns),

so the reported numbers (``vaekit evaluate``, the end of ``vaekit train``) add ``log_jacobian`` to
every log-density (the ELBO, its reconstruction term, log p(x), the exact linear-Gaussian log p(x)):
they are densities of the table as the user gave it, comparable with any density model of the same
file. Without standardisation the log-Jacobian is 0.

Images keep the convention of their literature, the [0, 1] scale: ``log_jacobian`` is 0, and
log p(x) is the density of the dequantised values y in [0, 1)^D (Gaussian decoder), the
probability of the binarised pixels (Bernoulli decoder, no density, no Jacobian), or the exact
probability of the integer levels (a discretized likelihood, data kind "discrete": the prepared
levels k / (L - 1) unchanged, no random part; bits/dim = -log p(x) / (D log 2), no D log L term). The number that is
free of any scale is bits/dim, -(log p(y) - D log L) / (D log 2), a (lower bound on the) probability
of the discrete levels; it is unchanged. (Crediting the scaling k -> k / (L - 1) would subtract
D log(L - 1) from the [0, 1] numbers and break their comparability with published figures.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vaekit.data.dataset import Dataset
from vaekit.errors import ConfigError, DataError

__all__ = ["DATA_KINDS", "LIKELIHOODS", "STANDARDIZE", "Preprocessing", "fit_preprocessing"]

#: What a likelihood needs of the data (its ``data_kind``, :mod:`vaekit.models.likelihoods`).
DATA_KINDS: tuple[str, ...] = ("binary", "continuous", "discrete")
#: The most intensity levels the "discrete" data kind takes (8-bit images).
MAX_DISCRETE_LEVELS = 256
#: Likelihood names :func:`fit_preprocessing` also accepts in place of a data kind (vaekit 0.1's API).
LIKELIHOODS: tuple[str, ...] = ("bernoulli", "gaussian")
_KIND_OF_LIKELIHOOD = {"bernoulli": "binary", "gaussian": "continuous"}
#: What :func:`fit_preprocessing` may do to continuous tabular data: standardise each column, or nothing.
STANDARDIZE: tuple[str, ...] = ("columns", "none")

_FIELDS = ("kind", "levels", "mean", "std", "binarize", "dequantize")


def _range_text(x: np.ndarray) -> str:
    """Return ``"[min, max]"`` of the finite values of ``x``."""
    return f"[{float(np.min(x)):.6g}, {float(np.max(x)):.6g}]"


@dataclass(frozen=True)
class Preprocessing:
    """How raw data become model inputs; JSON-serialisable via :meth:`to_dict`.

    ``kind`` is ``"image"`` or ``"tabular"``; ``levels`` the number of discrete intensity levels
    (images) or None; ``mean``/``std`` the per-feature standardisation (tabular) or None;
    ``binarize`` and ``dequantize`` choose the random part, see the module docstring.
    """

    kind: str
    levels: int | None
    mean: list[float] | None
    std: list[float] | None
    binarize: bool
    dequantize: bool

    def __post_init__(self) -> None:
        """Validate the fields; raise :class:`ConfigError` for impossible combinations."""
        if self.kind not in ("image", "tabular"):
            raise ConfigError(f"preprocessing.kind: expected 'image' or 'tabular', got {self.kind!r}")
        if self.levels is not None and (
            isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2
        ):
            raise ConfigError(f"preprocessing.levels: expected an integer >= 2 or None, got {self.levels!r}")
        for flag in ("binarize", "dequantize"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"preprocessing.{flag}: expected true or false, got {getattr(self, flag)!r}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("preprocessing.mean/std: give both or neither")
        if self.mean is not None and self.std is not None:
            if self.kind != "tabular":
                raise ConfigError("preprocessing.mean/std: standardisation applies to tabular data only")
            for option, values in (("mean", self.mean), ("std", self.std)):
                if not isinstance(values, list) or not values or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
                ):
                    raise ConfigError(f"preprocessing.{option}: expected a non-empty list of finite numbers")
            if len(self.mean) != len(self.std):
                raise ConfigError(
                    f"preprocessing.mean/std: lengths differ ({len(self.mean)} vs {len(self.std)})"
                )
            if any(s <= 0 for s in self.std):
                raise ConfigError("preprocessing.std: every standard deviation must be positive")
        if self.binarize and self.dequantize:
            raise ConfigError("preprocessing: binarize and dequantize are mutually exclusive")
        if self.dequantize and (self.kind != "image" or self.levels is None):
            raise ConfigError("preprocessing.dequantize: needs image data with discrete levels")
        if self.binarize and self.mean is not None:
            raise ConfigError("preprocessing.binarize: cannot be combined with standardisation")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict; :meth:`from_dict` inverts it."""
        return {
            "kind": self.kind,
            "levels": self.levels,
            "mean": None if self.mean is None else [float(v) for v in self.mean],
            "std": None if self.std is None else [float(v) for v in self.std],
            "binarize": self.binarize,
            "dequantize": self.dequantize,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict`'s output; unknown or missing keys raise :class:`ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"preprocessing: expected a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_FIELDS), key=str)
        if unknown:
            raise ConfigError(f"preprocessing: unknown key(s) {', '.join(map(repr, unknown))}")
        missing = [k for k in _FIELDS if k not in d]
        if missing:
            raise ConfigError(f"preprocessing: missing key(s) {', '.join(map(repr, missing))}")
        values = dict(d)
        for key in ("mean", "std"):
            if isinstance(values[key], tuple):
                values[key] = list(values[key])
        return cls(**values)

    def prepare(self, x: np.ndarray) -> torch.Tensor:
        """Apply the deterministic scaling to raw values ``x``; return a float32 tensor.

        Raises :class:`DataError` for non-finite values, image values outside ``0..levels-1``
        (or outside [0, 1] without levels) and a feature count that differs from ``mean``.
        """
        x = np.asarray(x)
        if x.dtype.kind not in "buif":
            raise DataError(f"prepare: input of dtype {x.dtype} is not numeric")
        if x.size and x.dtype.kind == "f":
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            if bad:
                raise DataError(f"prepare: input has {bad} non-finite value(s) (NaN or Inf)")
        if self.kind == "image":
            if self.levels is not None:
                top = self.levels - 1
                if x.size and (np.min(x) < 0 or np.max(x) > top):
                    raise DataError(
                        f"prepare: image values must lie in 0..{top} for {self.levels} levels, "
                        f"found {_range_text(x)}"
                    )
                out = x.astype(np.float32) / np.float32(top)
            else:
                if x.size and (np.min(x) < 0 or np.max(x) > 1):
                    raise DataError(
                        f"prepare: float images must lie in [0, 1], found {_range_text(x)}; "
                        "rescale them or store them as uint8"
                    )
                out = x.astype(np.float32)
        else:
            if self.mean is not None and self.std is not None:
                if x.ndim < 1 or x.shape[-1] != len(self.mean):
                    raise DataError(
                        f"prepare: input has {x.shape[-1] if x.ndim else 0} features, "
                        f"the preprocessing was fitted on {len(self.mean)}"
                    )
                mean = np.asarray(self.mean, dtype=np.float64)
                std = np.asarray(self.std, dtype=np.float64)
                out = ((x.astype(np.float64) - mean) / std).astype(np.float32)
            else:
                out = x.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(out))

    @property
    def log_jacobian(self) -> float:
        """The log-Jacobian of :meth:`prepare` per example, log |det d prepare(x) / dx|, that turns
        the model's log-densities into those of the data in the user's units (module docstring):
        ``-sum_d log std_d`` for standardised tabular data, 0 otherwise (unstandardised tables, and
        images, whose numbers stay on the [0, 1] scale by convention). In float64."""
        if self.std is None:
            return 0.0
        return -math.fsum(math.log(float(s)) for s in self.std)

    @property
    def standardized(self) -> bool:
        """Whether :meth:`prepare` standardises the columns (``--standardize columns``)."""
        return self.mean is not None

    @property
    def random(self) -> bool:
        """Whether :meth:`augment` draws random numbers (binarisation or dequantisation)."""
        return self.binarize or self.dequantize

    def augment(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                uniform: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the random part to a prepared batch ``x`` (on ``x``'s device).

        ``binarize``: ``torch.bernoulli(x)``. ``dequantize``: ``(k + u) / L`` with
        ``k = round(x * (L - 1))`` and ``u ~ U[0, 1)``, clipped below ``(k + 1) / L`` against
        float rounding, so the result lies in ``[k/L, (k+1)/L)``. Otherwise ``x`` itself.
        ``generator`` (on ``x``'s device) makes the draw reproducible. ``uniform`` (x's shape,
        values in [0, 1)) supplies the draws instead: binarisation is then ``1[u < x]``, the same
        law as ``torch.bernoulli`` (the trainer draws them for a whole global batch).
        """
        if uniform is not None and tuple(uniform.shape) != tuple(x.shape):
            raise DataError(f"augment: uniform draws of shape {tuple(uniform.shape)} do not match the batch "
                            f"{tuple(x.shape)}")
        if self.binarize:
            if uniform is not None:
                return (uniform < x).to(x.dtype)
            return torch.bernoulli(x, generator=generator)
        if self.dequantize:
            levels = float(self.levels)  # type: ignore[arg-type]
            k = torch.round(x * (levels - 1.0))
            u = uniform if uniform is not None else torch.rand(x.shape, generator=generator, device=x.device,
                                                                dtype=x.dtype)
            y = (k + u) / levels
            upper = torch.nextafter((k + 1.0) / levels, torch.zeros_like(y))
            return torch.minimum(y, upper)
        return x


def _summary(blocks, need_moments: bool, name: str) -> tuple[int, float, float, np.ndarray | None, np.ndarray | None]:
    """(count, min, max, per-feature mean, per-feature sum of squared deviations) over blocks of
    rows, merged exactly (Chan et al.'s pairwise update); one block gives numpy's own figures."""
    count, lo, hi, mean, m2 = 0, math.inf, -math.inf, None, None
    for block in blocks:
        if block.shape[0] == 0:
            continue
        if block.dtype.kind == "f" and not np.all(np.isfinite(block)):
            raise DataError(f"{name}: the training split has non-finite values (NaN or Inf)")
        lo, hi = min(lo, float(np.min(block))), max(hi, float(np.max(block)))
        if need_moments:
            flat = block.reshape(block.shape[0], -1).astype(np.float64)
            b_mean = flat.mean(axis=0)
            b_m2 = ((flat - b_mean) ** 2).sum(axis=0)
            if mean is None:
                mean, m2 = b_mean, b_m2
            else:
                total = count + flat.shape[0]
                delta = b_mean - mean
                mean = mean + delta * (flat.shape[0] / total)
                m2 = m2 + b_m2 + delta**2 * (count * flat.shape[0] / total)
        count += block.shape[0]
    return count, lo, hi, mean, m2


def fit_preprocessing(dataset: Dataset, kind: str, *, standardize: str = "columns") -> Preprocessing:
    """Choose and fit the preprocessing of ``dataset`` for a likelihood whose data are ``kind``:
    ``"binary"`` (a Bernoulli likelihood), ``"continuous"`` (a Gaussian one) or ``"discrete"`` (a
    discretized logistic), the likelihood's ``data_kind``. The likelihood names ``"bernoulli"`` and
    ``"gaussian"`` are accepted too.

    * binary images: ``binarize=True`` (dynamic binarisation);
    * continuous images with levels: ``dequantize=True``; float images: nothing;
    * discrete images (L <= 256 levels): the levels k / (L - 1) themselves, neither dequantised nor
      binarised; tabular data, float images or more levels are a ConfigError;
    * continuous tabular data: with ``standardize="columns"`` (the default) standardise with the
      training mean and population std (columns with std 0 get std 1); with ``"none"`` use the
      values as they are;
    * binary tabular data: the values must already lie in [0, 1] (else :class:`DataError`) and
      are used as they are.

    ``standardize`` applies to continuous tabular data only; images and binary data ignore it.
    An unknown ``kind`` or ``standardize`` raises :class:`ConfigError`.
    """
    if standardize not in STANDARDIZE:
        raise ConfigError(f"standardize: expected one of {', '.join(STANDARDIZE)}, got {standardize!r}")
    if kind in _KIND_OF_LIKELIHOOD:
        needs = f"the {kind} likelihood"
        kind = _KIND_OF_LIKELIHOOD[kind]
    elif kind in DATA_KINDS:
        needs = {"binary": "a binary likelihood (bernoulli)", "continuous": "a continuous likelihood",
                 "discrete": "a discretized likelihood"}[kind]
    else:
        raise ConfigError(f"data kind: expected one of {', '.join(DATA_KINDS)} (or a likelihood name, "
                          f"{' or '.join(LIKELIHOODS)}), got {kind!r}")
    if dataset.kind not in ("image", "tabular"):
        raise ConfigError(f"{dataset.name}: unknown dataset kind {dataset.kind!r}")
    iter_blocks = getattr(dataset.train, "iter_blocks", None)   # a vaekit.data.stream.NpyStream: one pass
    streamed = iter_blocks is not None
    need_moments = dataset.kind == "tabular" and kind == "continuous" and standardize == "columns"
    if streamed and dataset.kind == "image" and dataset.levels is not None:
        count, lo, hi, mean, m2 = len(dataset.train), 0.0, 0.0, None, None   # each block's range is checked on reading
    else:
        blocks = iter_blocks() if iter_blocks is not None else [np.asarray(dataset.train)]
        count, lo, hi, mean, m2 = _summary(blocks, need_moments, dataset.name)
    if count == 0:
        raise DataError(f"{dataset.name}: the training split is empty")
    found = f"[{lo:.6g}, {hi:.6g}]"

    if kind == "discrete":
        if dataset.kind != "image" or dataset.levels is None or dataset.levels > MAX_DISCRETE_LEVELS:
            what = ("tabular data" if dataset.kind != "image" else "float images (no integer levels)"
                    if dataset.levels is None else f"images of {dataset.levels} levels")
            raise ConfigError(f"likelihood: {needs} models the integer levels of images of at most "
                              f"{MAX_DISCRETE_LEVELS} levels (8-bit); {dataset.name} holds {what}; use likelihood "
                              "gaussian or bernoulli")
        return Preprocessing(kind="image", levels=dataset.levels, mean=None, std=None, binarize=False,
                             dequantize=False)
    if dataset.kind == "image":
        if dataset.levels is None and (lo < 0 or hi > 1):
            raise DataError(f"{dataset.name}: float images must lie in [0, 1], found {found}")
        return Preprocessing(
            kind="image",
            levels=dataset.levels,
            mean=None,
            std=None,
            binarize=kind == "binary",
            dequantize=kind == "continuous" and dataset.levels is not None,
        )

    if kind == "binary":
        if lo < 0 or hi > 1:
            raise DataError(
                f"{dataset.name}: {needs} needs data in [0, 1], found {found}; use likelihood gaussian"
            )
        return Preprocessing("tabular", None, None, None, binarize=False, dequantize=False)
    if standardize == "none":
        return Preprocessing("tabular", None, None, None, binarize=False, dequantize=False)

    assert mean is not None and m2 is not None          # need_moments: continuous tabular data
    std = np.sqrt(m2 / count)
    std = np.where(std > 0, std, 1.0)
    return Preprocessing(
        kind="tabular",
        levels=None,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        binarize=False,
        dequantize=False,
    )
