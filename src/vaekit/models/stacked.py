"""A VAE with several stochastic layers: the model of Burda et al. (2016, §5 and appendix C).

With L layers z_1 … z_L (``layers`` > 1 in a :class:`~vaekit.models.config.VAEConfig`):

    q(z|x) = q(z_1|x) q(z_2|z_1) ⋯ q(z_L|z_{L-1}),      p(x, z) = p(z_L) p(z_{L-1}|z_L) ⋯ p(z_1|z_2) p(x|z_1),

p(z_L) the configuration's prior (N(0, I) by default; a mixture or the VampPrior on z_L as well), every
other factor a diagonal Gaussian N(μ(u), diag σ²(u)) of the layer it is conditioned on, with σ = exp(½ s(u))
(:class:`GaussianLayer`), except q(z_1|x), which is the configuration's posterior family (the diagonal
Gaussian of the one-layer model by default) and p(x|z_1), its likelihood.

The latent z of the model protocol is the concatenation (z_1, …, z_L), latent_dim = Σ_l d_l, so that the
objectives, estimators, trainer and evaluation work unchanged: ``encode(x)`` and ``prior()`` are
:class:`~vaekit.prob.chain.MarkovChain` distributions over z that sample ancestrally (reparameterised, with
``rsample_with_log_prob(n, eps)`` taking the trainer's common random numbers, one ε block per layer) and
evaluate log q(z|x) = Σ_l log q(z_l|z_{l-1}) and log p(z) = log p(z_L) + Σ_l log p(z_l|z_{l+1}) exactly at any
z; ``decode(z)`` reads z_1 only. KL(q || p) has no closed form: the ELBO's KL is the Monte Carlo estimate
mean_s [log q(z_s|x) − log p(z_s)] on the objective's own draws. With ``inference`` top-down (the Ladder VAE,
:mod:`vaekit.models.chain_layers`) q runs downwards too and the KL is a sum of per-layer KLs, analytic
between the Gaussian conditionals (:func:`~vaekit.prob.chain.layer_kl_terms`).

Architectures (:mod:`vaekit.models.hierarchical` gives ``layer_args``): ``mlp``: each upper conditional is an
MLP trunk with the widths of its layer and two affine heads μ, s; ``linear``: μ affine, and the generative
conditionals' variances a learned constant (so the model is the linear-Gaussian chain of
:class:`~vaekit.models.linear_chain.LinearGaussianChain`, which :meth:`StackedVAE.closed_form` returns when
the likelihood is Gaussian); the inference conditionals keep an affine log-variance, as the one-layer linear
encoder does. A user architecture (``MODULE:FUNCTION``) builds the networks between x and z_1.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from vaekit.models.chain_layers import ChainPrior, GaussianLayer
from vaekit.models.config import VAEConfig
from vaekit.models.core import VAE
from vaekit.models.decoders import Decoder

__all__ = ["GaussianLayer", "ChainPrior", "StackedVAE"]


class StackedVAE(VAE):
    """The L-layer VAE (module docstring): a :class:`~vaekit.models.core.VAE` with upper layers.
    ``encoder``: x ↦ q(z_1|x) (a one-layer encoder of size d_1); ``up[l-2]``: the inference layer of z_l;
    ``decoder``: p(x|z_1), a :class:`~vaekit.models.decoders.Decoder` of size d_1; ``prior``: the
    :class:`~vaekit.models.chain_layers.ChainPrior`; ``inference``: ``bottom-up`` or ``top-down``.
    ``dims`` = (d_1, …, d_L); latent_dim = Σ_l d_l."""

    def __init__(self, encoder: nn.Module, up: Sequence[GaussianLayer], decoder: Decoder, prior: ChainPrior,
                 data_shape: tuple[int, ...], config: VAEConfig | None = None, inference: str = "bottom-up"):
        super().__init__(encoder, decoder, prior.latent_dim, data_shape, config=config, prior=prior, up=up,
                         inference=inference)
