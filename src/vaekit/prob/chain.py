"""A distribution over several blocks of latents drawn one after another: a Markov chain of conditionals.

For blocks z_1, …, z_L (dims d_1, …, d_L) and the vector z = (z_1, …, z_L) of size Σ_l d_l, a
:class:`MarkovChain` draws ancestrally in a given order o_1, …, o_L of the blocks:

    z_{o_1} ~ first,    z_{o_j} ~ c_j(· | z_{o_{j-1}})  (j = 2..L),
    log r(z) = log first(z_{o_1}) + Σ_{j>=2} log c_j(z_{o_j} | z_{o_{j-1}}).

The posterior of a model with L stochastic layers (Burda et al. 2016, §5) runs upwards,
q(z_1|x) q(z_2|z_1) ⋯ (``order="up"``); its prior runs downwards, p(z_L) p(z_{L-1}|z_L) ⋯ p(z_1|z_2)
(``order="down"``). Either way z is (z_1, …, z_L) in that order.

Reparameterisation: every block is z_l = μ_l + L_l ε_l with ε_l standard normal, so one example's ε is the
concatenation of the blocks' ε in the blocks' order, shape (Σ_l n_l,) with n_l the size of block l's
noise (d_l for the Gaussian conditionals). :meth:`MarkovChain.rsample_with_log_prob` takes ε for a whole
set of draws, which is how the trainer's common random numbers reach every layer; ``log_prob`` evaluates
the same chain of conditionals at any z, exactly.

The KL divergence between two chains has no closed form; :func:`vaekit.prob.distributions.kl_divergence`
estimates it by Monte Carlo on the draws it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from torch.distributions import kl_divergence as _torch_kl

from vaekit.errors import ConfigError, ShapeError
from vaekit.prob.distributions import noise_shape, rsample_with_log_prob

__all__ = ["MarkovChain", "Conditional", "ORDERS", "layer_kl_terms"]

#: z_{l-1} (*lead, d_{l-1}) ↦ a distribution over z_l with batch shape ``lead`` and event shape (d_l,).
Conditional = Callable[[Tensor], Distribution]

#: The orders a chain draws its blocks in: from z_1 upwards, or from z_L downwards.
ORDERS = ("up", "down")


class MarkovChain(Distribution):
    """z = (z_1, …, z_L) drawn as ``first`` then ``conditionals`` in ``order`` (see the module docstring).

    ``first``: the distribution of the first block drawn (z_1 for ``"up"``, z_L for ``"down"``), with the
    chain's batch shape and event shape (d,); ``conditionals``: the L − 1 maps from the block just drawn
    to the next one's distribution; ``dims``: (d_1, …, d_L) in the order of z. Batch shape: ``first``'s;
    event shape: (Σ d_l,).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, first: Distribution, conditionals: Sequence[Conditional], dims: Sequence[int],
                 order: str = "up"):
        dims = tuple(int(d) for d in dims)
        if order not in ORDERS:
            raise ConfigError(f"MarkovChain order: unknown {order!r}; choose one of {list(ORDERS)}")
        if len(conditionals) != len(dims) - 1 or not dims or min(dims) <= 0:
            raise ConfigError(f"MarkovChain: {len(dims)} blocks of positive size need {len(dims) - 1} "
                              f"conditionals, got dims {dims} and {len(conditionals)} conditionals")
        self.first = first
        self.conditionals = tuple(conditionals)
        self.dims = dims
        self.order = order
        drawn = dims if order == "up" else dims[::-1]
        if tuple(first.event_shape) != (drawn[0],):
            raise ShapeError(f"MarkovChain: the first block has event shape {tuple(first.event_shape)}, "
                             f"expected ({drawn[0]},)")
        self._drawn = drawn                                   # block sizes in the order they are drawn
        super().__init__(first.batch_shape, torch.Size((sum(dims),)), validate_args=False)

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        """(n_first + Σ_{l>=2} d_l,): the first block's noise size and each Gaussian block's d_l (None
        when the first block draws its own noise). The blocks' ε lie in the order of z, (z_1, …, z_L)."""
        first = noise_shape(self.first)
        if first is None or len(first) != 1:
            return None
        return (first[0] + sum(self._drawn[1:]),)

    def _split(self, z: Tensor) -> list[Tensor]:
        """z (…, Σ d_l) → its blocks in the order they are drawn."""
        blocks = list(torch.split(z, list(self.dims), dim=-1))
        return blocks if self.order == "up" else blocks[::-1]

    def _join(self, drawn: list[Tensor]) -> Tensor:
        """The blocks in drawing order → z (…, Σ d_l) in the order (z_1, …, z_L)."""
        return torch.cat(drawn if self.order == "up" else drawn[::-1], dim=-1)

    def _split_noise(self, eps: Tensor) -> list[Tensor]:
        """ε (…, noise) → the blocks' ε in drawing order (the first block's noise size may differ from d)."""
        first = eps.shape[-1] - sum(self._drawn[1:])
        sizes = [first, *self._drawn[1:]]
        parts = list(torch.split(eps, sizes if self.order == "up" else sizes[::-1], dim=-1))
        return parts if self.order == "up" else parts[::-1]

    def rsample_with_log_prob(self, n: int, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` ancestral draws z (n, *batch, Σ d_l) and log r(z) = Σ of the conditionals' log-densities
        (n, *batch), each block's from its own ε (:func:`~vaekit.prob.distributions.rsample_with_log_prob`).

        ``eps`` (n, *batch, *noise_shape): the standard-normal draws, blocks in the order of z; by default
        drawn here in one call of that shape (so a given ε and the same generator state agree)."""
        shape = self.noise_shape
        if eps is None and shape is not None:
            eps = torch.randn((n, *self.batch_shape, *shape), dtype=self._dtype(), device=self._device())
        if eps is not None:
            if shape is None:
                raise ConfigError("eps: given draws need a first block with a standard-normal noise shape")
            expected = (n, *self.batch_shape, *shape)
            if tuple(eps.shape) != expected:
                raise ShapeError(f"eps: has shape {tuple(eps.shape)}, expected {expected} (samples, *batch, noise)")
            parts: list[Tensor | None] = list(self._split_noise(eps))
        else:
            parts = [None] * len(self.dims)
        z, log_r = rsample_with_log_prob(self.first, n, parts[0])            # (n, *batch, d), (n, *batch)
        drawn = [z]
        for conditional, e in zip(self.conditionals, parts[1:], strict=True):
            step = conditional(z)                                               # batch (n, *batch)
            z, log_c = rsample_with_log_prob(step, 1, None if e is None else e.unsqueeze(0))
            z, log_c = z.squeeze(0), log_c.squeeze(0)
            drawn.append(z)
            log_r = log_r + log_c
        return self._join(drawn), log_r

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """Ancestral reparameterised draws, shape (*sample_shape, *batch, Σ d_l)."""
        sample_shape = torch.Size(sample_shape)
        z, _ = self.rsample_with_log_prob(max(1, math.prod(sample_shape)))
        return z.reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            if self.first.has_rsample:
                return self.rsample(sample_shape)
            n = max(1, math.prod(sample_shape))                     # a first block without rsample (a mixture)
            z = self._continue(self.first.sample((n,)), None)
            return z.reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    def _continue(self, first: Tensor, eps: list[Tensor] | None) -> Tensor:
        """The chain drawn on from a first block ``first`` (n, *batch, d), with the later blocks' ε (in
        drawing order) or fresh ones; no log-density."""
        drawn, z = [first], first
        for i, conditional in enumerate(self.conditionals):
            step = conditional(z)
            z = step.rsample() if eps is None else rsample_with_log_prob(step, 1, eps[i].unsqueeze(0))[0].squeeze(0)
            drawn.append(z)
        return self._join(drawn)

    def sample_with(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` draws (n, *batch, Σ d_l) whose random numbers come from ``generator`` (reproducible figures):
        every block's ε, or the first block's own ``sample_with(n, generator)`` (a mixture on z_L) and then
        the other blocks' ε, or else torch's global generator seeded from ``generator`` in a forked state."""
        shape = self.noise_shape
        with torch.no_grad():
            if shape is not None:
                eps = torch.randn((n, *self.batch_shape, *shape), generator=generator, dtype=self._dtype(),
                                  device=self._device())
                return self.rsample_with_log_prob(n, eps)[0]
            own = getattr(self.first, "sample_with", None)
            if not callable(own) or self.batch_shape:                   # torch's generator, seeded from ours
                seed = int(torch.randint(0, 2**62, (), generator=generator))
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    return self.sample((n,))
            first = own(n, generator)                                   # (n, d)
            later = [torch.randn((n, d), generator=generator, dtype=first.dtype, device=first.device)
                     for d in self._drawn[1:]]
            return self._continue(first, later)

    def block_distributions(self, value: Tensor) -> list[Distribution]:
        """Each block's distribution given its parent's value in ``value`` (*lead, *batch, Σ d_l), in the order
        of z: [r(z_1 | ·), …, r(z_L | ·)] (the first block drawn has no parent)."""
        blocks = self._split(value)
        out = [self.first] + [c(previous) for c, previous in zip(self.conditionals, blocks, strict=False)]
        return out if self.order == "up" else out[::-1]

    def log_prob(self, value: Tensor) -> Tensor:
        """log r(z) for z (*lead, *batch, Σ d_l): log first(z_{o_1}) + Σ_j log c_j(z_{o_j} | z_{o_{j-1}}),
        shape (*lead, *batch)."""
        if value.ndim < 1 or value.shape[-1] != self.event_shape[0]:
            raise ShapeError(f"MarkovChain.log_prob: value of shape {tuple(value.shape)} does not end with "
                             f"{self.event_shape[0]}")
        blocks = self._split(value)
        total = self.first.log_prob(blocks[0])
        for conditional, previous, block in zip(self.conditionals, blocks, blocks[1:], strict=False):
            total = total + conditional(previous).log_prob(block)
        return total

    @property
    def mean(self) -> Tensor:
        raise NotImplementedError("the mean of a chain of nonlinear conditionals has no closed form; "
                                  "chained_mean() gives the conditional means chained")

    @property
    def variance(self) -> Tensor:
        raise NotImplementedError("the variance of a chain of nonlinear conditionals has no closed form")

    def chained_mean(self) -> Tensor:
        """(*batch, Σ d_l): each block's conditional mean given the previous block's chained mean,
        m_{o_1} = E[z_{o_1}], m_{o_j} = E[z_{o_j} | z_{o_{j-1}} = m_{o_{j-1}}]. This is E[z] when each
        conditional mean is affine in the previous block (the linear architecture); otherwise a point
        summary, not the mean."""
        m = self.first.mean
        drawn = [m]
        for conditional in self.conditionals:
            m = conditional(m).mean
            drawn.append(m)
        return self._join(drawn)

    def gaussian_moments(self) -> tuple[Tensor, Tensor]:
        """E[z] (*batch, K) and Cov[z] (*batch, K, K) of a chain whose first block is Gaussian and whose
        conditionals are affine-Gaussian with a variance that does not depend on the parent,
        c_j(u) = N(A_j u + a_j, diag s_j) (the linear architecture, in either direction). Each (A_j, a_j, s_j) is
        read off the conditional at u = 0 and at the unit vectors, and checked at one more point; any other
        chain raises NotImplementedError. Drawing order o: m_{o_j} = A_j m_{o_{j-1}} + a_j,
        Cov[z_{o_j}, z_{o_i}] = A_j Cov[z_{o_{j-1}}, z_{o_i}] (i < j),
        Var[z_{o_j}] = A_j Var[z_{o_{j-1}}] A_jᵀ + diag s_j."""
        first = self.first
        if not hasattr(first, "covariance_matrix") and not hasattr(first, "scale"):
            raise NotImplementedError(f"gaussian_moments: the first block is a {type(first).__name__}")
        mean0 = first.mean
        cov0 = getattr(first, "covariance_matrix", None)
        cov0 = torch.diag_embed(first.variance) if cov0 is None else cov0
        means, covs = [mean0], [[cov0]]                           # covs[j][i] = Cov[z_{o_j}, z_{o_i}], i <= j
        for j, conditional in enumerate(self.conditionals):
            A, a, s = self._affine(conditional, self._drawn[j])
            means.append((A @ means[-1].unsqueeze(-1)).squeeze(-1) + a)
            row = [A @ covs[j][i] for i in range(j + 1)]
            row.append(A @ covs[j][j] @ A.transpose(-1, -2) + torch.diag_embed(s))
            covs.append(row)
        n = len(self._drawn)
        blocks = [[covs[j][i] if i <= j else covs[i][j].transpose(-1, -2) for i in range(n)] for j in range(n)]
        order = list(range(n)) if self.order == "up" else list(range(n))[::-1]    # z-order → drawing index
        mean = torch.cat([means[k] for k in order], -1)
        cov = torch.cat([torch.cat([blocks[r][c] for c in order], -1) for r in order], -2)
        return mean, cov

    def _affine(self, conditional: Conditional, d_in: int) -> tuple[Tensor, Tensor, Tensor]:
        """(A (*batch, d, d_in), a (*batch, d), s (*batch, d)) of an affine-Gaussian conditional with constant
        variance, probed at 0 and the unit vectors (and checked at 0.5 + the unit vectors' sum)."""
        ref = self.first.mean
        eye = torch.eye(d_in, dtype=ref.dtype, device=ref.device)
        zero = torch.zeros(1, d_in, dtype=ref.dtype, device=ref.device)
        probe = torch.cat([zero, eye, 0.5 + eye.sum(0, keepdim=True)])             # (d_in + 2, d_in)
        probe = probe.reshape(d_in + 2, *([1] * len(self.batch_shape)), d_in).expand(d_in + 2, *self.batch_shape, d_in)
        out = conditional(probe)
        scale = getattr(out, "scale", None)
        if scale is None:
            raise NotImplementedError(f"gaussian_moments: a conditional gives a {type(out).__name__}")
        mean = out.mean                                                # (d_in + 2, *batch, d)
        a = mean[0]
        A = (mean[1:-1] - a).movedim(0, -1)                            # (*batch, d, d_in)
        check = (A @ probe[-1].unsqueeze(-1)).squeeze(-1) + a
        var = scale.expand_as(mean) ** 2
        tol = 1e-6 * (1 + a.abs().max())
        if (check - mean[-1]).abs().max() > tol or (var - var[0]).abs().max() > 1e-6 * var[0].abs().max():
            raise NotImplementedError("gaussian_moments: a conditional is not affine-Gaussian with a constant variance")
        return A, a, var[0]

    def _anchor(self) -> Tensor:
        """A tensor of the first block's (a Gaussian's ``loc``) dtype and device, for drawing ε."""
        loc = getattr(self.first, "loc", None)
        return loc if isinstance(loc, Tensor) else torch.empty(())

    def _dtype(self) -> torch.dtype:
        return self._anchor().dtype

    def _device(self) -> torch.device:
        return self._anchor().device


def layer_kl_terms(q: MarkovChain, p: MarkovChain, z: Tensor, *, analytic: bool = True) -> Tensor:
    """Layer l's term of KL(q || p) at draws z ~ q (S, *batch, Σ d_l), shape (S, *batch, L):

        k_l(z) = KL(q(z_l | pa_q) || p(z_l | pa_p))          where both are conditioned on the same block
                                                           (same direction, both Gaussian: analytic, the
                                                           VDVAE / Ladder VAE per-layer KL),
        k_l(z) = log q(z_l | pa_q(z)) − log p(z_l | pa_p(z))  otherwise (Monte Carlo, on the draw),

    pa_q, pa_p the parent blocks under each chain's direction. E_q[Σ_l k_l] = KL(q || p) either way, and
    mean_S Σ_l k_l is its estimate on the given draws (the analytic terms replace a draw of z_l by its
    expectation given the parent). ``analytic=False`` uses the Monte Carlo terms everywhere."""
    if q.dims != p.dims:
        raise ShapeError(f"layer_kl_terms: chains over blocks {q.dims} and {p.dims}")
    blocks = list(torch.split(z, list(q.dims), dim=-1))
    qs, ps = q.block_distributions(z), p.block_distributions(z)
    same_parents = q.order == p.order
    terms = []
    for ql, pl, zl in zip(qs, ps, blocks, strict=True):
        value = None
        if analytic and same_parents:
            try:
                value = _torch_kl(ql, pl)                                      # (*batch) or (S, *batch)
            except NotImplementedError:
                value = None
        if value is None:
            value = ql.log_prob(zl) - pl.log_prob(zl)                          # (S, *batch)
        terms.append(value.expand(z.shape[:-1]))
    return torch.stack(terms, -1)
