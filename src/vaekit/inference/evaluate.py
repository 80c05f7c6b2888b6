"""Evaluation of a trained VAE on a data set: the numbers a paper's results table reports.

For examples x_1..x_n (nats per example, means over the n examples):

* ``elbo`` = ``reconstruction`` - ``kl``, from :func:`vaekit.inference.objectives.elbo_terms` with the
  closed-form KL(q_x(z) || p(z)) (where there is none, e.g. an IAF posterior, its Monte Carlo estimate
  mean [log q(z) − log p(z)] on the same draws) and ``elbo_samples`` reparameterised draws per example for
  E_q[log p(x|z)] (default ONE: unbiased, its Monte Carlo noise averages out over many examples;
  raise it for few examples);
* ``log_likelihood`` = mean_i log p̂(x_i), importance-sampled with K = ``importance_samples``
  draws from q_x(z) (:func:`vaekit.inference.estimators.estimate_log_likelihood`; a stochastic lower bound
  whose bias shrinks as 1/K);
* ``log_likelihood_se``: with s_i the per-example delta-method standard error of log p̂(x_i) and
  v the across-example sample variance of the log p̂(x_i) (ddof 1),

      se = sqrt( v / n + Σ_i s_i² / n² ),

  the standard error of the mean as an estimate of E_x log p(x): the first term is the spread of
  the data (it also contains the Monte Carlo noise, so the sum errs on the conservative side), the
  second the Monte Carlo error of the n estimates themselves;
* ``posterior_gap`` = mean_i [log p̂(x_i) - mean_k log w_ik], the estimate of
  KL(q_x(z) || p(z|x)) from the same K draws (so it is not exactly ``log_likelihood - elbo``,
  whose ELBO comes from separate draws);
* ``pareto_k_max``, ``pareto_k_mean``: the largest and the mean over the examples of the PSIS k̂ of each
  example's K importance weights (:mod:`vaekit.inference.pareto`; None for K < 25); ``unreliable_examples``:
  how many have k̂ > 0.7, where log p̂(x_i) and s_i, hence ``log_likelihood`` and its SE, are unreliable (the
  CLI warns); ``effective_sample_size_mean``, ``effective_sample_size_min``: of Kish's (Σ w)² / Σ w² per example;
* ``active_units``: dims with Cov_x(E_q[z_u]) > 0.01 (:func:`vaekit.inference.estimators.active_units`);
* ``bits_per_dim`` (a density likelihood, e.g. Gaussian, on dequantised images with ``levels`` L only):
  -(log_likelihood - D log L) / (D log 2) (:func:`vaekit.inference.estimators.bits_per_dim`); for a
  model of the exact probabilities of the levels (``model.probability_of_levels``: the discretized
  likelihoods) -log_likelihood / (D log 2) (:func:`vaekit.inference.estimators.level_bits_per_dim`),
  whatever ``levels`` says;
* ``exact_log_likelihood``, ``exact_posterior_gap``, ``exact_elbo`` (a model whose ``closed_form()`` is
  known: affine Gaussian decoder): the closed forms mean_i log N(x_i; b, WWᵀ + Ψ), mean_i KL(q_{x_i}(z) ||
  p(z|x_i)) and mean_i ELBO(x_i; q_{x_i}) of :class:`vaekit.LinearGaussian`, computed in float64; with a
  Gaussian posterior (diagonal or full) the gap's two parts below are then closed forms too, always reported
  and never searched for by Monte Carlo (``refinement`` is ignored): ``approximation_gap`` = min over the family
  of KL(q || p(z|x)) (0 for a full covariance, ½ (Σ_j log Λ_jj − log det Λ) for a diagonal one),
  ``amortisation_gap`` = ``exact_posterior_gap`` − ``approximation_gap``, ``refined_elbo`` = exact log p(x) −
  ``approximation_gap``; their SEs are the spread over the examples alone. ``exact`` names every field
  computed in closed form (the others are Monte Carlo estimates);
* with ``refinement`` (:mod:`vaekit.inference.gaps`): ``refined_elbo`` = mean_i ELBO(x_i; q*_{x_i}), the
  best posterior of the family per example, ``refined_log_likelihood`` = mean_i log p̂(x_i) importance-
  sampled with q* as the proposal, ``amortisation_gap`` = mean_i [ELBO(q*) - ELBO(q)],
  ``approximation_gap`` = mean_i [log p̂(x_i) - ELBO(q*)] with the tighter (larger on average) of the two
  log p̂ estimates, their standard errors, and the settings used; and the two ends they span,
  ``gap_elbo`` = mean_i ELBO(x_i; q_{x_i}) by the gap's ``elbo_samples`` draws and ``gap_log_likelihood``
  = that tighter log p̂ (proposal ``gap_proposal``, "q" or "q*"), so that amortisation + approximation =
  gap_log_likelihood − gap_elbo exactly. This sum differs from ``posterior_gap`` (other draws, and
  perhaps another proposal): print it beside its own ends, not beside ``posterior_gap``.

``log_jacobian`` (a number, default 0): the log-Jacobian of the map from the data as the user gave
them to the model's inputs, per example (e.g. ``-sum_d log std_d`` of standardised columns,
:attr:`vaekit.data.Preprocessing.log_jacobian`). It is added to every log-density reported, ``elbo``,
``reconstruction``, ``log_likelihood``, ``exact_log_likelihood``, ``refined_elbo``,
``refined_log_likelihood``, ``gap_elbo`` and ``gap_log_likelihood``, so they are densities of the data in
the user's units, and recorded as ``log_jacobian``. Differences of
log-densities (``kl``, the gaps, the standard errors) do not change; nor does ``bits_per_dim``, a
probability of the discrete levels computed from the model's own log p(y) on [0, 1].

Randomness comes from torch's global generator: call ``torch.manual_seed`` first to reproduce.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from vaekit.allocator import keep_freed_memory
from vaekit.data.inputs import as_examples
from vaekit.errors import ConfigError
from vaekit.inference.estimators import active_units, bits_per_dim, estimate_log_likelihood, level_bits_per_dim
from vaekit.inference.gaps import Refinement, gap_terms
from vaekit.inference.objectives import check_batch, elbo_terms
from vaekit.inference.pareto import K_HAT_THRESHOLD
from vaekit.models.protocol import LatentModel, with_labels

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """The results of :func:`evaluate`; every value in nats per example unless named otherwise."""

    n: int
    elbo: float
    log_likelihood: float
    log_likelihood_se: float
    kl: float
    reconstruction: float
    posterior_gap: float
    active_units: int
    latent_dim: int
    importance_samples: int
    bits_per_dim: float | None = None
    exact_log_likelihood: float | None = None
    exact_posterior_gap: float | None = None
    exact_elbo: float | None = None
    refined_elbo: float | None = None
    refined_log_likelihood: float | None = None
    amortisation_gap: float | None = None
    amortisation_gap_se: float | None = None
    approximation_gap: float | None = None
    approximation_gap_se: float | None = None
    refinement: dict[str, Any] | None = None
    log_jacobian: float = 0.0
    pareto_k_max: float | None = None
    pareto_k_mean: float | None = None
    unreliable_examples: int = 0
    effective_sample_size_mean: float | None = None
    effective_sample_size_min: float | None = None
    exact: tuple[str, ...] = ()
    gap_elbo: float | None = None
    gap_log_likelihood: float | None = None
    gap_proposal: str | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict: ints, finite floats, and None (also for NaN or infinite values)."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[key] = value
        return out


def device_dtype(model: LatentModel) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's first floating parameter or buffer."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum``, else a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return value


def check_sampling_options(importance_samples: int, levels: int | None, chunk_size: int | None,
                           log_jacobian: float) -> int:
    """The options that :func:`evaluate` and :func:`vaekit.inference.scores.score` share, checked: K >= 1,
    levels >= 2 and chunk_size >= 1 where given, a finite log-Jacobian. Returns K."""
    importance_samples = check_int(importance_samples, "importance_samples", 1)
    if levels is not None:
        check_int(levels, "levels", 2)
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", 1)
    if isinstance(log_jacobian, bool) or not isinstance(log_jacobian, (int, float)) or not math.isfinite(log_jacobian):
        raise ConfigError(f"log_jacobian: must be a finite number, got {log_jacobian!r}")
    return importance_samples


def _batches(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, x.shape[0], batch_size):
        yield x[start:start + batch_size]


@dataclass(frozen=True)
class _Exact:
    """Closed-form terms of an affine Gaussian decoder, per example (N,), float64: log p(x_i), ELBO(x_i; q_i),
    KL(q_i || p(z|x_i)) and the approximation gap min_{q ∈ Q} KL(q || p(z|x_i)) of the posterior's family Q
    (0 for a full covariance, ½ (Σ log Λ_jj − log det Λ) for a diagonal one); the last three None for a
    posterior that is not Gaussian (an IAF), the approximation gap None also for a chain of layers."""

    log_p: Tensor
    elbo: Tensor | None
    gap: Tensor | None
    approximation: Tensor | None


def _exact(model, x: Tensor, batch_size: int) -> _Exact:
    """The closed forms of :class:`_Exact` for the examples x, in float64 (:class:`vaekit.LinearGaussian`)."""
    model64 = copy.deepcopy(model).double()
    truth = model64.closed_form()
    family = getattr(truth, "family_approximation_gap", None)   # None: a chain of layers (no family gap)
    log_p, elbo, gap, approx = [], [], [], []
    gaussian = True
    for xb in _batches(x, batch_size):
        xb = xb.double()
        flat = xb.reshape(xb.shape[0], -1)
        log_p.append(truth.log_marginal(flat))
        q = model64.encode(xb)
        try:                                                  # the closed forms need a Gaussian q
            best = family(q) if family is not None else None
            elbo.append(truth.elbo(flat, q))
            gap.append(truth.kl_to_posterior(flat, q))
        except TypeError:                                     # e.g. an IAF posterior
            gaussian = False
            continue
        if best is not None:
            approx.append(best.expand(flat.shape[0]))
    if not gaussian:
        return _Exact(torch.cat(log_p), None, None, None)
    return _Exact(torch.cat(log_p), torch.cat(elbo), torch.cat(gap), torch.cat(approx) if approx else None)


def _exact_split(exact: _Exact, shift: float) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The Evaluation fields the closed forms give, and their names: exact log p(x) and, for a Gaussian
    posterior, the posterior gap and its two parts (amortisation = KL(q || p(z|x)) − approximation, since
    ELBO(q) = log p(x) − KL(q || p(z|x)) for every q), each mean with the SE of its mean over the examples
    (data spread only: no Monte Carlo error), and the best member's ELBO, log p(x) − approximation gap."""
    n = exact.log_p.shape[0]
    fields: dict[str, Any] = {"exact_log_likelihood": float(exact.log_p.mean()) + shift}
    if exact.gap is None or exact.elbo is None:
        return fields, ("exact_log_likelihood",)
    if exact.approximation is None:                           # no closed-form family gap (a chain of layers)
        fields |= {"exact_posterior_gap": float(exact.gap.mean()), "exact_elbo": float(exact.elbo.mean()) + shift}
        return fields, tuple(fields)
    amortisation = exact.gap - exact.approximation
    fields |= {"exact_posterior_gap": float(exact.gap.mean()), "exact_elbo": float(exact.elbo.mean()) + shift,
               "amortisation_gap": float(amortisation.mean()),
               "amortisation_gap_se": float(amortisation.std(correction=1)) / math.sqrt(n),
               "approximation_gap": float(exact.approximation.mean()),
               "approximation_gap_se": float(exact.approximation.std(correction=1)) / math.sqrt(n),
               "refined_elbo": float((exact.log_p - exact.approximation).mean()) + shift}
    return fields, tuple(fields)


@torch.no_grad()
def evaluate(model: LatentModel, x: Any, *, importance_samples: int = 5000, batch_size: int = 256,
             levels: int | None = None, progress: bool | Callable[..., Any] = False, chunk_size: int | None = None,
             elbo_samples: int = 1, refinement: Refinement | None = None,
             gap_elbo_samples: int = 1000, log_jacobian: float = 0.0, y: Any = None) -> Evaluation:
    """Evaluate ``model`` (a :class:`~vaekit.models.protocol.LatentModel`) on x (N, *data_shape),
    N >= 2, as prepared for the model (binarised or dequantised already): a tensor, a numpy array,
    a ``torch.utils.data.Dataset`` or a ``DataLoader`` (:func:`vaekit.data.as_examples`).
    ``levels`` L: the data are images with L levels, uniformly dequantised, which enables
    ``bits_per_dim`` for a likelihood that is a density (``model.density_on_dequantised``).
    ``chunk_size`` bounds the importance draws held at once (default:
    :func:`vaekit.inference.estimators.default_chunk_size`). ``progress`` shows a tqdm bar (on
    stderr); a callable is a bar class taking tqdm's arguments (the command line's plain
    lines). The model is put in eval mode and restored afterwards.

    ``refinement``: also split the posterior gap into the amortisation and approximation gaps
    (:mod:`vaekit.inference.gaps`): each example's best posterior of the family is found with these
    settings, and ELBO(q_x) and ELBO(q*_x) are estimated with ``gap_elbo_samples`` common draws;
    ``amortisation_gap`` = mean [ELBO(q*_x) − ELBO(q_x)], ``approximation_gap`` = mean [log p̂(x) −
    ELBO(q*_x)], each with the standard error of its mean over the examples.

    ``log_jacobian``: added to the reported log-densities (module docstring); a finite number.

    ``y``: the examples' labels (N,), for a conditional model (:mod:`vaekit.models.conditional`); every
    number is then given y: the ELBO of x given y, ``log_likelihood`` the estimate of log p(x|y), the
    posterior gap of q(z|x, y). A conditional model without labels, or labels for an unconditional model,
    is a ConfigError.

    Calls :func:`vaekit.allocator.keep_freed_memory` (about 2× faster importance sampling on the CPU).
    """
    keep_freed_memory()
    if not isinstance(x, Tensor):
        x = as_examples(x, name="x", data_shape=tuple(model.data_shape))
        if not isinstance(x, Tensor):
            raise ConfigError("x: evaluate needs the examples in memory, not a streamed file")
    check_batch(model, x)
    importance_samples = check_sampling_options(importance_samples, levels, chunk_size, log_jacobian)
    elbo_samples = check_int(elbo_samples, "elbo_samples", 1)
    gap_elbo_samples = check_int(gap_elbo_samples, "gap_elbo_samples", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    shift = float(log_jacobian)
    n = x.shape[0]
    if n < 2:
        raise ConfigError(f"evaluate: needs at least 2 examples (active units are a variance), got {n}")
    device, dtype = device_dtype(model)
    x = x.to(device=device, dtype=dtype)
    with_labels(model, y)                      # a conditional model without labels, or labels without one: refused
    labels: Tensor | None = None
    if y is not None:
        labels = model.labels(y.cpu() if isinstance(y, Tensor) else y, n).expand(n)   # checked on the host

    was_training = model.training
    model.eval()
    try:
        from tqdm.auto import tqdm

        exact = _exact(model, x, batch_size) if model.closed_form() is not None else None
        if exact is not None and exact.gap is not None:
            refinement = None                 # every gap term is known in closed form: no Monte Carlo search

        sums = dict.fromkeys(("elbo", "kl", "reconstruction", "gap"), 0.0)
        log_p, se, elbo_q, elbo_best, log_p_refined, k_hat, ess = [], [], [], [], [], [], []
        bar_class = progress if callable(progress) else tqdm      # a callable: a bar of that class
        with bar_class(total=n, desc="evaluate", unit="example", disable=not progress, leave=False) as bar:
            for start, xb in zip(range(0, n, batch_size), _batches(x, batch_size), strict=True):
                yb = None if labels is None else labels[start:start + batch_size]
                terms = elbo_terms(model, xb, n_samples=elbo_samples, analytic_kl=True, y=yb)
                sums["elbo"] += float(terms.elbo.double().sum())
                sums["kl"] += float(terms.kl.double().sum())
                sums["reconstruction"] += float(terms.reconstruction.double().sum())
                est = estimate_log_likelihood(model, xb, n_samples=importance_samples, chunk_size=chunk_size, y=yb)
                log_p.append(est.log_likelihood.double().cpu())
                se.append(est.standard_error.double().cpu())
                k_hat.append(est.pareto_k.double().cpu())
                ess.append(est.effective_sample_size.double().cpu())
                sums["gap"] += float(est.posterior_gap.double().sum())
                if refinement is not None:
                    gaps = gap_terms(model, xb, refinement, elbo_samples=gap_elbo_samples, chunk_size=chunk_size,
                                     y=yb)
                    elbo_q.append(gaps.elbo.double().cpu())
                    elbo_best.append(gaps.refined_elbo.double().cpu())
                    refined_est = estimate_log_likelihood(model, xb, n_samples=importance_samples,
                                                          chunk_size=chunk_size, proposal=gaps.refined, y=yb)
                    log_p_refined.append(refined_est.log_likelihood.double().cpu())
                bar.update(xb.shape[0])
        units = active_units(model, _batches(x, batch_size) if labels is None
                             else zip(_batches(x, batch_size), _batches(labels, batch_size), strict=True))
        log_p_all, se_all = torch.cat(log_p), torch.cat(se)
        mean_log_p = float(log_p_all.mean())
        spread = float(log_p_all.var(correction=1))
        ll_se = math.sqrt(spread / n + float((se_all**2).sum()) / n**2)
        weights = _weight_summary(torch.cat(k_hat), torch.cat(ess))

        bpd = None
        d = math.prod(model.data_shape)
        if getattr(model, "probability_of_levels", False):          # exact probabilities: no dequantisation term
            bpd = float(level_bits_per_dim(torch.tensor(mean_log_p, dtype=torch.float64), d))
        elif levels is not None and model.density_on_dequantised:
            bpd = float(bits_per_dim(torch.tensor(mean_log_p, dtype=torch.float64), d, levels=levels))
        split: dict[str, Any] = {}
        if refinement is not None:
            best, log_p_star = torch.cat(elbo_best), torch.cat(log_p_refined)
            # log p(x) by the tighter of the two importance samplers (proposal q_x or q*_x): both are
            # lower bounds in expectation, and a loose one would shrink the approximation gap
            tighter = log_p_star if float(log_p_star.mean()) > mean_log_p else log_p_all
            amortisation, approximation = best - torch.cat(elbo_q), tighter - best
            split = {"gap_elbo": float(torch.cat(elbo_q).mean()) + shift,      # the two ends the gaps run between
                     "gap_log_likelihood": float(tighter.mean()) + shift,
                     "gap_proposal": "q*" if tighter is log_p_star else "q",
                     "refined_elbo": float(best.mean()) + shift,
                     "refined_log_likelihood": float(log_p_star.mean()) + shift,
                     "refinement": {**refinement.to_dict(), "elbo_samples": gap_elbo_samples},
                     "amortisation_gap": float(amortisation.mean()),
                     "amortisation_gap_se": float(amortisation.std(correction=1)) / math.sqrt(n),
                     "approximation_gap": float(approximation.mean()),
                     "approximation_gap_se": float(approximation.std(correction=1)) / math.sqrt(n)}
        exact_fields, exact_names = _exact_split(exact, shift) if exact is not None else ({}, ())
    finally:
        model.train(was_training)

    return Evaluation(n=n, elbo=sums["elbo"] / n + shift, log_likelihood=mean_log_p + shift, log_likelihood_se=ll_se,
                      kl=sums["kl"] / n, reconstruction=sums["reconstruction"] / n + shift,
                      posterior_gap=sums["gap"] / n, active_units=units.count, latent_dim=int(model.latent_dim),
                      importance_samples=importance_samples, bits_per_dim=bpd,
                      log_jacobian=shift, exact=exact_names, **weights, **split, **exact_fields)


def _weight_summary(k_hat: Tensor, ess: Tensor) -> dict[str, Any]:
    """The split's summary of the per-example PSIS k̂ (N,) and effective sample sizes (N,) (NaN k̂: too few draws)."""
    fitted = k_hat[~torch.isnan(k_hat)]
    return {"pareto_k_max": float(fitted.max()) if fitted.numel() else None,
            "pareto_k_mean": float(fitted.mean()) if fitted.numel() else None,
            "unreliable_examples": int((fitted > K_HAT_THRESHOLD).sum()),
            "effective_sample_size_mean": float(ess.mean()), "effective_sample_size_min": float(ess.min())}
