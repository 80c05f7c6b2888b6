"""A VAE with several stochastic layers: the model of Burda et al. (2016, §5 and appendix C).

With L layers z_1 … z_L (``layers`` > 1 in a :class:`~vaekit.models.config.VAEConfig`):

    q(z|x) = q(z_1|x) q(z_2|z_1) ⋯ q(z_L|z_{L-1}),      p(x, z) = p(z_L) p(z_{L-1}|z_L) ⋯ p(z_1|z_2) p(x|z_1),

p(z_L) = N(0, I), every other factor a diagonal Gaussian N(μ(u), diag σ²(u)) of the layer it is conditioned
on, with σ = exp(½ s(u)) (:class:`GaussianLayer`), except q(z_1|x), which is the configuration's posterior
family (the diagonal Gaussian of the one-layer model by default) and p(x|z_1), its likelihood.

The latent z of the model protocol is the concatenation (z_1, …, z_L), latent_dim = Σ_l d_l, so that the
objectives, estimators, trainer and evaluation work unchanged: ``encode(x)`` and ``prior()`` are
:class:`~vaekit.prob.chain.MarkovChain` distributions over z that sample ancestrally (reparameterised, with
``rsample_with_log_prob(n, eps)`` taking the trainer's common random numbers, one ε block per layer) and
evaluate log q(z|x) = Σ_l log q(z_l|z_{l-1}) and log p(z) = log p(z_L) + Σ_l log p(z_l|z_{l+1}) exactly at any
z; ``decode(z)`` reads z_1 only. KL(q || p) has no closed form: the ELBO's KL is the Monte Carlo estimate
mean_s [log q(z_s|x) − log p(z_s)] on the objective's own draws.

Architectures (:mod:`vaekit.models.hierarchical` gives ``layer_args``): ``mlp``: each upper conditional is an
MLP trunk with the widths of its layer and two affine heads μ, s; ``linear``: μ affine, and the generative
conditionals' variances a learned constant (so the model is the linear-Gaussian chain of
:class:`~vaekit.models.linear_chain.LinearGaussianChain`, which :meth:`StackedVAE.closed_form` returns when
the likelihood is Gaussian); the inference conditionals keep an affine log-variance, as the one-layer linear
encoder does. A user architecture (``MODULE:FUNCTION``) builds the networks between x and z_1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ShapeError
from vaekit.models.architectures import LinearArch
from vaekit.models.config import VAEConfig
from vaekit.models.decoders import Decoder
from vaekit.models.hierarchical import latent_dims
from vaekit.models.likelihoods import GaussianLikelihood, build_likelihood
from vaekit.models.linear_chain import LinearGaussianChain
from vaekit.models.networks import MLP, Affine, Flatten
from vaekit.models.posteriors import build_encoder
from vaekit.models.priors import Encode, Prior
from vaekit.models.vae import VAE
from vaekit.ops.linear import Linear
from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp
from vaekit.prob.chain import MarkovChain
from vaekit.prob.distributions import DiagonalNormal, Reduction, standard_normal

__all__ = ["GaussianLayer", "ChainPrior", "StackedVAE", "build_stacked_vae"]


class GaussianLayer(nn.Module):
    """u (*lead, in_dim) ↦ N(μ(t(u)), diag σ²), σ = exp(½ soft_clamp(s)) (:mod:`vaekit.prob.bounds`), with
    t an MLP trunk of widths ``hidden`` (the identity when empty), μ an affine head, and s an affine head
    s(t(u)) or, with ``constant_scale``, a learned vector that does not depend on u. Batch shape ``lead``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (), activation: str = "tanh", *,
                 constant_scale: bool = False):
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        trunk = MLP(self.in_dim, hidden, None, activation) if hidden else Flatten((self.in_dim,))
        self.trunk = trunk
        width = int(trunk.out_features)
        self.mean = Linear(width, self.out_dim)
        self.log_var: nn.Module | None = None if constant_scale else Linear(width, self.out_dim)
        self.constant_log_var = nn.Parameter(torch.zeros(self.out_dim)) if constant_scale else None

    @property
    def is_affine(self) -> bool:
        """Whether μ is affine in u and σ constant (a linear-Gaussian conditional)."""
        return isinstance(self.trunk, Flatten) and self.constant_log_var is not None

    def variance(self) -> Tensor:
        """σ² of a constant-scale layer, (out_dim,)."""
        if self.constant_log_var is None:
            raise AttributeError("GaussianLayer.variance: this layer's variance depends on its input")
        return soft_clamp(self.constant_log_var, ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX).exp()

    def forward(self, u: Tensor) -> DiagonalNormal:
        if u.ndim < 1 or u.shape[-1] != self.in_dim:
            raise ShapeError(f"GaussianLayer: input of shape {tuple(u.shape)} does not end with {self.in_dim}")
        h = self.trunk(u)                                                    # (*lead, H)
        mean = self.mean(h)                                                  # (*lead, out_dim)
        if self.log_var is not None:
            raw = self.log_var(h)                                            # s(t(u))
        elif self.constant_log_var is not None:
            raw = self.constant_log_var                                      # s, the same for every u
        log_var = soft_clamp(raw, ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX)
        return DiagonalNormal(mean, torch.exp(0.5 * log_var).expand_as(mean))


class ChainPrior(Prior):
    """p(z) = p(z_L) Π_{l<L} p(z_l|z_{l+1}) over z = (z_1, …, z_L), p(z_L) = N(0, I); ``layers[l-1]`` is
    p(z_l|z_{l+1}). ``forward()`` returns the :class:`~vaekit.prob.chain.MarkovChain` (drawn downwards)."""

    name: ClassVar[str] = "chain"
    _anchor: Tensor

    def __init__(self, dims: Sequence[int], layers: Sequence[GaussianLayer]):
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        self.latent_dim = sum(self.dims)
        self.layers = nn.ModuleList(layers)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)   # tracks device and dtype

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def forward(self, encode: Encode | None = None) -> MarkovChain:
        top = standard_normal(self.dims[-1], device=self._anchor.device, dtype=self._anchor.dtype)
        return MarkovChain(top, list(self.layers)[::-1], self.dims, order="down")


class StackedVAE(VAE):
    """The L-layer VAE (module docstring). ``encoder``: x ↦ q(z_1|x) (a one-layer encoder of size d_1);
    ``up[l-2]``: q(z_l|z_{l-1}); ``decoder``: p(x|z_1), a :class:`~vaekit.models.decoders.Decoder` of size
    d_1; ``prior``: the :class:`ChainPrior`. ``dims`` = (d_1, …, d_L); latent_dim = Σ_l d_l."""

    def __init__(self, encoder: nn.Module, up: Sequence[GaussianLayer], decoder: Decoder, prior: ChainPrior,
                 data_shape: tuple[int, ...], config: VAEConfig | None = None):
        super().__init__(encoder, decoder, prior.latent_dim, data_shape, config=config, prior=prior)
        self.dims = prior.dims
        self.up = nn.ModuleList(up)

    def encode(self, x: Tensor) -> MarkovChain:
        """q(z|x) = q(z_1|x) Π_{l>=2} q(z_l|z_{l-1}), batch (B,), event (Σ_l d_l,)."""
        return MarkovChain(self.encoder(x), list(self.up), self.dims, order="up")

    def decode(self, z: Tensor, *, reduce: Reduction | None = None) -> Distribution:
        """p(x|z_1) for z = (z_1, …, z_L) of shape (*lead, Σ_l d_l)."""
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"decoder input of shape {tuple(z.shape)} does not end with latent_dim {self.latent_dim} "
                             f"(z_1..z_{len(self.dims)} of sizes {self.dims})")
        return super().decode(z[..., :self.dims[0]], reduce=reduce)

    def inference_parameters(self) -> list[nn.Parameter]:
        """q(z_1|x) q(z_2|z_1) ...: the first layer's encoder and the upper layers' conditionals."""
        return list(self.encoder.parameters()) + list(self.up.parameters())

    def summary(self, x: Tensor) -> Tensor:
        """The chained means of q (:meth:`~vaekit.prob.chain.MarkovChain.chained_mean`): E[z_1|x], then the
        mean of q(z_l|z_{l-1}) at the previous layer's; E_q[z] for the linear architecture. (B, Σ_l d_l)."""
        return self.encode(x).chained_mean()

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        """(n_1 + Σ_{l>=2} d_l,): q(z_1|x)'s noise (d_1 for a Gaussian) and one standard normal per dimension
        of each upper layer; None when q(z_1|x) draws its own noise."""
        first = getattr(self.encoder, "noise_shape", None)
        if first is None or callable(first) or len(tuple(first)) != 1:
            return None
        return (int(tuple(first)[0]) + sum(self.dims[1:]),)

    def closed_form(self) -> LinearGaussianChain | None:  # type: ignore[override]  # the chain, not one layer's
        """The exact linear-Gaussian chain when p(x|z_1) is Gaussian with an affine mean and every generative
        layer is affine with a constant variance (the linear architecture), else None."""
        decoder = self.decoder
        layers = list(getattr(self.prior_module, "layers", ()))
        if not (isinstance(decoder, Decoder) and isinstance(decoder.likelihood, GaussianLikelihood)
                and isinstance(decoder.f, Affine) and layers and all(layer.is_affine for layer in layers)):
            return None
        W, b = decoder.f.weight.detach(), decoder.f.bias.detach()
        psi = decoder.variance().detach().to(W.dtype).reshape(-1).expand(W.shape[0]).clone()
        return LinearGaussianChain(W, b, psi, tuple(layer.mean.weight.detach() for layer in layers),
                                   tuple(layer.mean.bias.detach() for layer in layers),
                                   tuple(layer.variance().detach() for layer in layers))


def build_stacked_vae(config: VAEConfig, *, trust_code: bool = False) -> StackedVAE:
    """The L-layer model of a configuration with ``layers`` > 1: the architecture's networks between x and
    z_1 (encoder trunk and heads, decoder f with the likelihood) and the upper layers of ``layer_args``."""
    shape, dims = config.data_shape, latent_dims(config.latent_dim, config.layer_args)
    likelihood = build_likelihood(config.likelihood, shape, config.decoder_variance, config.initial_variance,
                                  config.likelihood_args)
    p = likelihood.params_per_dim                     # f's values per data dimension (passed only when > 1)
    trunk, trunk_dim, f = config.architecture.build(shape, dims[0], trust_code=trust_code,
                                                    **({"params_per_dim": p} if p > 1 else {}))
    encoder = build_encoder(config.posterior, config.posterior_args, trunk, trunk_dim, dims[0], shape)
    hidden = [tuple(h) for h in config.layer_args.get("hidden", [()] * (len(dims) - 1))]
    activation = str(config.layer_args.get("activation", "tanh"))
    linear = isinstance(config.architecture, LinearArch)
    up = [GaussianLayer(dims[i], dims[i + 1], hidden[i], activation) for i in range(len(dims) - 1)]
    down = [GaussianLayer(dims[i + 1], dims[i], tuple(reversed(hidden[i])), activation, constant_scale=linear)
            for i in range(len(dims) - 1)]
    return StackedVAE(encoder, up, Decoder(f, dims[0], shape, likelihood), ChainPrior(dims, down), shape,
                      config=config)
