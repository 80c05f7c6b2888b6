"""vaekit: variational autoencoders on PyTorch, verified against closed forms.

The seed's model, symbol for symbol:

* prior          p(z)   = N(0, I)                 :meth:`VAE.prior`, :func:`standard_normal`
* decoder        p(x|z) = N(f(z), cI)             :class:`Decoder` with a :class:`GaussianLikelihood`
                                                  (c: :mod:`vaekit.models.variance`)
* encoder        q_x(z) = N(g(x), h(x))           :class:`GaussianEncoder`
* objective      ELBO = E_q[log p(x|z)] - KL(q_x(z) || p(z)) = log p(x) - KL(q_x(z) || p(z|x))
                                                  :func:`elbo`, :func:`iwae_bound`, :class:`ELBO`, :class:`IWAE`,
                                                  :class:`MIWAE`, :class:`PIWAE`, :class:`CIWAE`, :class:`VR`,
                                                  :class:`BTCVAE` (gradient="stl"/"dreg": Roeder, Tucker)
* estimators     log p(x), KL(q_x(z) || p(z|x))   :func:`estimate_log_likelihood`
* exact case     affine f, Gaussian decoder       :class:`LinearGaussian`, :func:`ppca_mle`
* families       learned priors, flow posteriors, L layers, conditioning, 8-bit likelihoods
                                                  :class:`MixturePrior`, :class:`VampPrior`, :class:`IAFEncoder`,
                                                  :class:`StackedVAE`, :class:`ConditionalVAE`,
                                                  :class:`DiscretizedLogistic` (and ``VAEConfig``'s family fields)

Layers (imports point one way): ``prob`` (distributions) → ``models`` (the :class:`LatentModel`
protocol, the VAE and its parts) → ``inference`` (objectives, estimators, evaluation) →
``training`` (:func:`fit`) → ``store``/``viz``/``cli``; ``data`` stands beside them.

The names are imported on first use (:pep:`562`), so that ``import vaekit`` (and ``vaekit --help``)
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaekit.errors import CheckpointError, ConfigError, DataError, ShapeError, UntrustedCodeError, VaekitError

if TYPE_CHECKING:
    from vaekit.inference.estimators import (
        ActiveUnits,
        LikelihoodEstimate,
        active_units,
        bits_per_dim,
        estimate_log_likelihood,
        iwae_bound,
        kl_per_dimension,
        log_likelihood,
        posterior_gap,
    )
    from vaekit.inference.evaluate import Evaluation, evaluate
    from vaekit.inference.latent_mixture import LatentGMM, fit_latent_gmm, sample_gmm
    from vaekit.inference.objectives import (
        ELBO,
        IWAE,
        ELBOTerms,
        Objective,
        elbo,
        elbo_terms,
        log_importance_weights,
    )
    from vaekit.inference.scores import Scores, score
    from vaekit.inference.training_objectives import BTCVAE, CIWAE, MIWAE, PIWAE, VR
    from vaekit.models.conditional import ConditionalVAE
    from vaekit.models.config import VAEConfig
    from vaekit.models.decoders import BernoulliDecoder, Decoder, GaussianDecoder
    from vaekit.models.encoders import GaussianEncoder
    from vaekit.models.iaf import IAFEncoder
    from vaekit.models.likelihoods import (
        BernoulliLikelihood,
        DiscretizedLogisticLikelihood,
        DiscretizedLogisticMixtureLikelihood,
        GaussianLikelihood,
        Likelihood,
    )
    from vaekit.models.linear_chain import LinearGaussianChain
    from vaekit.models.linear_gaussian import LinearGaussian, ppca_mle
    from vaekit.models.networks import MLP, Affine, Flatten
    from vaekit.models.priors import MixturePrior, Prior, StandardNormalPrior, VampPrior
    from vaekit.models.protocol import LatentModel
    from vaekit.models.stacked import StackedVAE
    from vaekit.models.vae import VAE, VAEOutput, build_vae
    from vaekit.models.variance import FixedVariance, LearnedVariance, OptimalVariance
    from vaekit.prob.discretized import DiscretizedLogistic, DiscretizedLogisticMixture
    from vaekit.prob.distributions import DiagonalNormal, ProfiledNormal, kl_divergence, standard_normal
    from vaekit.prob.flows import FlowPosterior
    from vaekit.store.model_files import load_model, save_model
    from vaekit.training import EpochMetrics, FitResult, TrainConfig, fit

#: module -> the public names it gives the package root, imported on first access.
_LAZY: dict[str, tuple[str, ...]] = {
    "vaekit.inference.estimators": (
        "ActiveUnits", "LikelihoodEstimate", "active_units", "bits_per_dim", "estimate_log_likelihood",
        "iwae_bound", "kl_per_dimension", "log_likelihood", "posterior_gap",
    ),
    "vaekit.inference.evaluate": ("Evaluation", "evaluate"),
    "vaekit.inference.scores": ("Scores", "score"),
    "vaekit.inference.latent_mixture": ("LatentGMM", "fit_latent_gmm", "sample_gmm"),
    "vaekit.inference.objectives": (
        "ELBO", "IWAE", "ELBOTerms", "Objective", "elbo", "elbo_terms", "log_importance_weights",
    ),
    "vaekit.inference.training_objectives": ("MIWAE", "PIWAE", "CIWAE", "VR", "BTCVAE"),
    "vaekit.models.conditional": ("ConditionalVAE",),
    "vaekit.models.config": ("VAEConfig",),
    "vaekit.models.decoders": ("BernoulliDecoder", "Decoder", "GaussianDecoder"),
    "vaekit.models.encoders": ("GaussianEncoder",),
    "vaekit.models.iaf": ("IAFEncoder",),
    "vaekit.models.likelihoods": ("BernoulliLikelihood", "GaussianLikelihood", "Likelihood",
                                  "DiscretizedLogisticLikelihood", "DiscretizedLogisticMixtureLikelihood"),
    "vaekit.models.linear_chain": ("LinearGaussianChain",),
    "vaekit.models.linear_gaussian": ("LinearGaussian", "ppca_mle"),
    "vaekit.models.networks": ("MLP", "Affine", "Flatten"),
    "vaekit.models.priors": ("Prior", "StandardNormalPrior", "MixturePrior", "VampPrior"),
    "vaekit.models.protocol": ("LatentModel",),
    "vaekit.models.stacked": ("StackedVAE",),
    "vaekit.models.vae": ("VAE", "VAEOutput", "build_vae"),
    "vaekit.models.variance": ("FixedVariance", "LearnedVariance", "OptimalVariance"),
    "vaekit.prob.discretized": ("DiscretizedLogistic", "DiscretizedLogisticMixture"),
    "vaekit.prob.distributions": ("DiagonalNormal", "ProfiledNormal", "kl_divergence", "standard_normal"),
    "vaekit.prob.flows": ("FlowPosterior",),
    "vaekit.store.model_files": ("load_model", "save_model"),
    "vaekit.training": ("EpochMetrics", "FitResult", "TrainConfig", "fit"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    """A public name of :data:`_LAZY`, imported from its module on first access (then cached)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})


__version__ = "0.2.0"

__all__ = [
    "LatentModel", "VAE", "VAEConfig", "VAEOutput", "build_vae", "ConditionalVAE", "StackedVAE",
    "Prior", "StandardNormalPrior", "MixturePrior", "VampPrior", "IAFEncoder", "FlowPosterior",
    "DiscretizedLogistic", "DiscretizedLogisticMixture", "DiscretizedLogisticLikelihood",
    "DiscretizedLogisticMixtureLikelihood", "LinearGaussianChain",
    "GaussianEncoder", "Decoder", "GaussianDecoder", "BernoulliDecoder", "MLP", "Affine", "Flatten",
    "Likelihood", "GaussianLikelihood", "BernoulliLikelihood",
    "FixedVariance", "LearnedVariance", "OptimalVariance",
    "DiagonalNormal", "ProfiledNormal", "standard_normal", "kl_divergence",
    "Objective", "ELBO", "IWAE", "ELBOTerms", "elbo", "elbo_terms", "iwae_bound", "log_importance_weights",
    "MIWAE", "PIWAE", "CIWAE", "VR", "BTCVAE",
    "LikelihoodEstimate", "estimate_log_likelihood", "log_likelihood", "posterior_gap", "kl_per_dimension",
    "ActiveUnits", "active_units", "bits_per_dim", "Evaluation", "evaluate",
    "Scores", "score", "LatentGMM", "fit_latent_gmm", "sample_gmm",
    "fit", "TrainConfig", "EpochMetrics", "FitResult",
    "LinearGaussian", "ppca_mle", "save_model", "load_model",
    "VaekitError", "ConfigError", "ShapeError", "DataError", "CheckpointError", "UntrustedCodeError",
]
