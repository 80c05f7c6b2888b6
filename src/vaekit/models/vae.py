"""The VAE: prior p(z) = N(0, I), decoder p(x|z), encoder q_x(z). It returns distributions and
computes no loss (the objectives in :mod:`vaekit.inference.objectives` do).

Build one from a :class:`~vaekit.models.config.VAEConfig` with :func:`build_vae`, or from modules of
your own with ``VAE(encoder, decoder, latent_dim, data_shape)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError
from vaekit.models.config import VAEConfig
from vaekit.models.decoders import Decoder
from vaekit.models.likelihoods import GaussianLikelihood, build_likelihood
from vaekit.models.linear_gaussian import LinearGaussian
from vaekit.models.networks import Affine
from vaekit.models.posteriors import build_encoder
from vaekit.models.priors import Prior, StandardNormalPrior, build_prior
from vaekit.models.protocol import LatentModel
from vaekit.prob.distributions import Reduction, noise_shape

__all__ = ["VAE", "VAEConfig", "VAEOutput", "build_vae"]


@dataclass(frozen=True)
class VAEOutput:
    """One pass x → q_x(z) → z ~ q_x(z) → p(x|z). ``z`` has shape (S, B, latent_dim)."""

    posterior: Distribution
    z: Tensor
    likelihood: Distribution


class VAE(LatentModel):
    """p(z) = ``prior(encode)`` (N(0, I) by default);  p(x|z) = ``decoder(z)``;  q_x(z) = ``encoder(x)``.

    ``encoder``: x (B, *data_shape) ↦ a distribution over z with batch shape (B,) and event shape
    (latent_dim,), with ``rsample``. ``decoder``: z (*lead, latent_dim) ↦ p(x|z) with batch shape
    ``lead`` and event shape ``data_shape`` (a :class:`~vaekit.models.decoders.Decoder` also takes
    ``reduce=``, the batch mean of a profiled decoder variance). ``prior``: a
    :class:`~vaekit.models.priors.Prior` module (the standard normal by default).
    """

    _anchor: Tensor

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, data_shape: tuple[int, ...],
                 config: VAEConfig | None = None, prior: Prior | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.config = config
        self.prior_module = StandardNormalPrior(latent_dim) if prior is None else prior
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # tracks device and dtype

    def prior(self) -> Distribution:
        """p(z) on the model's device and dtype: N(0, I), or the learned prior the model was built with."""
        return self.prior_module(self.encode)

    def encode(self, x: Tensor) -> Distribution:
        """q_x(z) = N(g(x), h(x)) for x of shape (B, *data_shape)."""
        return self.encoder(x)

    def decode(self, z: Tensor, *, reduce: Reduction | None = None) -> Distribution:
        """p(x|z) for z of shape (*lead, latent_dim)."""
        if isinstance(self.decoder, Decoder):
            return self.decoder(z, reduce=reduce)
        return self.decoder(z)

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        """The encoder's ``noise_shape`` ((latent_dim,) for vaekit's Gaussian encoders, z = g(x) + L ε; a
        flow's base noise); None for an encoder that declares none (it draws its own)."""
        shape = getattr(self.encoder, "noise_shape", None)
        return None if shape is None or callable(shape) else tuple(shape)

    def closed_form(self) -> LinearGaussian | None:
        """The exact linear-Gaussian model when f is affine, the likelihood Gaussian and p(z) = N(0, I),
        else None (a learned prior makes p(x) a mixture, or no closed form at all)."""
        decoder = self.decoder
        if (isinstance(decoder, Decoder) and isinstance(decoder.likelihood, GaussianLikelihood)
                and isinstance(self.prior_module, StandardNormalPrior)
                and isinstance(decoder.f, Affine)):
            return LinearGaussian.from_model(self)
        return None

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
    def sample(self, n: int, *, generator: torch.Generator | None = None, mean: bool = True) -> Tensor:
        """n examples from the model: z ~ p(z), then E[x|z] (``mean=True``) or x ~ p(x|z). (n, *data_shape).

        With a ``generator``, the prior's draws come from it: z = μ + σ ε for a diagonal Gaussian, else the
        prior's own ``sample_with(n, generator)`` (a learned prior), else torch's global generator seeded from it."""
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


def build_vae(config: VAEConfig, *, trust_code: bool = False) -> VAE:
    """The model a :class:`VAEConfig` describes: the architecture's encoder trunk with the heads g, h
    (:class:`~vaekit.models.encoders.GaussianEncoder`), its network f with the likelihood.

    A configuration naming the user's own builder (``arch="MODULE:FUNCTION"``) imports and runs
    it only with ``trust_code=True``; otherwise :class:`~vaekit.errors.UntrustedCodeError`.
    """
    if not isinstance(config, VAEConfig):
        raise ConfigError(f"build_vae: expected a VAEConfig, got {type(config).__name__}")
    if config.num_classes > 0:                        # labels join the encoder and decoder: vaekit.models.conditional
        from vaekit.models.conditional import build_conditional_vae  # imports this module: no import at the top

        return build_conditional_vae(config, trust_code=trust_code)
    if config.layers > 1:                             # several stochastic layers: vaekit.models.stacked
        from vaekit.models.stacked import build_stacked_vae  # imports this module: no import at the top

        return build_stacked_vae(config, trust_code=trust_code)
    shape, k = config.data_shape, config.latent_dim
    likelihood = build_likelihood(config.likelihood, shape, config.decoder_variance, config.initial_variance,
                                  config.likelihood_args)
    p = likelihood.params_per_dim                     # f's values per data dimension (passed only when > 1)
    trunk, trunk_dim, f = config.architecture.build(shape, k, trust_code=trust_code,
                                                    **({"params_per_dim": p} if p > 1 else {}))
    encoder = build_encoder(config.posterior, config.posterior_args, trunk, trunk_dim, k, shape)
    prior = build_prior(config.prior, config.prior_args, k, shape)
    return VAE(encoder, Decoder(f, k, shape, likelihood), k, shape, config=config, prior=prior)
