"""Evaluation speed, side by side: the K = 5000 log-likelihood of the MNIST test set on the CPU path
vaekit had before (PyTorch's matmul, glibc's default allocator) and on today's (oneDNN products with
fused activations, freed memory kept in the process), in one run, with the same threads, model, data
and random draws.

    python benchmarks/evaluation_paths.py --threads 1 [--model DIR] [--images N] [--samples K] [--rounds R]

Each measurement is a fresh subprocess of this script (``--arm before|after``), because the allocator
setting is process-wide and irreversible:

* before -- ``VAEKIT_CPU_MATMUL=torch VAEKIT_KEEP_FREED_MEMORY=0``: every product through
  ``torch.nn.functional.linear`` and ``torch.tanh``/``torch.relu`` after it, glibc's thresholds left
  alone: the operations vaekit ran before :mod:`vaekit.ops.linear` and :mod:`vaekit.allocator`;
* after -- the defaults.

Both run ``vaekit.inference.evaluate.evaluate(model, x, importance_samples=K, batch_size=256)`` (what
``vaekit evaluate`` runs after loading) with ``torch.manual_seed(0)`` first, so both draw the same z;
the estimates then differ only by float32 rounding in the products. The arms alternate for ``--rounds``
rounds (medians of the times). Reported: seconds, the speed-up, log p̂(x) (the mean over images) with
its standard error, and the per-image differences between the arms' estimates on the first 1,000 images
(estimated again, untimed, in round 1).

The model (``--model DIR``, loaded with ``vaekit.store.model_files.load_model``, or by default a fresh
784-200-200-50 tanh Bernoulli VAE built with seed 0, the model of the 449 s measurement in
BENCHMARKS.md); the data: the first ``--images`` MNIST test images from ``../shared/data/mnist``,
binarised once with seed 0 as ``vaekit evaluate`` does. Raw JSON: ``benchmarks/results/evaluation_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PER_IMAGE = 1000     # images whose estimates are compared one by one (round 1)
ARMS = {"before": {"VAEKIT_CPU_MATMUL": "torch", "VAEKIT_KEEP_FREED_MEMORY": "0"},
        "after": {"VAEKIT_CPU_MATMUL": "onednn", "VAEKIT_KEEP_FREED_MEMORY": "1"}}


def run_arm(args: argparse.Namespace) -> dict:
    """One measurement in this process (the subprocess side)."""
    import torch

    sys.path.insert(0, str(HERE))
    from bench_common import machine_info

    from vaekit import VAEConfig, build_vae
    from vaekit.data import fit_preprocessing, load_dataset
    from vaekit.inference.estimators import estimate_log_likelihood
    from vaekit.inference.evaluate import evaluate
    from vaekit.ops.linear import cpu_matmul
    from vaekit.store.model_files import load_model
    from vaekit.store.runs import eval_tensor

    torch.set_num_threads(args.threads)
    if args.model:
        model = load_model(args.model)
    else:
        torch.manual_seed(0)
        model = build_vae(VAEConfig((1, 28, 28), latent_dim=50, hidden=(200, 200), activation="tanh",
                                    likelihood="bernoulli"))
    model.eval()
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    x = eval_tensor(fit_preprocessing(dataset, "bernoulli"), dataset.test[:args.images], seed=0)
    evaluate(model, x[:2], importance_samples=16, batch_size=256)                       # warm-up
    torch.manual_seed(0)
    t0 = time.perf_counter()
    result = evaluate(model, x, importance_samples=args.samples, batch_size=256)
    seconds = time.perf_counter() - t0
    per_image = []
    if args.per_image:                     # the first images' estimates, per image, from the same seed (not timed)
        torch.manual_seed(0)
        for i in range(0, args.per_image, 256):
            xb = x[i:min(i + 256, args.per_image)]
            per_image += estimate_log_likelihood(model, xb, n_samples=args.samples).log_likelihood.tolist()
    return {**machine_info(), "arm": args.arm, "cpu_matmul": cpu_matmul(),
            "keep_freed_memory": os.environ.get("VAEKIT_KEEP_FREED_MEMORY"), "seconds": seconds,
            "images": int(x.shape[0]), "log_likelihood": result.log_likelihood,
            "log_likelihood_se": result.log_likelihood_se, "elbo": result.elbo, "per_image": per_image}


def measure(arm: str, args: argparse.Namespace, per_image: bool) -> dict:
    env = {**os.environ, **ARMS[arm], "PYTHONPATH": str(REPO / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "arm.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--arm", arm, "--arm-out", str(out),
               "--threads", str(args.threads), "--images", str(args.images), "--samples", str(args.samples),
               "--data-dir", args.data_dir] + (["--model", args.model] if args.model else []) + \
              (["--per-image", str(min(args.images, PER_IMAGE))] if per_image else [])
        subprocess.run(cmd, env=env, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a vaekit run or model directory (default: a fresh model)")
    p.add_argument("--images", type=int, default=10000, help="test images (default 10000)")
    p.add_argument("--samples", type=int, default=5000, help="importance samples K (default 5000)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds (default 1)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "evaluation_paths.json"))
    p.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)
    p.add_argument("--arm-out", help=argparse.SUPPRESS)
    p.add_argument("--per-image", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.images < 2 or args.samples < 1 or args.rounds < 1 or args.threads < 1:
        p.error("--images must be >= 2; --samples, --rounds and --threads >= 1")
    if args.arm:
        Path(args.arm_out).write_text(json.dumps(run_arm(args)))
        return 0

    print(f"K = {args.samples} on {args.images} MNIST test images, {args.threads} thread(s), "
          f"{args.rounds} round(s); model: {args.model or 'fresh 784-200-200-50 tanh (seed 0)'}", flush=True)
    rounds = []
    for r in range(args.rounds):
        row = {}
        for arm in ("before", "after"):
            row[arm] = measure(arm, args, per_image=(r == 0))
            print(f"round {r + 1} {arm:6s}: {row[arm]['seconds']:8.1f} s  log p(x) {row[arm]['log_likelihood']:.4f} "
                  f"± {row[arm]['log_likelihood_se']:.4f}", flush=True)
        rounds.append(row)
    med = {arm: statistics.median(r[arm]["seconds"] for r in rounds) for arm in ARMS}
    a, b = rounds[0]["before"], rounds[0]["after"]
    diffs = [abs(u - v) for u, v in zip(a["per_image"], b["per_image"], strict=True)]
    summary = {
        "median_seconds": med, "speedup": med["before"] / med["after"],
        "log_likelihood": {"before": a["log_likelihood"], "after": b["log_likelihood"],
                           "difference": b["log_likelihood"] - a["log_likelihood"],
                           "standard_error": a["log_likelihood_se"]},
        "per_image_abs_difference": {"mean": statistics.fmean(diffs), "max": max(diffs)},
    }
    print()
    print(f"before {med['before']:.1f} s, after {med['after']:.1f} s: {summary['speedup']:.2f}x")
    print(f"log p(x): before {a['log_likelihood']:.4f}, after {b['log_likelihood']:.4f} (difference "
          f"{summary['log_likelihood']['difference']:+.5f}; standard error {a['log_likelihood_se']:.4f}); per image "
          f"|difference| mean {summary['per_image_abs_difference']['mean']:.2e}, max "
          f"{summary['per_image_abs_difference']['max']:.2e} nats")
    for row in rounds:
        for arm in ARMS:
            row[arm].pop("per_image", None)
    out = {"command": " ".join(["python", "benchmarks/evaluation_paths.py",
                                *(argv if argv is not None else sys.argv[1:])]),
           "arms": ARMS, "images": args.images, "samples": args.samples, "threads": args.threads,
           "model": args.model or "fresh", "rounds": rounds, "summary": summary}
    from bench_common import write_results

    print(f"raw results: {write_results(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
