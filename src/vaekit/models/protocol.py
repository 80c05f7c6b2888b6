"""The latent-model protocol: all that objectives, estimators, the trainer and evaluation know of a model.

A latent-variable model gives, for data x of shape (B, *data_shape) and latents z of shape
(*lead, latent_dim):

* ``prior()``                 p(z), a distribution with event shape (latent_dim,) (possibly learned);
* ``encode(x)``               q_x(z), batch shape (B,), with ``rsample`` and ``log_prob``;
* ``log_px(x, z, reduce=)``   log p(x|z), shape ``lead``; ``reduce`` is the batch mean a profiled
                              decoder variance c* uses (see :data:`vaekit.prob.distributions.Reduction`);
* ``log_pz(z)``               log p(z), shape ``lead``;
* ``summary(x)``              a point summary of q_x(z), (B, latent_dim), for figures and active units;
* ``noise_shape``             the shape of one example's ε in z = μ + L ε, so that the trainer can draw
                              ε for a whole global batch (common random numbers); None when the
                              posterior draws its own;
* ``closed_form()``           the exact linear-Gaussian model where the model is one, else None;
* ``inference_parameters()``  the parameters of q_x(z) (the encoder's), for objectives that train the
                              inference network by a bound of its own (PIWAE);
* ``density_on_dequantised``  whether log p(x|z) is a density on dequantised data (bits/dim apply);
* ``probability_of_levels``   whether log p(x|z) is the exact probability of the data's integer levels
                              (bits/dim = -log p(x) / (D log 2), no dequantisation term);
* ``values_per_dim``          numbers the decoder computes per data dimension (1; 3K for a mixture of K
                              discretized logistics): estimators size their chunks of draws by it.

What figures and the command line call has a default here, from the methods above: ``decoder_mean(z)``
E[x|z], ``reconstruct(x)`` E[x|z] at the summary of q_x, ``prior_draws(n, generator=)`` and
``sample(n, generator=, mean=)``; a conditional model adds ``sample_classes``.

Objectives and estimators are functions of this interface only; they never look at the model's parts.

A conditional model (:mod:`vaekit.models.conditional`) has ``num_classes`` C > 0 (0: unconditional) and
methods that also take the labels y; ``labels(y, n)`` checks labels for it, and ``given(y)`` is the model
with its labels fixed, an unconditional model of this protocol. Objectives and estimators see a
conditional model only that way: their ``y=`` arguments go through :func:`with_labels`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError
from vaekit.prob.distributions import Reduction

__all__ = ["LatentModel", "with_labels"]


class LatentModel(nn.Module, ABC):
    """p(z), p(x|z) and q_x(z) of a latent-variable model; subclasses implement the abstract methods."""

    data_shape: tuple[int, ...]
    latent_dim: int
    #: Classes of the labels y a conditional model takes (0: an unconditional model).
    num_classes: int = 0

    def labels(self, y: Any, n: int | None = None, *, name: str = "y") -> Tensor:
        """A conditional model's labels ``y`` checked (n of them, or one for all) as int64 on its device;
        an unconditional model takes none (a ConfigError naming ``name``)."""
        raise ConfigError(f"{name}: the model is not conditional (num_classes 0), so it takes no labels; labels "
                          "apply to a model trained with --conditional (VAEConfig(num_classes=...))")

    def given(self, y: Any) -> LatentModel:
        """A conditional model with its labels ``y`` fixed: an unconditional model of this protocol."""
        self.labels(y)
        raise NotImplementedError(f"{type(self).__name__}.given")

    @abstractmethod
    def prior(self) -> Distribution:
        """p(z), event shape (latent_dim,), on the model's device and dtype."""

    @abstractmethod
    def encode(self, x: Tensor) -> Distribution:
        """q_x(z) for x (B, *data_shape): batch shape (B,), event shape (latent_dim,)."""

    @abstractmethod
    def decode(self, z: Tensor, *, reduce: Reduction | None = None) -> Distribution:
        """p(x|z) for z (*lead, latent_dim): batch shape ``lead``, event shape ``data_shape``."""

    def log_px(self, x: Tensor, z: Tensor, *, reduce: Reduction | None = None) -> Tensor:
        """log p(x|z) for x (B, *data_shape) and z (*lead, B, latent_dim), shape (*lead, B)."""
        return self.decode(z, reduce=reduce).log_prob(x)

    def log_pz(self, z: Tensor) -> Tensor:
        """log p(z) for z (*lead, latent_dim), shape ``lead``."""
        return self.prior().log_prob(z)

    def summary(self, x: Tensor) -> Tensor:
        """E_q[z] for x (B, *data_shape): the posterior means, (B, latent_dim)."""
        return self.encode(x).mean

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        """Shape of one example's standard-normal ε of the reparameterisation, or None."""
        return None

    def inference_parameters(self) -> list[nn.Parameter]:
        """The parameters of q_x(z), the inference network, for an objective that trains it by a bound of
        its own (PIWAE): by default those of the model's ``encoder`` module; NotImplementedError without one."""
        encoder = getattr(self, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise NotImplementedError(f"{type(self).__name__} has no encoder module")
        return list(encoder.parameters())

    def closed_form(self) -> Any | None:
        """The exact :class:`~vaekit.models.linear_gaussian.LinearGaussian` this model is, or None."""
        return None

    @property
    def density_on_dequantised(self) -> bool:
        """Whether log p(x|z) is a continuous density, so bits/dim on dequantised images apply."""
        return False

    @property
    def probability_of_levels(self) -> bool:
        """Whether log p(x|z) is the probability of the integer levels of images (discretized likelihoods),
        so bits/dim = -log p(x) / (D log 2) exactly."""
        return False

    @property
    def values_per_dim(self) -> int:
        """Numbers the decoder computes per data dimension for one draw of z (memory scales with it)."""
        return 1

    def decoder_mean(self, z: Tensor) -> Tensor:
        """E[x|z] for z (*lead, latent_dim), (*lead, *data_shape)."""
        return self.decode(z).mean

    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x|z] at z = ``summary(x)``, (B, *data_shape)."""
        with torch.no_grad():
            return self.decoder_mean(self.summary(x))

    def prior_draws(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ p(z), (n, latent_dim); with a ``generator``, torch's generator seeded from it in a forked
        random state (the global one is left as it was)."""
        with torch.no_grad():
            if generator is None:
                return self.prior().sample((n,))
            seed = int(torch.randint(0, 2**62, (), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.prior().sample((n,))

    def sample(self, n: int, y: Any = None, *, generator: torch.Generator | None = None,
               mean: bool = True) -> Tensor:
        """n examples: z ~ p(z) (:meth:`prior_draws`), then E[x|z] (``mean``) or x ~ p(x|z). (n, *data_shape).
        ``y``: a conditional model's label(s); an unconditional model takes none (:meth:`labels`)."""
        if y is not None:
            self.labels(y, n)
        with torch.no_grad():
            px = self.decode(self.prior_draws(n, generator=generator))
            return px.mean if mean else px.sample()

    def sample_classes(self, rows: int, *, generator: torch.Generator | None = None, mean: bool = True) -> Tensor:
        """A conditional model's ``rows`` draws of z, each decoded in every class, (rows, C, *data_shape)."""
        self.labels(0)
        raise NotImplementedError(f"{type(self).__name__}.sample_classes")


def with_labels(model: LatentModel, y: Any) -> LatentModel:
    """The model that objectives and estimators should see: ``model.given(y)`` for a conditional model
    (``num_classes`` > 0) with labels, ``model`` itself for an unconditional one without; a conditional
    model without labels, or labels for an unconditional model, is a one-line ConfigError."""
    classes = int(getattr(model, "num_classes", 0) or 0)
    if y is None:
        if classes > 0:
            raise ConfigError(f"y: the model is conditional on {classes} classes (a conditional VAE); give the "
                              "examples' labels y")
        return model
    if classes == 0:
        raise ConfigError("y: the model is not conditional (num_classes 0), so it takes no labels; labels apply "
                          "to a model trained with --conditional (VAEConfig(num_classes=...))")
    return model.given(y)
