"""The distributions of the seed's model, built on ``torch.distributions``.

* prior                p(z)   = N(0, I)                  -> :func:`standard_normal`
* decoder (Gaussian)   p(x|z) = N(f(z), cI)              -> :class:`DiagonalNormal` (c fixed/learned),
                                                            :class:`ProfiledNormal` (c optimal)
* decoder (binary)     p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d))  -> :func:`bernoulli`
* encoder              q_x(z) = N(g(x), h(x))            -> :class:`DiagonalNormal` (h diagonal) or
                                                            ``MultivariateNormal`` (h = L Lᵀ)

Every ``log_prob`` sums over the dimensions of one example (the event dimensions), never averages:
the value is the log-density of the whole example under the model.

KL divergences are registered with ``torch.distributions.kl.register_kl`` and found by type;
:func:`kl_divergence` falls back to a Monte Carlo estimate where no closed form is registered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent, MultivariateNormal, Normal
from torch.distributions.kl import kl_divergence as _torch_kl
from torch.distributions.kl import register_kl

from vaekit.errors import ConfigError, ShapeError

__all__ = [
    "DiagonalNormal",
    "ProfiledNormal",
    "bernoulli",
    "standard_normal",
    "kl_summed_over_dimensions",
    "kl_divergence",
    "as_multivariate_normal",
    "rsample_with_log_prob",
    "kl_per_dimension",
    "marginal_moments",
    "noise_shape",
    "Reduction",
    "stop_gradient",
]


class DiagonalNormal(Independent):
    """N(loc, diag(scale²)) whose last ``event_ndims`` dimensions form one example.

    ``log_prob(x) = sum_d [ -(x_d - loc_d)² / (2 scale_d²) - log scale_d - ½ log 2π ]`` over the
    event dimensions; the result has the batch shape.
    """

    def __init__(self, loc: Tensor, scale: Tensor, event_ndims: int = 1, validate_args: bool | None = None):
        loc, scale = torch.broadcast_tensors(loc, scale)
        super().__init__(Normal(loc, scale, validate_args=validate_args), event_ndims, validate_args=validate_args)

    @property
    def loc(self) -> Tensor:
        return self.base_dist.loc

    @property
    def scale(self) -> Tensor:
        return self.base_dist.scale

    def expand(self, batch_shape, _instance=None):  # noqa: D102 - torch API
        shape = torch.Size(batch_shape) + self.event_shape
        return DiagonalNormal(self.loc.expand(shape), self.scale.expand(shape), len(self.event_shape))


#: A reduction of a batch's elementwise statistics to their mean, c* = reduce(squared residuals):
#: by default the mean over the tensor given; under data parallelism the trainer passes the mean
#: over every rank's part of the global batch (:func:`vaekit.training.distributed.global_mean`).
Reduction = Callable[[Tensor], Tensor]


class ProfiledNormal(DiagonalNormal):
    """N(loc, c I) with c replaced, in ``log_prob``, by its maximiser c* on the data given.

    For a shared variance the maximiser of ``sum log N(x; loc, cI)`` over a batch is the mean
    squared residual, c* = mean((x - loc)²) over every element of the batch (σ-VAE, Rybkin et al.
    2021). ``log_prob(x)`` returns ``sum_d log N(x_d; loc_d, c*)`` per example with c* treated as a
    constant (detached: at the optimum ∂/∂c = 0, so gradients w.r.t. ``loc`` are unchanged).
    ``reduce`` (a :data:`Reduction`) averages the squared residuals into c*: their mean over this
    tensor by default, the mean over the global batch when the caller passes one.
    ``on_estimate(c*)`` is called with each new c* (the decoder keeps a running estimate with it);
    sampling uses the ``scale`` given at construction (the running estimate).
    """

    def __init__(self, loc: Tensor, scale: Tensor, event_ndims: int,
                 on_estimate: Callable[[Tensor], None] | None = None, reduce: Reduction | None = None):
        super().__init__(loc, scale, event_ndims)
        self._on_estimate = on_estimate
        self._reduce = reduce

    def log_prob(self, value: Tensor) -> Tensor:
        residual_sq = (value - self.loc) ** 2
        mean = residual_sq.detach().mean() if self._reduce is None else self._reduce(residual_sq.detach())
        c_star = mean.clamp_min(torch.finfo(residual_sq.dtype).tiny)
        if self._on_estimate is not None:
            self._on_estimate(c_star)
        per_element = -0.5 * (residual_sq / c_star + torch.log(2 * math.pi * c_star))
        return per_element.flatten(-len(self.event_shape)).sum(-1)


def bernoulli(logits: Tensor, event_ndims: int) -> Independent:
    """prod_d Bernoulli(x_d; sigmoid(logits_d)) over the last ``event_ndims`` dimensions.

    ``log_prob(x) = sum_d [x_d logits_d - softplus(logits_d)]`` (valid for x in [0, 1]).
    """
    return Independent(Bernoulli(logits=logits, validate_args=False), event_ndims)


def standard_normal(latent_dim: int, *, device=None, dtype=None) -> DiagonalNormal:
    """The prior p(z) = N(0, I) over ``latent_dim`` dimensions (event shape ``(latent_dim,)``)."""
    zeros = torch.zeros(latent_dim, device=device, dtype=dtype)
    return DiagonalNormal(zeros, torch.ones_like(zeros))


def as_multivariate_normal(q: Distribution) -> MultivariateNormal:
    """View a Gaussian over vectors (diagonal or full covariance) as a ``MultivariateNormal``."""
    if isinstance(q, MultivariateNormal):
        return q
    if isinstance(q, DiagonalNormal) and len(q.event_shape) == 1:
        return MultivariateNormal(q.loc, scale_tril=torch.diag_embed(q.scale))
    raise TypeError(f"as_multivariate_normal: expected a Gaussian over vectors, got {type(q).__name__}")


@register_kl(MultivariateNormal, DiagonalNormal)
def _kl_mvn_diagonal(q: MultivariateNormal, p: DiagonalNormal) -> Tensor:
    """KL(N(m, LLᵀ) || N(μ, diag s²)) = ½ [ Σ_i (LLᵀ)_ii/s_i² + Σ_i (μ_i - m_i)²/s_i²
    - D + Σ_i log s_i² - log det(LLᵀ) ]."""
    if len(p.event_shape) != 1:
        raise NotImplementedError("KL(MultivariateNormal || DiagonalNormal) needs a vector event")
    var_p = p.scale**2
    cov_diag = (q.scale_tril**2).sum(-1)
    log_det_q = 2 * torch.diagonal(q.scale_tril, dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (
        (cov_diag / var_p).sum(-1)
        + ((p.loc - q.loc) ** 2 / var_p).sum(-1)
        - q.event_shape[0]
        + var_p.log().sum(-1)
        - log_det_q
    )


def marginal_moments(q: Distribution) -> tuple[Tensor, Tensor]:
    """(m, diag S), each (*batch, K), of a Gaussian q = N(m, S) over vectors (diagonal or full
    covariance): the means and variances of its 1-D marginals q_i = N(m_i, S_ii). Other families
    raise NotImplementedError."""
    if isinstance(q, DiagonalNormal) and len(q.event_shape) == 1:
        return q.loc, q.scale**2
    if isinstance(q, MultivariateNormal):
        return q.loc, (q.scale_tril**2).sum(-1)
    raise NotImplementedError(f"kl_per_dimension: needs a Gaussian posterior, got {type(q).__name__}")


def kl_per_dimension(q: Distribution, p: Distribution) -> Tensor:
    """KL(q_i || p_i) of each latent dimension's marginal, shape (*batch, K), for Gaussian q (diagonal
    or full covariance) and a diagonal Gaussian p:

        KL_i = ½ [ (S_ii + (m_i - μ_i)²) / s_i² - 1 + log s_i² - log S_ii ],  q = N(m, S), p = N(μ, diag s²).

    For a diagonal q these sum to KL(q || p); for a full covariance to at most that (the marginals
    drop the correlations). A prior with a method ``marginal_kl(q)`` of its own (a mixture,
    :class:`vaekit.prob.mixtures.Mixture`) gives the values itself. Other pairs raise
    NotImplementedError (no per-dimension KL)."""
    own = getattr(p, "marginal_kl", None)
    if callable(own):
        return own(q)
    if not (isinstance(p, DiagonalNormal) and len(p.event_shape) == 1):
        raise NotImplementedError(f"kl_per_dimension: needs a diagonal Gaussian prior, got {type(p).__name__}")
    mean, var = marginal_moments(q)
    var_p = p.scale**2
    return 0.5 * ((var + (mean - p.loc) ** 2) / var_p - 1 + var_p.log() - var.log())


def kl_summed_over_dimensions(q: Distribution, p: Distribution) -> Tensor:
    """KL(q_i || p_i) per latent dimension, (*batch, K), only where Σ_i KL_i = KL(q || p): q and p both
    diagonal Gaussians over vectors (:func:`kl_per_dimension`); any other pair raises NotImplementedError
    (a full covariance or a flow has dependent dimensions, a mixture is no product over them)."""
    if not (isinstance(q, DiagonalNormal) and isinstance(p, DiagonalNormal) and len(q.event_shape) == 1):
        raise NotImplementedError(f"a {type(q).__name__} posterior against a {type(p).__name__} prior has none "
                                  "(its per-dimension KLs do not add up to the KL)")
    return kl_per_dimension(q, p)


def noise_shape(q: Distribution) -> tuple[int, ...] | None:
    """The shape of one example's standard-normal ε in :func:`rsample_with_log_prob` (z = μ + L ε):
    (K,) for a Gaussian over vectors, the distribution's own ``noise_shape`` for a reparameterised
    distribution that declares one (a flow, a hierarchy of Gaussians), None for one that draws its own noise."""
    own = getattr(q, "noise_shape", None)
    if own is not None and not callable(own):
        return tuple(own)
    if isinstance(q, MultivariateNormal) or (isinstance(q, DiagonalNormal) and len(q.event_shape) == 1):
        return (int(q.event_shape[0]),)
    return None


def rsample_with_log_prob(q: Distribution, n: int, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``n`` reparameterised draws z = μ + L ε, ε ~ N(0, I), and log q(z) computed from ε:

        log q(z) = -½ ||ε||² - Σ_i log L_ii - (K/2) log 2π,

    which equals ``q.log_prob(z)`` but needs no triangular solve, so it stays finite when L is
    ill-conditioned. Gaussians over vectors (diagonal or full); any other q falls back to
    ``rsample`` + ``log_prob``. Shapes: (n, *batch, K) and (n, *batch).

    ``eps`` (shape (n, *batch, K)) supplies the standard-normal draws instead of torch's global
    generator (common random numbers: the trainer draws them for a whole global batch so that
    data-parallel ranks reproduce a single process exactly); Gaussians over vectors only.

    A distribution with a method ``rsample_with_log_prob(n, eps)`` of its own (a flow posterior, a
    hierarchical posterior: one pass, no inversion) is sampled with that method, ``eps`` of shape
    (n, *batch, *q.noise_shape).
    """
    own = getattr(q, "rsample_with_log_prob", None)
    if callable(own):
        return own(n, eps)
    is_gaussian = isinstance(q, MultivariateNormal) or (isinstance(q, DiagonalNormal) and len(q.event_shape) == 1)
    if eps is not None:
        if not is_gaussian:
            raise ConfigError(f"eps: given draws need a Gaussian posterior over vectors, got {type(q).__name__}")
        expected = (n, *cast("MultivariateNormal | DiagonalNormal", q).loc.shape)  # is_gaussian: one of these
        if tuple(eps.shape) != expected:
            raise ShapeError(f"eps: has shape {tuple(eps.shape)}, expected {expected} (samples, *batch, latent)")
    if isinstance(q, DiagonalNormal) and len(q.event_shape) == 1:
        loc, scale = q.loc, q.scale
        if eps is None:
            eps = torch.randn((n, *loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps
        log_det = scale.log().sum(-1)
    elif isinstance(q, MultivariateNormal):
        loc, tril = q.loc, q.scale_tril
        if eps is None:
            eps = torch.randn((n, *loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + (tril @ eps.unsqueeze(-1)).squeeze(-1)
        log_det = torch.diagonal(tril, dim1=-2, dim2=-1).log().sum(-1)
    else:
        z = q.rsample((n,))
        return z, q.log_prob(z)
    k = loc.shape[-1]
    log_q = -0.5 * (eps**2).sum(-1) - log_det - 0.5 * k * math.log(2 * math.pi)
    return z, log_q


def stop_gradient(q: Distribution) -> Distribution:
    """q with its parameters detached: ``stop_gradient(q).log_prob(z)`` has the value of ``q.log_prob(z)``
    and its gradient only through z (the path derivative, ∂ log q(z)/∂z · ∂z/∂φ), not through q's
    parameters (the score ∂ log q(z; φ)/∂φ). This is what the STL and DReG gradient estimators need
    (Roeder et al. 2017; Tucker et al. 2019). Gaussians over vectors (diagonal or full covariance), or a
    distribution with a ``stop_gradient()`` method of its own; others raise NotImplementedError."""
    own = getattr(q, "stop_gradient", None)
    if callable(own):
        return own()
    if isinstance(q, DiagonalNormal) and len(q.event_shape) == 1:
        return DiagonalNormal(q.loc.detach(), q.scale.detach())
    if isinstance(q, MultivariateNormal):
        return MultivariateNormal(q.loc.detach(), scale_tril=q.scale_tril.detach())
    raise NotImplementedError(f"needs a Gaussian posterior over vectors (diagonal or full), got {type(q).__name__}")


def kl_divergence(q: Distribution, p: Distribution, z: Tensor | None = None, log_q: Tensor | None = None) -> Tensor:
    """KL(q || p) in closed form where one is registered, else the Monte Carlo estimate
    ``mean_s [log q(z_s) - log p(z_s)]`` over the samples ``z`` (shape (S, *batch, *event)),
    drawn from q with :func:`rsample_with_log_prob` when not given. ``log_q`` (S, *batch): log q(z_s) when
    already known (a flow computes it with z, in one pass; ``q.log_prob(z)`` would invert the flow).
    Shape: q's batch shape."""
    try:
        return _torch_kl(q, p)
    except NotImplementedError:
        if z is None:
            z, log_q = rsample_with_log_prob(q, 1)
        if log_q is None:
            log_q = q.log_prob(z)
        return (log_q - p.log_prob(z)).mean(0)
