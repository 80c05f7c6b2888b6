"""`--arch conv --prior vamp --posterior iaf` against its parts, before and after the VampPrior took the flow's
base Gaussians as its components (issue 33, item 2).

Two measurements on the digits data (8×8, latent 16, 500 pseudo-inputs, the defaults of `vaekit train`):

1. In one process, the median time of a training step (ELBO, batch 128, forward and backward) and of the
   importance-sampled log p(x) of 16 test digits with K = 10, for conv + vamp, conv + iaf, and conv + vamp + iaf
   with the prior's components as they are now (the base Gaussians q0(z|u_c)) and as they were (the exact
   posteriors q(z|u_c), which invert the flow for every (z, u_c) pair: rebuilt here as ``Mixture(0, q_u)``).
2. The whole command `vaekit train --data digits --arch conv [--prior vamp] [--posterior iaf] --epochs 1
   --no-figures` (one epoch and the end-of-training evaluation), for the three configurations as they are now.

The done-when: the combination takes no more than the sum of its parts' times. The cores are shared with other
jobs, so the seconds are indicative; the ratios within one run are what to read.

    python benchmarks/vamp_iaf_combination.py [--threads 1] [--out benchmarks/results/vamp_iaf_combination.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_common import HERE, machine_info, write_results

import vaekit
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.inference.estimators import estimate_log_likelihood
from vaekit.inference.objectives import elbo_terms
from vaekit.models.priors import VampPrior
from vaekit.prob.mixtures import Mixture

CONFIGS = {"conv+vamp": ("vamp", "diagonal"), "conv+iaf": ("standard", "iaf"), "conv+vamp+iaf": ("vamp", "iaf")}


def _exact_components(self: VampPrior, encode):
    """The VampPrior as it was: the mixture of the encoder's full posteriors q(z|u_c) (flow included)."""
    q_u = encode(self.pseudo_inputs)
    return Mixture(torch.zeros(q_u.batch_shape[0], dtype=self.pseudo_inputs.dtype), q_u)


def _median_seconds(fn, repeats: int) -> float:
    fn()                                                          # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def in_process(repeats: int, exact_repeats: int) -> dict:
    data = load_dataset("digits")
    prep = fit_preprocessing(data, "gaussian")
    x = prep.augment(prep.prepare(data.train), torch.Generator().manual_seed(0))[:128]
    x_test = prep.augment(prep.prepare(data.test), torch.Generator().manual_seed(0))[:16]
    out = {}
    runs = [(name, *spec, False) for name, spec in CONFIGS.items()] + [("conv+vamp+iaf exact (before)", "vamp",
                                                                        "iaf", True)]
    for name, prior, posterior, exact in runs:
        torch.manual_seed(0)
        model = vaekit.build_vae(vaekit.VAEConfig(data.shape, latent_dim=16, arch="conv", prior=prior,
                                                  posterior=posterior, decoder_variance="optimal"))
        original = VampPrior.forward
        if exact:
            VampPrior.forward = _exact_components        # type: ignore[method-assign]
        try:
            def step(model: vaekit.VAE = model) -> None:
                model.zero_grad()
                (-elbo_terms(model, x, n_samples=1).objective.mean()).backward()

            def evaluate(model: vaekit.VAE = model) -> None:
                with torch.no_grad():
                    estimate_log_likelihood(model.eval(), x_test, n_samples=10)
                model.train()

            n = exact_repeats if exact else repeats
            out[name] = {"step_s": _median_seconds(step, n), "evaluation_s": _median_seconds(evaluate, n)}
        finally:
            VampPrior.forward = original                 # type: ignore[method-assign]
        print(f"{name:32s} step {out[name]['step_s']:.4f} s   log p(x) of 16 at K=10 {out[name]['evaluation_s']:.4f} s",
              flush=True)
    return out


def commands(threads: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (prior, posterior) in CONFIGS.items():
            cmd = [sys.executable, "-m", "vaekit", "train", "--data", "digits", "--arch", "conv", "--prior", prior,
                   "--posterior", posterior, "--epochs", "1", "--no-figures", "--no-progress",
                   "--out", str(Path(tmp) / name)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            out[name] = {"command": " ".join(["vaekit", *cmd[3:-2]]), "seconds": time.perf_counter() - t0}
            print(f"{name:32s} vaekit train --epochs 1: {out[name]['seconds']:.1f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exact-repeats", type=int, default=1, help="repeats of the slow exact path")
    parser.add_argument("--out", default=str(HERE / "results" / "vamp_iaf_combination.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = in_process(args.repeats, args.exact_repeats)
    whole = commands(args.threads)
    sums = {key: parts["conv+vamp"][key] + parts["conv+iaf"][key] for key in ("step_s", "evaluation_s")}
    verdict = {key: parts["conv+vamp+iaf"][key] <= sums[key] for key in sums}
    parts_s = whole["conv+vamp"]["seconds"] + whole["conv+iaf"]["seconds"]
    verdict["command"] = whole["conv+vamp+iaf"]["seconds"] <= parts_s
    doc = {**machine_info(), "command": "python benchmarks/vamp_iaf_combination.py " + " ".join(sys.argv[1:]),
           "in_process": parts, "sum_of_parts": sums, "commands": whole, "combination_within_sum_of_parts": verdict}
    print("combination within the sum of its parts:", verdict)
    print("wrote", write_results(args.out, doc))


if __name__ == "__main__":
    main()
