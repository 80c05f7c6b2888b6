"""The VAE: prior p(z) = N(0, I), decoder p(x|z), encoder q_x(z). It returns distributions and
computes no loss (the objectives in :mod:`vaekit.objectives` do).

Build one from a :class:`VAEConfig` with :func:`build_vae`, or from modules of your own with
``VAE(encoder, decoder)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .decoders import BernoulliDecoder, Decoder, GaussianDecoder
from .distributions import DiagonalNormal, standard_normal
from .encoders import COVARIANCES, GaussianEncoder
from .errors import ConfigError
from .networks import ACTIVATIONS, MLP, Affine, Flatten
from .variance import DecoderVariance, FixedVariance, LearnedVariance, OptimalVariance

__all__ = ["VAE", "VAEConfig", "VAEOutput", "build_vae", "ARCHITECTURES", "LIKELIHOODS", "VARIANCE_MODES"]

ARCHITECTURES = ("mlp", "linear")
LIKELIHOODS = ("gaussian", "bernoulli")
#: Decoder variance modes besides a fixed positive number.
VARIANCE_MODES = ("learned", "learned-per-dim", "optimal")


@dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild a model (stored as JSON beside its weights).

    ``decoder_variance`` is the seed's c: a float > 0 (fixed), ``"learned"`` (one shared scalar),
    ``"learned-per-dim"`` (one per data dimension) or ``"optimal"`` (c* = mean squared error).
    It is ignored by the Bernoulli likelihood.
    """

    data_shape: tuple[int, ...]
    latent_dim: int = 16
    arch: str = "mlp"
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "gaussian"
    decoder_variance: float | str = 1.0
    posterior: str = "diagonal"
    initial_variance: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_shape", tuple(int(s) for s in self.data_shape))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.data_shape or any(s <= 0 for s in self.data_shape):
            raise ConfigError(f"data_shape: every size must be positive, got {self.data_shape}")
        if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
            raise ConfigError(f"latent_dim: must be a positive integer, got {self.latent_dim!r}")
        if any(h <= 0 for h in self.hidden):
            raise ConfigError(f"hidden: every width must be positive, got {self.hidden}")
        for name, value, allowed in (("arch", self.arch, ARCHITECTURES), ("likelihood", self.likelihood, LIKELIHOODS),
                                     ("posterior", self.posterior, COVARIANCES),
                                     ("activation", self.activation, tuple(ACTIVATIONS))):
            if value not in allowed:
                raise ConfigError(f"{name}: unknown {value!r}; choose one of {list(allowed)}")
        c = self.decoder_variance
        if isinstance(c, str):
            if c not in VARIANCE_MODES:
                try:
                    c = float(c)
                except ValueError:
                    raise ConfigError(f"decoder_variance: expected a number > 0 or one of {list(VARIANCE_MODES)}, "
                                      f"got {c!r}") from None
        if not isinstance(c, str):
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
                raise ConfigError(f"decoder_variance: the constant c must be a finite number > 0, got {c!r}")
            c = float(c)
        object.__setattr__(self, "decoder_variance", c)
        if not (math.isfinite(self.initial_variance) and self.initial_variance > 0):
            raise ConfigError(f"initial_variance: must be a finite number > 0, got {self.initial_variance!r}")

    @property
    def data_dim(self) -> int:
        """Number of dimensions of one example, D = prod(data_shape)."""
        return math.prod(self.data_shape)

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["data_shape"], d["hidden"] = list(self.data_shape), list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model config: unknown keys {unknown}; known keys are {sorted(known)}")
        if "data_shape" not in d:
            raise ConfigError("model config: missing required key 'data_shape'")
        return cls(**d)


@dataclass(frozen=True)
class VAEOutput:
    """One pass x → q_x(z) → z ~ q_x(z) → p(x|z). ``z`` has shape (S, B, latent_dim)."""

    posterior: Distribution
    z: Tensor
    likelihood: Distribution


class VAE(nn.Module):
    """p(z) = N(0, I);  p(x|z) = ``decoder(z)``;  q_x(z) = ``encoder(x)``.

    ``encoder``: x (B, *data_shape) ↦ a distribution over z with batch shape (B,) and event shape
    (latent_dim,), with ``rsample``. ``decoder``: z (*lead, latent_dim) ↦ p(x|z) with batch shape
    ``lead`` and event shape ``data_shape``; a :class:`~vaekit.decoders.Decoder` gives ``mean_of``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, data_shape: tuple[int, ...],
                 config: VAEConfig | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.config = config
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # tracks device and dtype

    def prior(self) -> DiagonalNormal:
        """p(z) = N(0, I) on the model's device and dtype."""
        return standard_normal(self.latent_dim, device=self._anchor.device, dtype=self._anchor.dtype)

    def encode(self, x: Tensor) -> Distribution:
        """q_x(z) = N(g(x), h(x)) for x of shape (B, *data_shape)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z) for z of shape (*lead, latent_dim)."""
        return self.decoder(z)

    def forward(self, x: Tensor, n_samples: int = 1) -> VAEOutput:
        """q_x(z), ``n_samples`` reparameterised draws z ~ q_x(z) (S, B, K), and p(x|z)."""
        q = self.encode(x)
        z = q.rsample((n_samples,))
        return VAEOutput(q, z, self.decode(z))

    def decoder_mean(self, z: Tensor) -> Tensor:
        """E[x|z]: f(z) for a Gaussian decoder, sigmoid(f(z)) for a Bernoulli one."""
        return self.decode(z).mean

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, mean: bool = True) -> Tensor:
        """n examples from the model: z ~ p(z), then E[x|z] (``mean=True``) or x ~ p(x|z). (n, *data_shape)."""
        if n <= 0:
            raise ConfigError(f"sample: n must be positive, got {n}")
        z = torch.randn(n, self.latent_dim, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)
        px = self.decode(z)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x|z] at z = E_q[z] = g(x): the reconstruction of x (B, *data_shape)."""
        return self.decode(self.encode(x).mean).mean


def _variance(config: VAEConfig) -> DecoderVariance:
    c = config.decoder_variance
    if c == "learned":
        return LearnedVariance((), init=config.initial_variance)
    if c == "learned-per-dim":
        return LearnedVariance(config.data_shape, init=config.initial_variance)
    if c == "optimal":
        return OptimalVariance(init=config.initial_variance)
    return FixedVariance(float(c))


def build_vae(config: VAEConfig) -> VAE:
    """The model a :class:`VAEConfig` describes.

    ``arch="mlp"``: g, h share an MLP trunk of widths ``hidden``; f is an MLP with the widths reversed.
    ``arch="linear"``: g, h are affine in x and f(z) = Wz + b (probabilistic PCA when Gaussian).
    """
    shape, k = config.data_shape, config.latent_dim
    if config.arch == "mlp":
        if not config.hidden:
            raise ConfigError("hidden: the mlp architecture needs at least one hidden layer")
        trunk: nn.Module = MLP(shape, config.hidden, None, config.activation)
        f: nn.Module = MLP(k, tuple(reversed(config.hidden)), config.data_dim, config.activation)
    else:
        trunk = Flatten(shape)
        f = Affine(k, config.data_dim)
    encoder = GaussianEncoder(trunk, trunk.out_features, k, shape, config.posterior)
    decoder: Decoder
    if config.likelihood == "gaussian":
        decoder = GaussianDecoder(f, k, shape, _variance(config))
    else:
        decoder = BernoulliDecoder(f, k, shape)
    return VAE(encoder, decoder, k, shape, config=config)
