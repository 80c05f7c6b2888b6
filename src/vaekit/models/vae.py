"""The one place that assembles a model from a :class:`~vaekit.models.config.VAEConfig`: :func:`build_vae`.

Every configuration is built the same way, layer count, conditioning and prior being independent choices:

1. the likelihood p(x|·) and the architecture's networks between x and z_1 (encoder trunk t, decoder f),
   f taking d_1 (+ C class inputs for a conditional model) values;
2. the posterior family's heads on t(x) (on [t(x), e_y] for a conditional model): q(z_1|x), or the
   bottom-up estimate q̂_1 with ``inference`` top-down;
3. with ``layers`` > 1, the layers above z_1 (:mod:`vaekit.models.chain_layers`): the inference layers
   ``up`` and the generative layers of the :class:`~vaekit.models.chain_layers.ChainPrior`;
4. the configuration's prior (standard, mixture, VampPrior) on z_L (on z for one layer);
5. the model class: :class:`~vaekit.models.conditional.ConditionalVAE` for ``num_classes`` > 0,
   :class:`~vaekit.models.stacked.StackedVAE` for several layers, else :class:`~vaekit.models.core.VAE`.

Build one from modules of your own with ``VAE(encoder, decoder, latent_dim, data_shape)``.
"""

from __future__ import annotations

from vaekit.errors import ConfigError
from vaekit.models.architectures import LinearArch
from vaekit.models.chain_layers import ChainPrior, GaussianLayer
from vaekit.models.conditional import ConditionalEncoder, ConditionalVAE
from vaekit.models.config import VAEConfig
from vaekit.models.core import VAE, VAEOutput
from vaekit.models.decoders import Decoder
from vaekit.models.hierarchical import latent_dims
from vaekit.models.likelihoods import build_likelihood
from vaekit.models.posteriors import build_encoder
from vaekit.models.priors import Prior, build_prior
from vaekit.models.stacked import StackedVAE

__all__ = ["VAE", "VAEConfig", "VAEOutput", "build_vae"]


def _layers(config: VAEConfig, dims: tuple[int, ...]) -> tuple[list[GaussianLayer], list[GaussianLayer]]:
    """The inference layers up[l-2] (z_{l-1} → z_l) and the generative layers down[l-1] (p(z_l|z_{l+1})) of
    ``layer_args``; the linear architecture's generative layers have a constant variance."""
    hidden = [tuple(h) for h in config.layer_args.get("hidden", [()] * (len(dims) - 1))]
    activation = str(config.layer_args.get("activation", "tanh"))
    linear = isinstance(config.architecture, LinearArch)
    up = [GaussianLayer(dims[i], dims[i + 1], hidden[i], activation) for i in range(len(dims) - 1)]
    down = [GaussianLayer(dims[i + 1], dims[i], tuple(reversed(hidden[i])), activation, constant_scale=linear)
            for i in range(len(dims) - 1)]
    return up, down


def build_vae(config: VAEConfig, *, trust_code: bool = False) -> VAE:
    """The model a :class:`VAEConfig` describes (module docstring).

    A configuration naming the user's own builder (``arch="MODULE:FUNCTION"``) imports and runs
    it only with ``trust_code=True``; otherwise :class:`~vaekit.errors.UntrustedCodeError`.
    """
    if not isinstance(config, VAEConfig):
        raise ConfigError(f"build_vae: expected a VAEConfig, got {type(config).__name__}")
    shape, c = config.data_shape, config.num_classes
    dims = latent_dims(config.latent_dim, config.layer_args)                # (d_1, …, d_L)
    likelihood = build_likelihood(config.likelihood, shape, config.decoder_variance, config.initial_variance,
                                  config.likelihood_args)
    p = likelihood.params_per_dim                     # f's values per data dimension (passed only when > 1)
    trunk, trunk_dim, f = config.architecture.build(shape, dims[0] + c, trust_code=trust_code,
                                                    **({"params_per_dim": p} if p > 1 else {}))
    encoder = build_encoder(config.posterior, config.posterior_args, trunk, trunk_dim + c, dims[0], shape)
    top = build_prior(config.prior, config.prior_args, dims[-1], shape)      # p(z_L) (p(z) for one layer)
    up, down = _layers(config, dims)
    decoder = Decoder(f, dims[0] + c, shape, likelihood)     # built last, in the order of the seed's random draws
    prior: Prior = ChainPrior(dims, down, top) if len(dims) > 1 else top
    if c > 0:
        return ConditionalVAE(ConditionalEncoder(encoder, c), decoder, sum(dims), shape, c, config=config,
                              prior=prior, class_names=config.class_names, up=up, inference=config.inference)
    if len(dims) > 1:
        assert isinstance(prior, ChainPrior)
        return StackedVAE(encoder, up, decoder, prior, shape, config=config, inference=config.inference)
    return VAE(encoder, decoder, dims[0], shape, config=config, prior=prior)
