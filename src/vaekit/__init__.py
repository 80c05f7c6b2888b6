"""vaekit: variational autoencoders on PyTorch, verified against closed forms.

The seed's model, symbol for symbol:

* prior          p(z)   = N(0, I)                 :meth:`VAE.prior`, :func:`standard_normal`
* decoder        p(x|z) = N(f(z), cI)             :class:`GaussianDecoder` (c: :mod:`vaekit.variance`)
* encoder        q_x(z) = N(g(x), h(x))           :class:`GaussianEncoder`
* objective      ELBO = E_q[log p(x|z)] - KL(q_x(z) || p(z)) = log p(x) - KL(q_x(z) || p(z|x))
                                                  :func:`elbo`, :func:`iwae_bound`
* estimators     log p(x), KL(q_x(z) || p(z|x))   :func:`estimate_log_likelihood`
* exact case     affine f, Gaussian decoder       :class:`LinearGaussian`, :func:`ppca_mle`
"""

from .decoders import BernoulliDecoder, Decoder, GaussianDecoder
from .distributions import DiagonalNormal, ProfiledNormal, kl_divergence, standard_normal
from .encoders import GaussianEncoder
from .errors import CheckpointError, ConfigError, DataError, ShapeError, VaekitError
from .estimators import (ActiveUnits, LikelihoodEstimate, active_units, bits_per_dim, estimate_log_likelihood,
                         kl_per_dimension, log_likelihood, posterior_gap)
from .io import load_model, save_model
from .linear_gaussian import LinearGaussian, ppca_mle
from .model import VAE, VAEConfig, VAEOutput, build_vae
from .networks import MLP, Affine, Flatten
from .objectives import ELBOTerms, elbo, elbo_terms, iwae_bound, log_importance_weights
from .variance import FixedVariance, LearnedVariance, OptimalVariance

__version__ = "0.1.0"

__all__ = [
    "VAE", "VAEConfig", "VAEOutput", "build_vae",
    "GaussianEncoder", "Decoder", "GaussianDecoder", "BernoulliDecoder", "MLP", "Affine", "Flatten",
    "FixedVariance", "LearnedVariance", "OptimalVariance",
    "DiagonalNormal", "ProfiledNormal", "standard_normal", "kl_divergence",
    "ELBOTerms", "elbo", "elbo_terms", "iwae_bound", "log_importance_weights",
    "LikelihoodEstimate", "estimate_log_likelihood", "log_likelihood", "posterior_gap", "kl_per_dimension",
    "ActiveUnits", "active_units", "bits_per_dim",
    "LinearGaussian", "ppca_mle", "save_model", "load_model",
    "VaekitError", "ConfigError", "ShapeError", "DataError", "CheckpointError",
]
