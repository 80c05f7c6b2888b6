"""The linear family lands on the closed-form optimum (issue 30, item 1): its own training defaults, the
closed-form start ``--init ppca``, and (slow) the held-out check of benchmarks/ppca_heldout.py with the CLI's
defaults, where ``--precision auto`` must not move a reported number beyond its standard error."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit import ppca_mle
from vaekit.cli import train_options as options
from vaekit.store.runs import DataSpec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from ppca_heldout import ppca_table  # noqa: E402


def _resolve(*argv: str) -> dict:
    args = argparse.Namespace(config=None, **{o.name: None for o in options.OPTIONS})
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        setattr(args, flag, options.BY_NAME[flag].parse(value))
    return options.resolve(args)[0]


def test_the_linear_family_has_its_own_step_size_unless_one_is_set():
    assert (_resolve()["lr"], _resolve()["schedule"]) == (1e-3, "constant")
    assert (_resolve("arch", "linear")["lr"], _resolve("arch", "linear")["schedule"]) == (0.03, "cosine")
    assert _resolve("arch", "linear", "lr", "0.002")["lr"] == 0.002                  # the user's choice wins
    assert _resolve("arch", "linear", "schedule", "constant")["schedule"] == "constant"
    assert _resolve("arch", "linear", "init", "ppca")["lr"] == 1e-4                  # from the optimum: small steps


def _train(tmp_path: Path, name: str, *extra: str, epochs: int = 200, seed: int = 1,
           rows: int = 1000) -> tuple[dict, float]:
    """Train the CLI on a pPCA table (20 columns, 3 latents, ``rows`` rows); its evaluation and the MLE's test
    log-likelihood (the pPCA fit of the run's own training split, scored on its test split)."""
    table = tmp_path / "ppca.csv"
    if not table.exists():
        np.savetxt(table, ppca_table(rows, 20, 3, seed, 1.0, 0.5), delimiter=",", fmt="%.10g")
    run = tmp_path / name
    cmd = [sys.executable, "-m", "vaekit", "train", "--data", str(table), "--standardize", "none", "--arch", "linear",
           "--latent-dim", "3", "--posterior", "full", "--epochs", str(epochs), "--out", str(run), "--no-figures",
           "--no-progress", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluation = json.loads((run / "evaluation-test.json").read_text())
    data = DataSpec.from_dict(evaluation["data"]).load()
    train, test = (torch.as_tensor(np.asarray(a), dtype=torch.float64).reshape(len(a), -1)
                   for a in (data.train, data.test))
    return evaluation, float(ppca_mle(train, 3).log_marginal(test).mean())


def test_init_ppca_starts_at_the_closed_form_optimum(tmp_path):
    """One epoch from --init ppca: the test log-likelihood is the MLE's to 0.01 nats, the posterior exact
    (KL(q || p(z|x)) < 0.01), and the gap terms reported exact."""
    evaluation, mle = _train(tmp_path, "init", "--init", "ppca", "--importance-samples", "50", epochs=1, rows=300)
    assert abs(evaluation["exact_log_likelihood"] - mle) < 0.01, (evaluation["exact_log_likelihood"], mle)
    assert evaluation["exact_posterior_gap"] < 0.01
    assert "exact_posterior_gap" in evaluation["exact"] and "log_likelihood" not in evaluation["exact"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_defaults_reach_the_ppca_optimum_held_out(tmp_path, seed):
    """The issue's check: CLI defaults (with --standardize none, --posterior full) within 0.05 nats of the
    closed-form maximum-likelihood test log-likelihood in 200 epochs; and fp32 against auto (bf16 where the
    CPU has native bf16 products): every reported log-density within its own standard error."""
    auto, mle = _train(tmp_path, "auto", seed=seed)
    assert mle - auto["exact_log_likelihood"] < 0.05, (mle, auto["exact_log_likelihood"])
    fp32, _ = _train(tmp_path, "fp32", "--precision", "fp32", seed=seed)
    assert mle - fp32["exact_log_likelihood"] < 0.05
    assert abs(auto["log_likelihood"] - fp32["log_likelihood"]) < max(auto["log_likelihood_se"],
                                                                      fp32["log_likelihood_se"])
    assert abs(auto["exact_log_likelihood"] - fp32["exact_log_likelihood"]) < auto["log_likelihood_se"]
    assert abs(auto["elbo"] - fp32["elbo"]) < auto["log_likelihood_se"]


@pytest.mark.parametrize(("posterior", "variance"), [("diagonal", "optimal"), ("full", "learned"), ("full", 0.7)])
def test_init_ppca_sets_the_exact_model(float64, posterior, variance):
    """The decoder is the pPCA MLE (for a fixed c: the best W for that c, no better than the MLE), the encoder the
    best posterior of its family: KL(q || p(z|x)) = 0 (full) or the diagonal family's closed-form gap."""
    from vaekit import LinearGaussian, VAEConfig, build_vae
    from vaekit.errors import ConfigError
    from vaekit.models.ppca_init import init_ppca

    x = torch.as_tensor(ppca_table(400, 8, 2, 5, 1.0, 0.5))
    model = build_vae(VAEConfig((8,), latent_dim=2, arch="linear", posterior=posterior, decoder_variance=variance))
    fit = init_ppca(model, x)
    model.eval()
    truth, mle = LinearGaussian.from_model(model), ppca_mle(x, 2)
    reached, best = float(truth.log_marginal(x).mean()), float(mle.log_marginal(x).mean())
    if variance == 0.7:
        assert reached < best and float(fit.psi[0]) == pytest.approx(0.7)
    else:
        assert reached == pytest.approx(best, abs=1e-9)
    with torch.no_grad():
        kl = truth.kl_to_posterior(x, model.encode(x))
    expected = float(truth.diagonal_approximation_gap()) if posterior == "diagonal" else 0.0
    torch.testing.assert_close(kl, torch.full_like(kl, expected), atol=1e-8, rtol=1e-6)
    with pytest.raises(ConfigError, match="init ppca: needs a linear Gaussian model"):
        init_ppca(build_vae(VAEConfig((8,), latent_dim=2, hidden=(4,))), x)
