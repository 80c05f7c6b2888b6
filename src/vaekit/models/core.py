"""The VAE: prior p(z), decoder p(x|z), encoder q_x(z), with one stochastic layer or several
(z = (z_1, …, z_L), :mod:`vaekit.models.chain_layers`). It returns distributions and computes no loss (the
objectives in :mod:`vaekit.inference.objectives` do).

A model of one layer is the special case L = 1: ``up`` is empty and p(z) is the prior module itself. With
L > 1 the prior module is a :class:`~vaekit.models.chain_layers.ChainPrior` (any prior on z_L), ``up`` holds
the inference layers and ``inference`` the direction (``bottom-up`` or ``top-down``); ``encode(x)`` is then
the posterior chain over z and ``decode(z)`` reads z_1. :mod:`vaekit.models.vae` assembles a model from a
configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError, ShapeError
from vaekit.models.chain_layers import ChainPrior, GaussianLayer, posterior_chain, top_of_pass
from vaekit.models.config import VAEConfig
from vaekit.models.decoders import Decoder
from vaekit.models.likelihoods import GaussianLikelihood
from vaekit.models.linear_chain import LinearGaussianChain
from vaekit.models.linear_gaussian import LinearGaussian
from vaekit.models.networks import Affine
from vaekit.models.priors import Prior, StandardNormalPrior
from vaekit.models.protocol import LatentModel
from vaekit.prob.chain import MarkovChain
from vaekit.prob.distributions import Reduction, noise_shape

__all__ = ["VAE", "VAEOutput"]


@dataclass(frozen=True)
class VAEOutput:
    """One pass x → q_x(z) → z ~ q_x(z) → p(x|z). ``z`` has shape (S, B, latent_dim)."""

    posterior: Distribution
    z: Tensor
    likelihood: Distribution


class VAE(LatentModel):
    """p(z) = ``prior(encode)`` (N(0, I) by default);  p(x|z) = ``decoder(z)``;  q_x(z) = ``encoder(x)``
    (one layer), or with ``up`` layers the L-layer model of :mod:`vaekit.models.chain_layers`.

    ``encoder``: x (B, *data_shape) ↦ a distribution over z with batch shape (B,) and event shape
    (latent_dim,), with ``rsample``. ``decoder``: z (*lead, latent_dim) ↦ p(x|z) with batch shape
    ``lead`` and event shape ``data_shape`` (a :class:`~vaekit.models.decoders.Decoder` also takes
    ``reduce=``, the batch mean of a profiled decoder variance). ``prior``: a
    :class:`~vaekit.models.priors.Prior` module (the standard normal by default).

    Several layers: ``prior`` a :class:`~vaekit.models.chain_layers.ChainPrior` over (d_1, …, d_L),
    ``up[l-2]`` the inference layer of z_l (q(z_l|z_{l-1}) bottom-up, the bottom-up estimate q̂_l top-down),
    ``inference`` the direction; then ``encoder`` gives q(z_1|x) (or q̂_1) and ``decoder`` reads z_1.
    """

    _anchor: Tensor

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, data_shape: tuple[int, ...],
                 config: VAEConfig | None = None, prior: Prior | None = None, *,
                 up: Sequence[GaussianLayer] = (), inference: str = "bottom-up"):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.config = config
        self.prior_module = StandardNormalPrior(latent_dim) if prior is None else prior
        if up and not isinstance(self.prior_module, ChainPrior):
            raise ConfigError("VAE: upper layers (up) need a ChainPrior over the layers")
        self.dims: tuple[int, ...] = self.prior_module.dims if isinstance(self.prior_module, ChainPrior) \
            else (self.latent_dim,)
        if sum(self.dims) != self.latent_dim or len(up) != len(self.dims) - 1:
            raise ShapeError(f"VAE: layers of sizes {self.dims} with {len(up)} inference layers do not make "
                             f"latent_dim {self.latent_dim}")
        self.up = nn.ModuleList(up)                     # empty for one layer (no weights)
        self.inference = str(inference)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # tracks device and dtype

    @property
    def layers(self) -> int:
        """L, the number of stochastic layers."""
        return len(self.dims)

    def _up(self) -> list[GaussianLayer]:
        return list(self.up)  # type: ignore[arg-type]

    def inference_parameters(self) -> list[nn.Parameter]:
        """The parameters of q(z|x) of its own: the encoder of q(z_1|x) and the upper inference layers (with
        top-down inference q also uses the generative layers p(z_l|z_{l+1}), which stay generative)."""
        return list(self.encoder.parameters()) + list(self.up.parameters())

    def posterior_from(self, first: Distribution) -> Distribution:
        """q(z|x) from q(z_1|x) (one layer: ``first`` itself; several: the chain of the model's direction)."""
        if self.layers == 1:
            return first
        assert isinstance(self.prior_module, ChainPrior)
        return posterior_chain(first, self._up(), self.prior_module, self.inference)

    def first_block(self, z: Tensor) -> Tensor:
        """z_1 of z = (z_1, …, z_L), (*lead, d_1); z itself for one layer."""
        if self.layers == 1:
            return z
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"decoder input of shape {tuple(z.shape)} does not end with latent_dim {self.latent_dim} "
                             f"(z_1..z_{len(self.dims)} of sizes {self.dims})")
        return z[..., :self.dims[0]]

    def top_posterior(self, u: Tensor) -> Distribution:
        """u ↦ q(z_L|u): q(z|u) for one layer, the top of the bottom-up pass of means for several
        (:func:`~vaekit.models.chain_layers.top_of_pass`); what a VampPrior on z_L encodes its pseudo-inputs with."""
        if self.layers == 1:
            return self.encode(u)
        return top_of_pass(self.encoder(u), self._up())

    def prior(self) -> Distribution:
        """p(z) on the model's device and dtype: N(0, I), or the learned prior the model was built with."""
        return self.prior_module(self.top_posterior)

    def encode(self, x: Tensor) -> Distribution:
        """q_x(z) for x of shape (B, *data_shape): N(g(x), h(x)) for one diagonal layer; with several layers
        the posterior chain over z = (z_1, …, z_L) (:meth:`posterior_from`)."""
        return self.posterior_from(self.encoder(x))

    def decode(self, z: Tensor, *, reduce: Reduction | None = None) -> Distribution:
        """p(x|z) (p(x|z_1) with several layers) for z of shape (*lead, latent_dim)."""
        z = self.first_block(z)
        if isinstance(self.decoder, Decoder):
            return self.decoder(z, reduce=reduce)
        return self.decoder(z)

    def summary(self, x: Tensor) -> Tensor:
        """E_q[z] for one layer; with several, the chained means of q
        (:meth:`~vaekit.prob.chain.MarkovChain.chained_mean`, E_q[z] for the linear architecture). (B, latent_dim)."""
        q = self.encode(x)
        return q.chained_mean() if isinstance(q, MarkovChain) else q.mean

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        """The encoder's ``noise_shape`` ((latent_dim,) for vaekit's Gaussian encoders, z = g(x) + L ε; a
        flow's base noise); None for an encoder that declares none (it draws its own)."""
        shape = getattr(self.encoder, "noise_shape", None)
        first = None if shape is None or callable(shape) else tuple(shape)
        if self.layers == 1 or first is None:
            return first
        if len(first) != 1:
            return None
        return (first[0] + sum(self.dims[1:]),)      # q(z_1|x)'s noise (d_1 for a Gaussian), then d_l per layer

    def closed_form(self) -> LinearGaussian | LinearGaussianChain | None:
        """The exact linear-Gaussian model when f is affine, the likelihood Gaussian and p(z) = N(0, I),
        else None (a learned prior makes p(x) a mixture, or no closed form at all)."""
        if self.layers > 1:
            return self._closed_chain()
        decoder = self.decoder
        if (isinstance(decoder, Decoder) and isinstance(decoder.likelihood, GaussianLikelihood)
                and isinstance(self.prior_module, StandardNormalPrior)
                and isinstance(decoder.f, Affine)):
            return LinearGaussian.from_model(self)
        return None

    def _closed_chain(self) -> LinearGaussianChain | None:
        """The exact linear-Gaussian chain when p(x|z_1) is Gaussian with an affine mean, every generative
        layer affine with a constant variance (the linear architecture) and p(z_L) = N(0, I), else None."""
        decoder, prior = self.decoder, self.prior_module
        if not isinstance(prior, ChainPrior) or not isinstance(prior.top, StandardNormalPrior):
            return None
        layers: list[GaussianLayer] = list(prior.layers)  # type: ignore[arg-type]
        if not (isinstance(decoder, Decoder) and isinstance(decoder.likelihood, GaussianLikelihood)
                and isinstance(decoder.f, Affine) and layers and all(layer.is_affine for layer in layers)):
            return None
        W, b = decoder.f.weight.detach(), decoder.f.bias.detach()
        psi = decoder.variance().detach().to(W.dtype).reshape(-1).expand(W.shape[0]).clone()
        return LinearGaussianChain(W, b, psi, tuple(layer.mean.weight.detach() for layer in layers),
                                   tuple(layer.mean.bias.detach() for layer in layers),
                                   tuple(layer.variance().detach() for layer in layers))

    @property
    def density_on_dequantised(self) -> bool:
        return isinstance(self.decoder, Decoder) and self.decoder.likelihood.is_density

    @property
    def probability_of_levels(self) -> bool:
        return isinstance(self.decoder, Decoder) and self.decoder.likelihood.probability_of_levels

    @property
    def values_per_dim(self) -> int:
        return self.decoder.likelihood.params_per_dim if isinstance(self.decoder, Decoder) else 1

    def forward(self, x: Tensor, n_samples: int = 1) -> VAEOutput:
        """q_x(z), ``n_samples`` reparameterised draws z ~ q_x(z) (S, B, K), and p(x|z)."""
        q = self.encode(x)
        z = q.rsample((n_samples,))
        return VAEOutput(q, z, self.decode(z))

    def decoder_mean(self, z: Tensor) -> Tensor:
        """E[x|z]: f(z) for a Gaussian decoder, sigmoid(f(z)) for a Bernoulli one, the mean level (in [0, 1])
        for a discretized one."""
        return self.decode(z).mean

    @torch.no_grad()
    def sample(self, n: int, y: Any = None, *, generator: torch.Generator | None = None,
               mean: bool = True) -> Tensor:
        """n examples from the model: z ~ p(z), then E[x|z] (``mean=True``) or x ~ p(x|z). (n, *data_shape).

        With a ``generator``, the prior's draws come from it: z = μ + σ ε for a diagonal Gaussian, else the
        prior's own ``sample_with(n, generator)`` (a learned prior), else torch's global generator seeded from it.
        ``y``: labels, which an unconditional model refuses (:meth:`~vaekit.models.protocol.LatentModel.labels`)."""
        if y is not None:
            self.labels(y, n)
        px = self.decode(self.prior_draws(n, generator=generator))
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def prior_draws(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ p(z), (n, latent_dim), from ``generator`` as :meth:`sample` describes."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"sample: n must be a positive integer, got {n!r}")
        prior = self.prior()
        if generator is None:
            z = prior.sample((n,))
        elif noise_shape(prior) == (self.latent_dim,) and hasattr(prior, "loc") and hasattr(prior, "scale"):
            eps = torch.randn((n, self.latent_dim), generator=generator, device=self._anchor.device,
                              dtype=self._anchor.dtype)
            z = prior.loc + prior.scale * eps
        elif callable(sample_with := getattr(prior, "sample_with", None)):
            z = sample_with(n, generator)
        else:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                z = prior.sample((n,))
        return z

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x|z] at z = E_q[z] = g(x): the reconstruction of x (B, *data_shape)."""
        return self.decode(self.summary(x)).mean
