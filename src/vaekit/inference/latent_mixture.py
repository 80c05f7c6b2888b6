"""Ex-post density estimation on the latents (Ghosh et al. 2020, "From variational to deterministic
autoencoders", section 4; pythae's ``GaussianMixtureSampler``): a Gaussian mixture fitted on the aggregate
posterior q(z) = (1/N) Σ_i q(z|x_i) of a trained model, sampled instead of the prior p(z).

A VAE's prior and its aggregate posterior disagree (regions of p(z) that no q(z|x_i) covers decode to
poor samples); a mixture of C Gaussians fitted on points of the aggregate posterior,

    g(z) = Σ_c π_c N(z; m_c, S_c),

follows it more closely. The points are the posterior means E_q[z|x_i] of the training examples
(``fit_on="means"``, Ghosh et al.'s choice) or one draw z_i ~ q(z|x_i) each (``"draws"``, samples of q(z)
itself). The mixture is fitted by scikit-learn's ``GaussianMixture`` (EM, full covariances, ``reg_covar``
added to their diagonals) in float64; :meth:`LatentGMM.sample` draws c ~ Cat(π), then z = m_c + L_c ε with
S_c = L_c L_cᵀ (Cholesky) and ε ~ N(0, I), from a torch generator, and :func:`sample_gmm` decodes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.data.inputs import as_examples
from vaekit.errors import ConfigError
from vaekit.inference.objectives import evaluation_mode
from vaekit.models.protocol import LatentModel
from vaekit.prob.mixtures import Mixture, gaussian_mixture

__all__ = ["LatentGMM", "fit_latent_gmm", "sample_gmm", "FIT_ON"]

#: The points of the aggregate posterior a mixture can be fitted on.
FIT_ON = ("means", "draws")


@dataclass(frozen=True)
class LatentGMM:
    """A Gaussian mixture on the latent space: ``weights`` π (C,), ``means`` m (C, K), ``covariances`` S
    (C, K, K), float64; fitted on ``n`` points (``fit_on``: posterior means or draws) whose mean
    log-density under the mixture is ``log_likelihood`` (nats per point)."""

    weights: Tensor
    means: Tensor
    covariances: Tensor
    fit_on: str
    n: int
    log_likelihood: float

    @property
    def components(self) -> int:
        return int(self.weights.shape[0])

    def distribution(self) -> Mixture:
        """g(z) as a :class:`vaekit.prob.mixtures.Mixture` (event shape (K,)), for log_prob and moments."""
        return gaussian_mixture(self.weights, self.means, self.covariances)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ g(z), (n, K) float64, from ``generator`` alone (default: a fresh one seeded from torch's
        global generator): c ~ Cat(π), z = m_c + L_c ε (:meth:`vaekit.prob.mixtures.Mixture.sample_with`)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n: must be a positive integer, got {n!r}")
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        return self.distribution().sample_with(n, generator)


@torch.no_grad()
def _latent_points(model: LatentModel, x: Tensor, fit_on: str, batch_size: int, seed: int) -> np.ndarray:
    """E_q[z|x_i] or one z_i ~ q(z|x_i) per example, (N, K) float64; the draws from their own seeded
    generator (torch's global one is left as it was)."""
    points = []
    devices = [x.device] if x.device.type == "cuda" else []
    with evaluation_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            points.append(model.summary(xb) if fit_on == "means" else model.encode(xb).sample())
    return torch.cat(points).double().cpu().numpy()


def fit_latent_gmm(model: LatentModel, x: Any, *, components: int = 10, fit_on: str = "means", batch_size: int = 512,
                   seed: int = 0, reg_covar: float = 1e-6, max_iter: int = 200) -> LatentGMM:
    """Fit g(z) (module docstring) with ``components`` C full-covariance Gaussians on the aggregate
    posterior of the examples x (N, *data_shape), prepared for the model (a tensor, array, Dataset or
    DataLoader), N >= C: their posterior means (``fit_on="means"``) or one draw each (``"draws"``).
    ``seed`` seeds the draws and scikit-learn's k-means initialisation. A conditional model (whose
    q(z|x, y) and p(x|z, y) take labels) is a ConfigError."""
    from sklearn.mixture import GaussianMixture

    if fit_on not in FIT_ON:
        raise ConfigError(f"fit_on: unknown {fit_on!r}; choose {' or '.join(FIT_ON)}")
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ConfigError(f"components: must be a positive integer, got {components!r}")
    if int(getattr(model, "num_classes", 0) or 0):
        raise ConfigError("model: a conditional model's latents are given the labels; the mixture sampler applies "
                          "to an unconditional model")
    data = as_examples(x, name="x", data_shape=tuple(model.data_shape))
    if not isinstance(data, Tensor):
        raise ConfigError("x: the mixture is fitted on examples in memory, not a streamed file")
    if data.shape[0] < components:
        raise ConfigError(f"components: {components} Gaussians need at least as many examples, got {data.shape[0]}")
    param = next(iter(model.parameters()), None)
    data = data if param is None else data.to(device=param.device, dtype=param.dtype)
    points = _latent_points(model, data, fit_on, batch_size, seed)
    gmm = GaussianMixture(components, covariance_type="full", reg_covar=reg_covar, max_iter=max_iter,
                          random_state=seed).fit(points)
    return LatentGMM(weights=torch.as_tensor(gmm.weights_, dtype=torch.float64),
                     means=torch.as_tensor(gmm.means_, dtype=torch.float64),
                     covariances=torch.as_tensor(gmm.covariances_, dtype=torch.float64), fit_on=fit_on,
                     n=int(points.shape[0]), log_likelihood=float(gmm.score(points)))


@torch.no_grad()
def sample_gmm(model: LatentModel, gmm: LatentGMM, n: int, *, generator: torch.Generator | None = None,
               mean: bool = True) -> Tensor:
    """n examples decoded from z ~ g(z): E[x|z] (``mean``) or x ~ p(x|z) (torch's global generator, as
    :meth:`vaekit.VAE.sample`), (n, *data_shape). ``generator`` (on the CPU) draws z."""
    if gmm.means.shape[1] != int(model.latent_dim):
        raise ConfigError(f"gmm: a mixture on {gmm.means.shape[1]} latent dimensions, the model has {model.latent_dim}")
    param = next(iter(model.parameters()), None)
    z = gmm.sample(n, generator=generator)
    z = z.float() if param is None else z.to(device=param.device, dtype=param.dtype)
    with evaluation_mode(model):
        px = model.decode(z)
        return px.mean if mean else px.sample()
