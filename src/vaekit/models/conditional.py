"""The conditional VAE (Sohn, Lee & Yan 2015, "Learning Structured Output Representation using Deep
Conditional Generative Models"): the encoder and the decoder see the example's class label y.

With e_y the one-hot vector of y ∈ {0, …, C−1} (:func:`~vaekit.models.conditioning.one_hot`):

    q(z|x, y) = the posterior family's heads on [t(x), e_y]     (t the architecture's encoder trunk)
    p(x|z, y) = the likelihood with f([z, e_y])                 (f takes latent_dim + C inputs)
    p(z)      = the model's prior, which does not depend on y   (N(0, I) by default)

so that ELBO(x|y) = E_q(z|x,y)[log p(x|z, y)] − KL(q(z|x, y) ‖ p(z)) ≤ log p(x|y). Joining e_y to the trunk's
output features, before the heads, works for every architecture (mlp, linear, conv, resnet, a user's):
the trunk is unchanged and the heads take trunk_dim + C inputs; f is the architecture's decoder network
built for latent_dim + C inputs. The prior is the configuration's (``standard`` or ``mixture``); a prior
defined through the encoder (``vamp``) is refused when the configuration is made
(:func:`~vaekit.models.conditioning.check_conditioning`). With several stochastic layers the labels join
q(z_1|x, y) and p(x|z_1, y); the layers above and p(z) are those of the unconditional model
(:mod:`vaekit.models.chain_layers`), so q(z|x, y) = q(z_1|x, y) Π q(z_l|z_{l-1}) (bottom-up) and
p(x, z|y) = p(z) p(x|z_1, y).

:class:`ConditionalVAE` takes y in ``encode``, ``decode``, ``log_px``, ``summary``, ``reconstruct`` and
``sample``. Objectives, estimators, the trainer and evaluation know only the unconditional protocol
(:class:`~vaekit.models.protocol.LatentModel`): they see the model through :meth:`ConditionalVAE.given`,
a :class:`LabelledModel` that holds one batch's labels, and :func:`~vaekit.models.protocol.with_labels`
is the one place that decides: labels given to a conditional model condition it, no labels for a
conditional model and labels for an unconditional one are ConfigErrors. Nothing is computed differently
for an unconditional model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError, ShapeError
from vaekit.models.chain_layers import GaussianLayer
from vaekit.models.conditioning import check_labels, one_hot
from vaekit.models.config import VAEConfig
from vaekit.models.core import VAE, VAEOutput
from vaekit.models.decoders import Decoder
from vaekit.models.priors import Prior
from vaekit.models.protocol import LatentModel, with_labels
from vaekit.prob.chain import MarkovChain
from vaekit.prob.distributions import Reduction

__all__ = ["ConditionalEncoder", "ConditionalVAE", "LabelledModel", "with_labels"]


class ConditionalEncoder(nn.Module):
    """(x, e_y) ↦ q(z|x, y) = ``encoder.heads([encoder.features(x), e_y])``: an encoder of the posterior
    families (:mod:`vaekit.models.posteriors`), built for trunk_dim + C features, whose trunk and heads are
    split (``features``, ``heads``)."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        for part in ("features", "heads"):
            if not callable(getattr(encoder, part, None)):
                raise ConfigError(f"posterior: a conditional model needs an encoder with features(x) and "
                                  f"heads(h); {type(encoder).__name__} has no {part}")
        self.encoder = encoder
        self.num_classes = int(num_classes)

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        shape = getattr(self.encoder, "noise_shape", None)
        return None if shape is None or callable(shape) else tuple(shape)

    def forward(self, x: Tensor, e_y: Tensor) -> Distribution:
        encoder: Any = self.encoder
        hidden = encoder.features(x)                                        # (B, trunk_dim)
        return encoder.heads(torch.cat([hidden, e_y.to(hidden.dtype)], -1))  # heads on (B, trunk_dim + C)


class ConditionalVAE(VAE):
    """q(z|x, y), p(x|z, y) and p(z) (module docstring). ``encoder``: a :class:`ConditionalEncoder`;
    ``decoder``: a :class:`~vaekit.models.decoders.Decoder` whose f takes d_1 + C inputs (d_1 = latent_dim
    for one layer). ``up``, ``inference`` and a :class:`~vaekit.models.chain_layers.ChainPrior` ``prior``: the
    layers above z_1, as for :class:`~vaekit.models.core.VAE`.
    ``class_names``: the names of the C classes (optional), so that labels may be given by name.

    Labels y: an int64 tensor (B,) matching x's batch (or z's last batch dimension), or one label
    (an int, a class name, a 0-d tensor) for every example; see :func:`~vaekit.models.conditioning.check_labels`.
    """

    def __init__(self, encoder: ConditionalEncoder, decoder: Decoder, latent_dim: int, data_shape: tuple[int, ...],
                 num_classes: int, config: VAEConfig | None = None, prior: Prior | None = None,
                 class_names: Sequence[str] = (), *, up: Sequence[GaussianLayer] = (),
                 inference: str = "bottom-up"):
        super().__init__(encoder, decoder, latent_dim, data_shape, config=config, prior=prior, up=up,
                         inference=inference)
        if not 0 < int(num_classes):
            raise ConfigError(f"num_classes: a conditional model needs at least one class, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names)

    # ----------------------------------------------------------------- labels

    def labels(self, y: Any, n: int | None = None, *, name: str = "y") -> Tensor:
        """``y`` as checked int64 labels on the model's device (names looked up in ``class_names``): n of
        them, or one for every example (:func:`~vaekit.models.conditioning.check_labels`). An int64 tensor
        on an accelerator is taken as it is (checking its range would synchronise the host)."""
        if y is None:
            raise ConfigError(f"{name}: this model is conditional on {self.num_classes} classes; give each "
                              "example's label")
        if isinstance(y, Tensor) and y.dtype == torch.int64 and y.device.type != "cpu":
            return y.to(self._anchor.device)
        return check_labels(y, self.num_classes, n=n, name=name, device=self._anchor.device,
                            class_names=self.class_names)

    def _e(self, y: Any, lead: tuple[int, ...]) -> Tensor:
        """e_y broadcast to (*lead, C): y () or (B,) with B the last of ``lead``."""
        labels = self.labels(y)
        if labels.ndim == 1 and (not lead or lead[-1] != labels.shape[0]):
            raise ShapeError(f"labels y of shape {tuple(labels.shape)} do not match the batch of shape {lead}")
        return one_hot(labels, self.num_classes, self._anchor.dtype).expand(*lead, self.num_classes)

    def given(self, y: Any) -> LabelledModel:
        """The model conditioned on labels ``y``: a :class:`LabelledModel` (an unconditional
        :class:`~vaekit.models.protocol.LatentModel`), what objectives and estimators are handed."""
        return LabelledModel(self, self.labels(y))

    # ----------------------------------------------------------------- the model

    def encode(self, x: Tensor, y: Any = None) -> Distribution:
        """q(z|x, y) for x (B, *data_shape) and y (B,) (or one label): q(z_1|x, y) and the layers above."""
        return self.posterior_from(self.encoder(x, self._e(y, (x.shape[0],))))

    def decode(self, z: Tensor, y: Any = None, *, reduce: Reduction | None = None) -> Distribution:
        """p(x|z, y) for z (*lead, latent_dim) and y (lead[-1],) (or one label): f([z_1, e_y])."""
        if z.ndim < 1 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"decoder input of shape {tuple(z.shape)} does not end with latent_dim {self.latent_dim}")
        z1 = self.first_block(z)                                                # (*lead, d_1)
        zy = torch.cat([z1, self._e(y, tuple(z.shape[:-1])).to(z.dtype)], -1)  # (*lead, d_1 + C)
        return self.decoder(zy, reduce=reduce)

    def log_px(self, x: Tensor, z: Tensor, y: Any = None, *, reduce: Reduction | None = None) -> Tensor:
        """log p(x|z, y) for x (B, *data_shape), z (*lead, B, latent_dim) and y (B,): shape (*lead, B)."""
        return self.decode(z, y, reduce=reduce).log_prob(x)

    def summary(self, x: Tensor, y: Any = None) -> Tensor:
        """E_q[z] of q(z|x, y) (the chained means with several layers), (B, latent_dim)."""
        q = self.encode(x, y)
        return q.chained_mean() if isinstance(q, MarkovChain) else q.mean

    def closed_form(self) -> None:
        """None: p(x|y) of each class is linear-Gaussian for an affine f, but not p(x) (not computed)."""
        return None

    def forward(self, x: Tensor, n_samples: int = 1, *, y: Any = None) -> VAEOutput:
        """q(z|x, y), ``n_samples`` draws z (S, B, K), and p(x|z, y)."""
        q = self.encode(x, y)
        z = q.rsample((n_samples,))
        return VAEOutput(q, z, self.decode(z, y))

    def decoder_mean(self, z: Tensor, y: Any = None) -> Tensor:
        """E[x|z, y]."""
        return self.decode(z, y).mean

    @torch.no_grad()
    def sample(self, n: int, y: Any = None, *, generator: torch.Generator | None = None,
               mean: bool = True) -> Tensor:
        """n examples of class y: z ~ p(z) (as :meth:`VAE.sample` draws it, reproducibly with a
        ``generator``), then E[x|z, y] (``mean=True``) or x ~ p(x|z, y). ``y``: one label (an int or a
        class name) for all n, or n labels. (n, *data_shape)."""
        z = self.prior_draws(n, generator=generator)                        # (n, K)
        px = self.decode(z, self.labels(y, n))
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def sample_classes(self, rows: int, *, generator: torch.Generator | None = None, mean: bool = True) -> Tensor:
        """``rows`` draws z_r ~ p(z), each decoded in every class: (rows, C, *data_shape), [r, c] = E[x|z_r, c]
        (``mean``) or a draw x ~ p(x|z_r, c). A row holds one z (the same "style") in the C classes."""
        z = self.prior_draws(rows, generator=generator)                      # (rows, K)
        classes = torch.arange(self.num_classes, device=z.device)
        px = self.decode(z[:, None].expand(rows, self.num_classes, self.latent_dim), classes)   # batch (rows, C)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Any = None) -> Tensor:
        """E[x|z, y] at z = E_q[z] of q(z|x, y)."""
        return self.decode(self.summary(x, y), y).mean


class LabelledModel(LatentModel):
    """A :class:`ConditionalVAE` with its labels y fixed: the LatentModel of q(z|x, y), p(x|z, y) and p(z)
    for one batch of examples (y (B,)) or for one class (y ()), which objectives, estimators and the
    trainer use unchanged. Holds the model as a submodule (its parameters, train/eval mode and device)."""

    def __init__(self, model: ConditionalVAE, y: Tensor):
        super().__init__()
        self.model = model
        self.y = y
        self.data_shape = model.data_shape
        self.latent_dim = model.latent_dim
        self.training = model.training

    def prior(self) -> Distribution:
        return self.model.prior()

    def encode(self, x: Tensor) -> Distribution:
        return self.model.encode(x, self.y)

    def decode(self, z: Tensor, *, reduce: Reduction | None = None) -> Distribution:
        return self.model.decode(z, self.y, reduce=reduce)

    def log_pz(self, z: Tensor) -> Tensor:
        return self.model.log_pz(z)

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        return self.model.noise_shape

    @property
    def density_on_dequantised(self) -> bool:
        return self.model.density_on_dequantised

    @property
    def probability_of_levels(self) -> bool:
        return self.model.probability_of_levels

    @property
    def values_per_dim(self) -> int:
        return self.model.values_per_dim

    def summary(self, x: Tensor) -> Tensor:
        return self.model.summary(x, self.y)

    def decoder_mean(self, z: Tensor) -> Tensor:
        return self.model.decoder_mean(z, self.y)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.model.reconstruct(x, self.y)
