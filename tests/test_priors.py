"""Learned priors (vaekit.models.priors, vaekit.prob.mixtures): the mixture of Gaussians and the VampPrior.

Their densities against SciPy and against a direct computation with the encoder, the Monte Carlo KL
against closed forms, log p(x) against the exact value of a linear-Gaussian model with a mixture
prior, the per-dimension KL against numerical integration, reproducible sampling, configuration and
files, and one-line errors for bad arguments.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import integrate, stats
from scipy.special import logsumexp
from torch import Tensor

import vaekit
import vaekit.prob.mixtures as mixtures
from vaekit import VAEConfig, build_vae
from vaekit.cli import main
from vaekit.errors import ConfigError, ShapeError
from vaekit.inference.estimators import estimate_log_likelihood
from vaekit.inference.objectives import IWAE, elbo_terms
from vaekit.models.priors import MixturePrior, VampPrior
from vaekit.prob.distributions import DiagonalNormal, kl_divergence, rsample_with_log_prob
from vaekit.prob.mixtures import Mixture
from vaekit.store.model_files import load_model, save_model
from vaekit.training import fit


def _model(prior: str, prior_args: dict, seed: int = 0, **kw) -> vaekit.VAE:
    torch.manual_seed(seed)
    return build_vae(VAEConfig((1, 4, 4), latent_dim=3, hidden=(8,), prior=prior, prior_args=prior_args,
                               **kw)).double()


def _x(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _randomise_mixture(model: vaekit.VAE, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    prior = model.prior_module
    with torch.no_grad():
        for p in (prior.logits, prior.loc, prior.log_var):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_mixture_log_prob_matches_scipy_and_chunks_agree(monkeypatch):
    model = _model("mixture", {"components": 4})
    _randomise_mixture(model)
    prior = model.prior()
    z = torch.randn(5, 7, 3, dtype=torch.float64)
    got = prior.log_prob(z)
    pi = torch.softmax(model.prior_module.logits, 0).detach().numpy()
    mu, sd = prior.component_distribution.loc.detach().numpy(), prior.component_distribution.scale.detach().numpy()
    zn = z.numpy().reshape(-1, 3)
    per = np.stack([stats.norm.logpdf(zn, mu[c], sd[c]).sum(-1) + np.log(pi[c]) for c in range(4)], -1)
    np.testing.assert_allclose(got.detach().numpy().reshape(-1), logsumexp(per, -1), rtol=1e-12)
    monkeypatch.setattr(mixtures, "CHUNK_BUDGET", 4 * 3 * 2)            # chunks of 2 rows
    torch.testing.assert_close(prior.log_prob(z), got, rtol=0, atol=0)
    with pytest.raises(ShapeError, match="latent size 3"):
        prior.log_prob(torch.zeros(2, 4, dtype=torch.float64))


def _float32_mixture(g: torch.Generator, c: int = 7, k: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, means and scales of a float32 mixture with scales from 0.01 to 3 and means up to ±6 (large
    terms for the expanded square to cancel)."""
    logits = torch.randn(c, generator=g)
    loc = 6 * (2 * torch.rand(c, k, generator=g) - 1)
    scale = torch.exp(torch.empty(c, k).uniform_(math.log(0.01), math.log(3.0), generator=g))
    return logits, loc, scale


def test_float32_cpu_mixture_products_match_float64_values_and_gradients(monkeypatch):
    g = torch.Generator().manual_seed(4)
    logits, loc, scale = _float32_mixture(g)
    z = loc[torch.randint(0, 7, (40,), generator=g)] + 0.02 * torch.randn(40, 5, generator=g)   # near components
    z = torch.cat([z, 3 * torch.randn(40, 5, generator=g)]).reshape(4, 20, 5)
    log_w = torch.log_softmax(logits.double(), 0).numpy()
    zn = z.double().numpy().reshape(-1, 5)
    per = np.stack([stats.norm.logpdf(zn, loc[i].double().numpy(), scale[i].double().numpy()).sum(-1) + log_w[i]
                    for i in range(7)], -1)
    want = logsumexp(per, -1).reshape(4, 20)

    def value_and_grads(mix_dtype, direct=False):
        with monkeypatch.context() as m:
            m.setattr(mixtures, "PRODUCTS_MIN_COMPONENTS", 1 if not direct else 10**9)
            args = [t.detach().to(mix_dtype).clone().requires_grad_() for t in (z, loc, scale)]
            mix = Mixture(logits.to(mix_dtype), DiagonalNormal(args[1], args[2]))
            assert mix._uses_products(args[0]) == (mix_dtype == torch.float32 and not direct)
            out = mix.log_prob(args[0])
            out.sum().backward()
            return out.detach(), [a.grad for a in args]

    got, grads = value_and_grads(torch.float32)
    assert got.dtype == torch.float32 and all(gr.dtype == torch.float32 for gr in grads)
    scale_of = np.maximum(np.abs(want), 1.0)
    err_products = np.max(np.abs(got.double().numpy() - want) / scale_of)
    err_direct = np.max(np.abs(value_and_grads(torch.float32, direct=True)[0].double().numpy() - want) / scale_of)
    assert err_products < 1e-6 and err_products <= err_direct + 1e-7     # a few float32 roundings, as the direct form
    _, grads64 = value_and_grads(torch.float64)
    for got_grad, want_grad in zip(grads, grads64, strict=True):
        torch.testing.assert_close(got_grad.double(), want_grad, rtol=2e-5, atol=2e-5 * float(want_grad.abs().max()))
    mix = Mixture(logits, DiagonalNormal(loc, scale))
    with torch.no_grad():                                # 7 components: the products without gradients only
        assert mix._uses_products(z.clone().requires_grad_())
        assert not Mixture(logits.double(), DiagonalNormal(loc.double(), scale.double()))._uses_products(z.double())
        torch.testing.assert_close(mix.log_prob(z), got, rtol=0, atol=0)
        monkeypatch.setattr(mixtures, "CHUNK_BUDGET", 2 * (7 + 10))      # chunks of 2 rows
        torch.testing.assert_close(mix.log_prob(z), got, rtol=0, atol=0)
    assert not mix._uses_products(z.clone().requires_grad_()) and mix._uses_products(z)


def test_full_covariance_components_match_scipy_and_sample_with_their_law():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    cov = a @ a.transpose(-1, -2) + 0.5 * torch.eye(3, dtype=torch.float64)
    loc = torch.tensor([[40.0, 0.0, 0.0], [-40.0, 1.0, 0.0]], dtype=torch.float64)   # far apart
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)        # π = (1/4, 3/4)
    mix = Mixture(logits, torch.distributions.MultivariateNormal(loc, covariance_matrix=cov))
    z = torch.randn(9, 3, generator=g, dtype=torch.float64)
    want = logsumexp(np.stack([stats.multivariate_normal(loc[c].numpy(), cov[c].numpy()).logpdf(z.numpy())
                               + math.log(w) for c, w in enumerate((0.25, 0.75))], -1), -1)
    np.testing.assert_allclose(mix.log_prob(z).numpy(), want, rtol=1e-10)
    draws = mix.sample_with(20000, torch.Generator().manual_seed(1))
    first = draws[:, 0] > 0
    assert abs(float(first.double().mean()) - 0.25) < 0.015                  # 5 standard errors
    torch.testing.assert_close(torch.cov(draws[first].T), cov[0], rtol=0.1, atol=0.1)
    torch.testing.assert_close(draws[~first].mean(0), loc[1], rtol=0, atol=0.1)


def test_vamp_log_prob_is_the_mean_of_the_encoders_posteriors_at_the_pseudo_inputs():
    for posterior in ("diagonal", "full"):
        model = _model("vamp", {"pseudo_inputs": 5, "init_std": 0.5}, posterior=posterior)
        z = torch.randn(4, 6, 3, dtype=torch.float64)
        q_u = model.encode(model.prior_module.pseudo_inputs)
        direct = torch.stack([q_u.log_prob(z.unsqueeze(-2).expand(4, 6, 5, 3))[..., c] for c in range(5)], -1)
        want = torch.logsumexp(direct, -1) - math.log(5)
        torch.testing.assert_close(model.log_pz(z), want, rtol=1e-12, atol=1e-12)
        one = [torch.distributions.MultivariateNormal(q_u.mean[c], q_u.covariance_matrix[c]) if posterior == "full"
               else DiagonalNormal(q_u.loc[c], q_u.scale[c]) for c in range(5)]
        by_hand = torch.logsumexp(torch.stack([d.log_prob(z) for d in one], -1), -1) - math.log(5)
        torch.testing.assert_close(model.log_pz(z), by_hand, rtol=1e-10, atol=1e-10)


def test_vamp_with_a_flow_posterior_mixes_the_base_gaussians_and_never_inverts_the_flow(monkeypatch):
    """With --posterior iaf the VampPrior is (1/C) Σ_c N(z; μ(u_c), diag σ²(u_c)), the flow's base Gaussians at
    the pseudo-inputs (SciPy's normal log-densities, summed by hand); training and evaluating it never call the
    flow's inverse (which costs K sequential passes per (z, component) pair)."""
    from vaekit.prob.flows import FlowPosterior

    model = _model("vamp", {"pseudo_inputs": 5, "init_std": 0.5}, posterior="iaf")
    z = torch.randn(4, 6, 3, dtype=torch.float64)
    with torch.no_grad():
        q_u = model.encode(model.prior_module.pseudo_inputs)
    assert isinstance(q_u, FlowPosterior)
    loc, scale = q_u.base.loc.numpy(), q_u.base.scale.numpy()                                # (5, 3)
    per_component = stats.norm.logpdf(z.numpy()[..., None, :], loc, scale).sum(-1)          # (4, 6, 5)
    want = logsumexp(per_component, axis=-1) - math.log(5)
    np.testing.assert_allclose(model.log_pz(z).detach().numpy(), want, rtol=1e-10, atol=1e-10)

    def no_inverse(self, value):
        raise AssertionError("the flow was inverted")

    monkeypatch.setattr(FlowPosterior, "log_prob", no_inverse)
    x = _x(6)
    (-elbo_terms(model, x, n_samples=2).objective.mean()).backward()
    assert model.prior_module.pseudo_inputs.grad is not None
    assert torch.isfinite(estimate_log_likelihood(model, x, n_samples=8).log_likelihood).all()


def _kl_check(model: vaekit.VAE, gaussian_prior: torch.distributions.Distribution) -> None:
    """The objective's Monte Carlo KL uses the objective's own draws, and over many draws its mean is the
    closed form KL(q || p) for a prior that is a Gaussian in disguise."""
    x = _x(4)
    with torch.no_grad():
        q = model.encode(x)
        exact = kl_divergence(q, gaussian_prior)                          # closed form (registered)
    s = 5000
    eps = torch.randn(s, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z, _ = rsample_with_log_prob(q, s, eps)
    per_draw = (q.log_prob(z) - model.log_pz(z)).detach()                 # (S, B)
    terms = elbo_terms(model, x, n_samples=s, eps=eps)
    torch.testing.assert_close(terms.kl.detach(), per_draw.mean(0), rtol=1e-10, atol=1e-10)
    se = per_draw.std(0) / math.sqrt(s)
    assert bool(((per_draw.mean(0) - exact.detach()).abs() < 5 * se + 1e-9).all()), (per_draw.mean(0), exact)
    assert float(exact.min()) > 0.05                                      # not trivially 0


def test_monte_carlo_kl_is_unbiased_for_a_one_component_mixture():
    model = _model("mixture", {"components": 1})
    _randomise_mixture(model)
    with torch.no_grad():
        comp = model.prior().component_distribution
    _kl_check(model, DiagonalNormal(comp.loc[0], comp.scale[0]))


def test_monte_carlo_kl_is_unbiased_for_a_vamp_prior_with_one_pseudo_input():
    model = _model("vamp", {"pseudo_inputs": 1, "init_std": 1.0})
    with torch.no_grad():
        q_u = model.encode(model.prior_module.pseudo_inputs)
    _kl_check(model, DiagonalNormal(q_u.loc[0], q_u.scale[0]))


def test_log_likelihood_of_a_linear_gaussian_model_with_a_mixture_prior_is_exact():
    """arch linear, x = W z + b + N(0, c I), p(z) = Σ π_c N(μ_c, diag σ_c²): p(x) = Σ π_c N(W μ_c + b,
    W diag σ_c² Wᵀ + c I). The importance-sampled log p(x) reaches it; the IWAE bound and the gap are consistent."""
    torch.manual_seed(0)
    model = build_vae(VAEConfig((3,), latent_dim=2, arch="linear", decoder_variance=0.3, prior="mixture",
                                prior_args={"components": 2})).double()
    _randomise_mixture(model)
    with torch.no_grad():                                      # q_x(z) = N(0, 2 I): a broad proposal
        for head in (model.encoder.mean, model.encoder.log_var):
            head.weight.zero_()
            head.bias.fill_(0.0 if head is model.encoder.mean else math.log(2.0))
    assert model.closed_form() is None                         # the N(0, I) closed form does not apply
    W, b = model.decoder.f.weight.detach(), model.decoder.f.bias.detach()
    prior = model.prior()
    mu, sd = prior.component_distribution.loc.detach(), prior.component_distribution.scale.detach()
    pi = torch.softmax(model.prior_module.logits.detach(), 0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = logsumexp(np.stack([stats.multivariate_normal((W @ mu[c] + b).numpy(),
                                                          (W @ torch.diag(sd[c] ** 2) @ W.T).numpy()
                                                          + 0.3 * np.eye(3)).logpdf(x.numpy()) + math.log(pi[c])
                                for c in range(2)], -1), -1)
    torch.manual_seed(5)
    est = estimate_log_likelihood(model, x, n_samples=50000)
    assert bool((est.standard_error < 0.015).all())
    error = (est.log_likelihood - torch.as_tensor(exact)).abs()
    assert bool((error < 4 * est.standard_error).all()), (est.log_likelihood, exact, est.standard_error)
    assert bool((est.posterior_gap >= 0).all()) and bool((est.elbo <= est.log_likelihood).all())
    bound = IWAE(samples=50).terms(model, x).objective
    assert bool((bound <= torch.as_tensor(exact) + 0.1).all()) and bool((bound > est.elbo - 0.5).all())


def _marginal_kl_by_quad(m: float, v: float, pi: np.ndarray, mu: np.ndarray, var: np.ndarray) -> float:
    q = stats.norm(m, math.sqrt(v))

    def integrand(t: float) -> float:
        log_p = logsumexp(np.log(pi) + stats.norm.logpdf(t, mu, np.sqrt(var)))
        return float(q.pdf(t) * (q.logpdf(t) - log_p))
    sd = math.sqrt(v)
    return integrate.quad(integrand, m - 12 * sd, m + 12 * sd, limit=200, epsabs=1e-12)[0]


def test_kl_per_dimension_against_a_mixture_prior():
    model = _model("mixture", {"components": 3})
    _randomise_mixture(model)
    x = _x(3)
    got = vaekit.kl_per_dimension(model, x)                            # (B, K)
    with torch.no_grad():
        q, prior = model.encode(x), model.prior()
    pi = torch.softmax(model.prior_module.logits, 0).detach().numpy()
    mu, sd = prior.component_distribution.loc.detach().numpy(), prior.component_distribution.scale.detach().numpy()
    for b in range(2):
        for i in range(3):
            want = _marginal_kl_by_quad(float(q.loc[b, i]), float(q.scale[b, i]) ** 2, pi, mu[:, i], sd[:, i] ** 2)
            assert abs(float(got[b, i]) - want) < 2e-4 * max(1.0, want), (b, i, float(got[b, i]), want)
    # one component: the Gaussian closed form, exactly (log p_i is quadratic), also for a full-covariance q
    one = _model("mixture", {"components": 1}, posterior="full")
    _randomise_mixture(one)
    qf, comp = one.encode(x), one.prior().component_distribution
    var = qf.covariance_matrix.diagonal(dim1=-2, dim2=-1)
    want = 0.5 * ((var + (qf.loc - comp.loc[0]) ** 2) / comp.scale[0] ** 2 - 1 + (comp.scale[0] ** 2 / var).log())
    torch.testing.assert_close(vaekit.kl_per_dimension(one, x), want.detach(), rtol=1e-9, atol=1e-9)


def test_free_bits_per_dimension_are_refused_with_learned_priors():
    """A mixture's per-dimension marginal KLs do not add up to the KL (the objective would exceed or fall short
    of the ELBO without saying so): free bits per dimension are refused, in the objective and in the config."""
    for prior, args in (("mixture", {"components": 3}), ("vamp", {"pseudo_inputs": 4})):
        model = _model(prior, args)
        with pytest.raises(ConfigError, match="free_bits: need a KL that is a sum over latent dimensions"):
            elbo_terms(model, _x(8), free_bits=5.0)
        with pytest.raises(ConfigError, match=f"free_bits: .*against the {prior} prior the KL is no sum"):
            model.config.free_bits_groups()


def test_sample_with_a_generator_is_reproducible_and_leaves_the_global_generator_alone():
    for prior, args in (("mixture", {"components": 3}), ("vamp", {"pseudo_inputs": 4, "init_std": 1.0})):
        model = _model(prior, args)
        state = torch.get_rng_state()
        a = model.sample(5, generator=torch.Generator().manual_seed(7))
        b = model.sample(5, generator=torch.Generator().manual_seed(7))
        c = model.sample(5, generator=torch.Generator().manual_seed(8))
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (5, 1, 4, 4)
    # the draws are z = μ_c + σ_c ε with c ~ π: a mixture with one component gives exactly μ + σ ε
    one = _model("mixture", {"components": 1})
    _randomise_mixture(one)
    z = one.prior().sample_with(4, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    torch.multinomial(torch.ones(1, dtype=torch.float64), 4, replacement=True, generator=g)
    comp = one.prior().component_distribution
    eps = torch.randn((4, 3), generator=g, dtype=torch.float64)
    torch.testing.assert_close(z, comp.loc[0] + comp.scale[0] * eps)


def test_configuration_and_model_files_round_trip(tmp_path):
    for prior, args in (("mixture", {"components": 3}), ("vamp", {"pseudo_inputs": 4})):
        config = VAEConfig((1, 4, 4), latent_dim=3, hidden=(8,), prior=prior, prior_args=args)
        assert VAEConfig.from_dict(config.to_dict()) == config
        stored = config.to_dict()["prior_args"]
        assert stored == ({"components": 3} if prior == "mixture"
                          else {"pseudo_inputs": 4, "init_mean": 0.5, "init_std": 0.01})
        torch.manual_seed(0)
        model = build_vae(config)
        with torch.no_grad():
            for p in model.prior_module.parameters():
                p.add_(0.3)                                      # learned values, not the initial ones
        save_model(model, tmp_path / prior)
        loaded = load_model(tmp_path / prior)
        assert isinstance(loaded.prior_module, MixturePrior if prior == "mixture" else VampPrior)
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key
        z = torch.randn(6, 3)
        torch.testing.assert_close(loaded.log_pz(z), model.log_pz(z), rtol=0, atol=0)


@pytest.mark.parametrize(("prior", "args", "message"), [
    ("mixture", {"components": 0}, r"components must be an integer from 1"),
    ("mixture", {"components": 2.5}, r"components must be an integer"),
    ("mixture", {"components": True}, r"components must be an integer"),
    ("mixture", {"components": "3"}, r"components must be an integer"),
    ("mixture", {"pseudo_inputs": 3}, r"mixture prior takes \['components'\], got unknown \['pseudo_inputs'\]"),
    ("vamp", {"pseudo_inputs": -1}, r"pseudo_inputs must be an integer from 1"),
    ("vamp", {"pseudo_inputs": 10**9}, r"pseudo_inputs must be an integer from 1 to 100000"),
    ("vamp", {"init_std": -0.1}, r"init_std must be a finite number >= 0"),
    ("vamp", {"init_mean": float("nan")}, r"init_mean must be a finite number"),
    ("vamp", {"components": 3}, r"vamp prior takes .*unknown \['components'\]"),
    ("standard", {"components": 3}, r"standard prior takes none"),
    ("mixture", [3], r"expected a JSON object"),
])
def test_bad_prior_args_are_one_line_config_errors(prior, args, message):
    with pytest.raises(ConfigError, match=message) as info:
        VAEConfig((1, 4, 4), prior=prior, prior_args=args)
    assert "\n" not in str(info.value) and "prior_args" in str(info.value)


def test_bad_prior_args_on_the_command_line_exit_2_with_one_line(tmp_path, capsys):
    code = main(["train", "--data", "digits", "--prior", "vamp", "--prior-args", '{"pseudo_inputs": 0}',
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress", "--no-figures"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pseudo_inputs" in err, err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_vamp_refuses_an_encoder_whose_posteriors_make_no_mixture():
    class Moments(torch.nn.Module):                              # returns the wrong batch shape
        def forward(self, x):
            return DiagonalNormal(torch.zeros(1, 3, dtype=x.dtype), torch.ones(1, 3, dtype=x.dtype))

    model = _model("vamp", {"pseudo_inputs": 4})
    model.encoder = Moments()
    with pytest.raises(ConfigError, match=r"batch shape \(4,\) and event shape \(3,\), got batch shape \(1,\)"):
        model.prior()

    class NoDensity(torch.distributions.Distribution):
        arg_constraints: dict = {}

        def __init__(self, n):
            super().__init__(torch.Size([n]), torch.Size([3]), validate_args=False)

    class NoDensityEncoder(torch.nn.Module):
        def forward(self, x):
            return NoDensity(x.shape[0])

    model.encoder = NoDensityEncoder()
    with pytest.raises(ConfigError, match="has no log_prob"):
        model.prior()


# ---- slow: real runs ---------------------------------------------------------------------------------------------

def _vaekit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["vamp", "mixture"])
def test_cli_train_evaluate_sample_with_a_learned_prior(tmp_path, prior):
    run = tmp_path / "run"
    proc = _vaekit("train", "--data", "digits", "--prior", prior, "--latent-dim", "4", "--hidden", "32",
                   "--epochs", "2", "--batch-size", "128", "--importance-samples", "50", "--no-progress",
                   "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["prior"] == prior and model["prior_args"] == ({"pseudo_inputs": 500, "init_mean": 0.5,
                                                                "init_std": 0.01} if prior == "vamp"
                                                               else {"components": 10})
    figures = {p.name for p in (run / "figures").glob("*.png")}
    assert {"prior-samples.png", "latent-traversals.png"} <= figures and (run / "report.html").is_file()
    ev = _vaekit("evaluate", str(run), "--importance-samples", "100", "--limit", "50", "--json")
    assert ev.returncode == 0, ev.stderr
    doc = json.loads(ev.stdout)
    assert math.isfinite(doc["log_likelihood"]) and doc["log_likelihood"] >= doc["elbo"] - 1
    assert doc["posterior_gap"] >= 0 and doc["exact_log_likelihood"] is None
    out = tmp_path / "samples.npy"
    arrays = []
    for _ in range(2):
        sample = _vaekit("sample", str(run), "--n", "9", "--seed", "4", "--out", str(out), "--force")
        assert sample.returncode == 0, sample.stderr
        arrays.append(np.load(out))
    assert arrays[0].shape == (9, 1, 8, 8) and np.isfinite(arrays[0]).all()
    np.testing.assert_array_equal(arrays[0], arrays[1])                   # --seed makes the draws reproducible


VAMP = {"prior": "vamp", "prior_args": {"pseudo_inputs": 20, "init_std": 0.3}}


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_a_vamp_prior(tmp_path, monkeypatch):
    """tests/test_distributed.py's claim with the VampPrior: its pseudo-inputs' encoder pass and gradients
    make a step on 2 ranks the step of one process (float64, to rounding)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import prior_ddp_worker
    from test_distributed import _env

    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**_env(), "VAEKIT_TEST_PRIOR": json.dumps(VAMP)}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node=2",
                           str(Path(__file__).with_name("prior_ddp_worker.py")), str(tmp_path), "48", "16", "2",
                           "learned"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    monkeypatch.setattr(prior_ddp_worker.ddp_worker, "VAEConfig", prior_ddp_worker.ddp_worker.VAEConfig)
    prior_ddp_worker.use_prior(VAMP)
    model, train_x, val_x, config, pp = prior_ddp_worker.ddp_worker.train_setup(48, 16, 2, "learned")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, train_x, val_x, config, preprocessing=pp)
    ddp = load_file(str(tmp_path / "params.safetensors"))
    assert set(ddp) == set(model.state_dict()) and "prior_module.pseudo_inputs" in ddp
    key = "prior_module.pseudo_inputs"
    moved = float((model.state_dict()[key] - initial[key]).abs().max())
    assert moved > 1e-4                                                    # the pseudo-inputs did learn
    for k, value in model.state_dict().items():
        torch.testing.assert_close(ddp[k], value, rtol=1e-10, atol=1e-12, msg=k)
    history = json.loads((tmp_path / "rank0.json").read_text())["val_elbo"]
    assert history == pytest.approx([m.val_elbo for m in result.history], abs=1e-9)


@pytest.mark.slow
def test_interrupted_vamp_run_resumes_to_the_uninterrupted_one_bit_for_bit(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent))
    from resume_check import assert_resume_is_exact

    def model():
        torch.manual_seed(0)
        return build_vae(VAEConfig((1, 8, 8), latent_dim=2, hidden=(32,), **VAMP))

    assert assert_resume_is_exact(tmp_path, monkeypatch, model, at=12, signum=signal.SIGTERM)["step"] == 11
