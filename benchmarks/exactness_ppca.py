"""Exactness: linear VAE against closed-form probabilistic PCA (the gap in nats per example, per setting).

For each setting, data are drawn from a random pPCA model (seeded), the closed-form maximum
likelihood is computed (``vaekit.ppca_mle``), and a linear VAE (affine encoder and decoder, Gaussian
decoder) is trained by the ELBO with full-batch Adam and a cosine schedule in float64, as in
``tests/test_fit_ppca.py``. Reported per setting, in nats per example:

* ``mle``        mean log p(x) under the pPCA maximum-likelihood fit;
* ``trained``    mean exact log p(x) under the trained decoder (``LinearGaussian.from_model``);
* ``gap``        mle - trained (>= 0 up to rounding; 0 means the ELBO found the MLE);
* ``post_kl``    mean exact KL(q_x(z) || p(z|x)) under the trained decoder (the ELBO's slack);
* ``is_err``     mean importance-sampled log p(x) (K = 5000, encoder proposal) minus the exact value,
                 with ``is_se`` = its standard error over examples (std of the differences / sqrt(n));
* ``seconds``    wall time of the setting (training + evaluation).

The decoder variance c is either learned (one shared scalar) or fixed at the MLE's c. A real-data
setting fits the digits (8x8 = 64-D, dequantised once with a fixed seed) with K = 8.

Run:  python benchmarks/exactness_ppca.py      (writes benchmarks/results/exactness_ppca.json)
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

import vaekit
from vaekit import LinearGaussian, VAEConfig, build_vae, elbo, estimate_log_likelihood, ppca_mle
from vaekit.data import fit_preprocessing, load_dataset

N = 500                  # synthetic examples per setting
STEPS = 3000             # full-batch Adam steps
LR = 0.03
ELBO_SAMPLES = 4         # reparameterised draws per example per step
IS_SAMPLES = 5000        # importance samples for log p(x)
IS_EXAMPLES = 200        # examples on which the importance-sampled estimate is checked
RESULTS = Path(__file__).resolve().parent / "results" / "exactness_ppca.json"


def synthetic(d: int, k: int, seed: int) -> torch.Tensor:
    """N draws from a random pPCA model: W ~ 1.5 N(0, 1), b ~ N(0, 1), c = 0.5."""
    g = torch.Generator().manual_seed(seed)
    truth = LinearGaussian.ppca(1.5 * torch.randn(d, k, generator=g), torch.randn(d, generator=g), 0.5)
    return truth.b + torch.randn(N, k, generator=g) @ truth.W.T + 0.5**0.5 * torch.randn(N, d, generator=g)


def digits() -> torch.Tensor:
    """The digits training split, scaled to [0, 1], dequantised once (seed 0), flattened to (N, 64)."""
    ds = load_dataset("digits")
    prep = fit_preprocessing(ds, "gaussian")
    x = prep.augment(prep.prepare(ds.train), torch.Generator().manual_seed(0))
    return x.reshape(x.shape[0], -1).double()


def run_setting(name: str, x: torch.Tensor, k: int, posterior: str, variance: str, seed: int = 1) -> dict:
    start = time.perf_counter()
    n, d = x.shape
    mle = ppca_mle(x, k)
    best = mle.log_marginal(x).mean().item()
    c_mle = mle.psi[0].item()
    torch.manual_seed(seed)
    c = "learned" if variance == "learned" else c_mle
    model = build_vae(VAEConfig((d,), latent_dim=k, arch="linear", decoder_variance=c, posterior=posterior))
    initial = LinearGaussian.from_model(model).log_marginal(x).mean().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS)
    for _ in range(STEPS):
        loss = -elbo(model, x, n_samples=ELBO_SAMPLES, requires_grad=True).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    train_s = time.perf_counter() - start
    with torch.no_grad():
        lg = LinearGaussian.from_model(model)
        exact = lg.log_marginal(x)
        q = model.encode(x)
        post_kl = lg.kl_to_posterior(x, q)
        elbo_exact = lg.elbo(x, q)
        torch.manual_seed(seed + 1000)
        xs = x[:IS_EXAMPLES]
        est = estimate_log_likelihood(model, xs, n_samples=IS_SAMPLES)
        diff = est.log_likelihood - exact[:IS_EXAMPLES]
    trained = exact.mean().item()
    return {
        "setting": name, "D": d, "K": k, "N": n, "posterior": posterior, "decoder_variance": variance,
        "c_mle": c_mle, "c_trained": lg.psi[0].item(),
        "mle_log_likelihood": best, "initial_log_likelihood": initial,
        "trained_log_likelihood": trained, "gap_mle_minus_trained": best - trained,
        "elbo_exact": elbo_exact.mean().item(), "posterior_kl_exact": post_kl.mean().item(),
        "is_examples": xs.shape[0], "is_samples": IS_SAMPLES,
        "is_minus_exact": diff.mean().item(),
        "is_minus_exact_se": (diff.std() / math.sqrt(diff.numel())).item(),
        "is_delta_method_se_mean": est.standard_error.mean().item(),
        "is_posterior_gap_estimate": est.posterior_gap.mean().item(),
        "train_seconds": train_s, "seconds": time.perf_counter() - start,
    }


def main() -> int:
    torch.set_default_dtype(torch.float64)
    settings = []
    for d in (5, 20, 64):
        for k in (2, 5):
            if k >= d:                      # pPCA needs K < D
                continue
            x = synthetic(d, k, seed=1000 * d + k)
            for posterior in ("diagonal", "full"):
                for variance in ("learned", "fixed"):
                    settings.append((f"ppca D={d} K={k}", x, k, posterior, variance))
    x_digits = digits()
    for posterior in ("diagonal", "full"):
        for variance in ("learned", "fixed"):
            settings.append(("digits D=64 K=8", x_digits, 8, posterior, variance))

    header = (f"{'setting':<18}{'post':<6}{'c':<8}{'MLE':>11}{'trained':>11}{'gap':>10}"
              f"{'KL(q||p)':>10}{'IS-exact':>10}{'±se':>8}{'s':>6}")
    print("Exactness: linear VAE (ELBO, float64, full-batch Adam "
          f"{STEPS} steps, cosine, lr {LR}) vs closed-form pPCA MLE; nats per example")
    print(f"log p(x) by importance sampling: K = {IS_SAMPLES} on the first {IS_EXAMPLES} examples")
    print(header)
    print("-" * len(header))
    rows = []
    total = time.perf_counter()
    for name, x, k, posterior, variance in settings:
        r = run_setting(name, x, k, posterior, variance)
        rows.append(r)
        print(f"{name:<18}{posterior[:4]:<6}{variance:<8}{r['mle_log_likelihood']:>11.4f}"
              f"{r['trained_log_likelihood']:>11.4f}{r['gap_mle_minus_trained']:>10.5f}"
              f"{r['posterior_kl_exact']:>10.5f}{r['is_minus_exact']:>10.5f}{r['is_minus_exact_se']:>8.5f}"
              f"{r['seconds']:>6.1f}", flush=True)
    total = time.perf_counter() - total
    print("-" * len(header))
    worst = max(rows, key=lambda r: r["gap_mle_minus_trained"])
    print(f"largest gap {worst['gap_mle_minus_trained']:.5f} nats/example ({worst['setting']}, "
          f"{worst['posterior']}, c {worst['decoder_variance']}); total {total:.1f} s")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "exactness_ppca",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "processor": platform.processor()},
        "python": sys.version.split()[0], "torch": torch.__version__,
        "vaekit": getattr(vaekit, "__version__", None),
        "options": {"N_synthetic": N, "steps": STEPS, "lr": LR, "schedule": "cosine", "optimizer": "Adam",
                    "elbo_samples": ELBO_SAMPLES, "is_samples": IS_SAMPLES, "is_examples": IS_EXAMPLES,
                    "dtype": "float64", "synthetic_truth": "W ~ 1.5 N(0,1), b ~ N(0,1), c = 0.5",
                    "digits": "train split, scaled to [0,1], dequantised once (seed 0), flattened to 64-D"},
        "total_seconds": total,
        "results": rows,
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
