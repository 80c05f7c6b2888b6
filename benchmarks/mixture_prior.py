"""The mixture priors' log-density on the CPU, two ways side by side: the elementwise pass and the matrix products.

    python benchmarks/mixture_prior.py [--threads T] [--rounds R]

For diagonal Gaussian components, log p_c(z) needs d_rc = Σ_i (z_ri - μ_ci)² / σ_ci² for every row r of z
and component c. vaekit computed it as one elementwise expression over (rows, C, K) (``elementwise``, the
path before this benchmark; still the path off the CPU and in float64); in float32 on the CPU it now takes
two float64 matrix products, d = [z², z] @ [1/σ², -2μ/σ²]ᵀ + Σ_i μ_ci²/σ_ci² (``products``,
``vaekit.prob.mixtures._squared_distances``). Both run in this one process, in alternating order; the
elementwise path is chosen by patching ``Mixture._uses_products`` to return False.

Three measurements, each a median over ``--rounds`` rounds:

* kernel -- ``Mixture.log_prob`` on a 50-dimensional float32 mixture of 500 components (the VampPrior's
  size in row A of BENCHMARKS.md) and of 10 (the mixture prior's default): forward and backward for 128 rows
  (an ELBO step's batch) and 640 rows (IWAE k = 5), forward only for 12,800 rows (one evaluation chunk); with
  the largest difference of the two paths' values from a float64 computation, and the path vaekit takes
  there by itself (the products, except with gradients for fewer than ``PRODUCTS_MIN_COMPONENTS``).
* training -- examples/s of ``vaekit.fit`` for the ``vamp`` and ``mixture`` families of
  ``benchmarks/family_throughput.py`` (784-200-200-50 tanh MLP, Bernoulli, batch 128; its
  ``Family.train``: one warm-up epoch and one timed epoch of ``--steps`` steps on MNIST).
* evaluation -- images/s of ``estimate_log_likelihood`` with K = ``--samples`` on the first ``--images``
  test images for the same families (``Family.evaluate``, passes repeated for about ``--eval-seconds``), of
  the model trained on the products path, on both paths with the same seed (so both draw the same z). The
  JSON keeps the difference of the two mean log p̂(x); after a few hundred steps the components are still
  nearly alike, so it says little about accuracy, which the kernel's comparison with float64 measures.

The process keeps freed memory (``vaekit.allocator.keep_freed_memory``), as every ``vaekit`` command does,
so that neither path pays page faults for its temporaries. Loads MNIST from ``../shared/data/mnist``.
Results: a table on stdout, the raw JSON in ``benchmarks/results/mixture_prior.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from bench_common import machine_info, write_results  # noqa: E402
from family_throughput import FAMILIES, Family, load_data  # noqa: E402

from vaekit.allocator import keep_freed_memory  # noqa: E402
from vaekit.prob.distributions import DiagonalNormal  # noqa: E402
from vaekit.prob.mixtures import Mixture  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PATHS = ("elementwise", "products")
#: (name, rows, with backward, components)
KERNEL_SHAPES = (("C = 500, ELBO step, 128 rows", 128, True, 500), ("C = 500, IWAE k=5 step, 640 rows", 640, True, 500),
                 ("C = 500, evaluation chunk, 12,800 rows", 12800, False, 500),
                 ("C = 10, ELBO step, 128 rows", 128, True, 10),
                 ("C = 10, evaluation chunk, 12,800 rows", 12800, False, 10))
LATENT = 50


@contextlib.contextmanager
def path(name: str) -> Iterator[None]:
    """Run ``Mixture.log_prob`` on path ``name`` (the products wherever they apply, whatever the components)."""
    original = Mixture._uses_products
    if name == "products":
        Mixture._uses_products = lambda self, value: self._products_apply()   # type: ignore[method-assign]
    else:
        Mixture._uses_products = lambda self, value: False                    # type: ignore[method-assign]
    try:
        yield
    finally:
        Mixture._uses_products = original                                      # type: ignore[method-assign]


def kernel_inputs(rows: int, components: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A float32 mixture like a trained VampPrior's (means within ±3, scales 0.05 to 1.5) and rows near it."""
    g = torch.Generator().manual_seed(seed)
    loc = 3 * (2 * torch.rand(components, LATENT, generator=g) - 1)
    scale = torch.empty(components, LATENT).uniform_(0.05, 1.5, generator=g)
    z = loc[torch.randint(0, components, (rows,), generator=g)] + torch.randn(rows, LATENT, generator=g)
    return torch.zeros(components), loc, scale, z


def default_path(rows: int, backward: bool, components: int) -> str:
    """The path vaekit itself takes for this call."""
    logits, loc, scale, z = kernel_inputs(2, components)
    with torch.set_grad_enabled(backward):
        mix = Mixture(logits, DiagonalNormal(loc.requires_grad_(backward), scale))
        return "products" if mix._uses_products(z) else "elementwise"


def time_kernel(rows: int, backward: bool, components: int, name: str, seconds: float) -> dict[str, Any]:
    """Milliseconds per call of log_prob (and its backward) on path ``name``, repeated for about ``seconds``."""
    logits, loc, scale, z = kernel_inputs(rows, components)
    leaves = [t.clone().requires_grad_(backward) for t in (loc, scale, z)]

    def call() -> torch.Tensor:
        out = Mixture(logits, DiagonalNormal(leaves[0], leaves[1])).log_prob(leaves[2])
        if backward:
            out.sum().backward()
        return out.detach()

    with path(name), torch.set_grad_enabled(backward):
        value = call()
        t0, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - t0 < seconds:
            call()
            n += 1
        ms = 1e3 * (time.perf_counter() - t0) / n
    with torch.no_grad():                                     # the float64 reference, elementwise
        d = ((z.double()[:, None, :] - loc.double()) / scale.double()).square().sum(-1)
        const = scale.double().log().sum(-1) + 0.5 * LATENT * math.log(2 * math.pi)
        ref = torch.logsumexp(-0.5 * d - const + torch.log_softmax(logits.double(), 0), -1)
    return {"ms": ms, "calls": n, "max_abs_error_vs_float64": float((value.double() - ref).abs().max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--kernel-seconds", type=float, default=1.0, help="seconds per kernel measurement (default 1)")
    p.add_argument("--steps", type=int, default=200, help="steps of the timed training epoch (default 200)")
    p.add_argument("--eval-seconds", type=float, default=2.0,
                   help="target seconds of one evaluation measurement, which sets its passes (default 2)")
    p.add_argument("--images", type=int, default=128, help="test images per evaluation (default 128)")
    p.add_argument("--samples", type=int, default=100, help="importance samples K (default 100)")
    p.add_argument("--batch-size", type=int, default=128, help="training and evaluation batch (default 128)")
    p.add_argument("--families", default="vamp,mixture", help="families of family_throughput.py (default vamp,mixture)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "mixture_prior.json"))
    args = p.parse_args(argv)
    known = {name: (options, changes) for name, options, changes in FAMILIES}
    names = [n for n in args.families.split(",") if n]
    if not set(names) <= {"vamp", "mixture"} or not names:
        p.error(f"--families: choose from vamp, mixture, got {args.families!r}")
    if min(args.threads, args.rounds, args.steps, args.batch_size, args.images, args.samples) < 1 \
            or not (args.kernel_seconds > 0 and args.eval_seconds > 0):
        p.error("--threads, --rounds, --steps, --batch-size, --images and --samples must be >= 1, "
                "--kernel-seconds and --eval-seconds > 0")
    torch.set_num_threads(args.threads)
    keep_freed_memory()                       # as every vaekit command does: no page faults on the large temporaries
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    data = load_data(args) if names else {}
    families = [Family(n, *known[n], data, args) for n in names]
    print(f"threads {torch.get_num_threads()}; cores {os.cpu_count()}; torch {torch.__version__}; "
          f"load average {load_before[0]:.2f}", flush=True)

    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = PATHS if r % 2 == 0 else PATHS[::-1]
        row: dict[str, Any] = {"round": r + 1, "order": list(order), "kernel": {}, "families": {}}
        for label, rows, backward, components in KERNEL_SHAPES:
            row["kernel"][label] = {name: time_kernel(rows, backward, components, name, args.kernel_seconds)
                                    for name in order}
            print(f"round {r + 1} kernel {label:30s} " + "  ".join(
                f"{n} {row['kernel'][label][n]['ms']:8.3f} ms" for n in PATHS), flush=True)
        for f in families:
            got = row["families"][f.name] = {name: {} for name in PATHS}
            models = {}
            for name in order:
                with path(name):
                    got[name]["train"] = t = f.train(args.steps, seed=r)
                models[name] = t.pop("model")
            if r == 0:                          # passes per evaluation: enough for about --eval-seconds
                t0 = time.perf_counter()
                f.log_px(models["products"], args.images, args.samples)
                f.eval_repeats = max(1, round(args.eval_seconds / (time.perf_counter() - t0)))
            for name in order:                  # one model (trained on the products path), both paths
                with path(name):
                    got[name]["eval"] = f.evaluate(models["products"], args.images, f.eval_repeats, seed=r)
            print(f"round {r + 1} {f.name:8s} train " + "  ".join(
                f"{n} {got[n]['train']['examples_per_second']:8.0f} ex/s" for n in PATHS) + " | eval " + "  ".join(
                f"{n} {got[n]['eval']['examples_per_second']:7.1f} images/s" for n in PATHS), flush=True)
        rounds.append(row)

    summary: dict[str, Any] = {"kernel": {}, "families": {}}
    print()
    print(f"median of {args.rounds} rounds; {torch.get_num_threads()} threads; {LATENT} dimensions, float32")
    print("| measurement | elementwise | products | speed-up | vaekit takes | largest error vs float64 "
          "(elementwise / products) |")
    print("|---|---:|---:|---:|---|---|")
    for label, rows, backward, components in KERNEL_SHAPES:
        ms = {n: statistics.median(x["kernel"][label][n]["ms"] for x in rounds) for n in PATHS}
        err = {n: max(x["kernel"][label][n]["max_abs_error_vs_float64"] for x in rounds) for n in PATHS}
        chosen = default_path(rows, backward, components)
        summary["kernel"][label] = {"ms": ms, "max_abs_error_vs_float64": err, "vaekit_takes": chosen}
        print(f"| log_prob, {label}{', backward' if backward else ''} | {ms['elementwise']:.3f} ms | "
              f"{ms['products']:.3f} ms | {ms['elementwise'] / ms['products']:.1f}× | {chosen} | "
              f"{err['elementwise']:.1e} / {err['products']:.1e} |")
    for f in families:
        per = [x["families"][f.name] for x in rounds]
        tr = {n: statistics.median(x[n]["train"]["examples_per_second"] for x in per) for n in PATHS}
        ev = {n: statistics.median(x[n]["eval"]["examples_per_second"] for x in per) for n in PATHS}
        gap = max(abs(x["products"]["eval"]["log_likelihood"] - x["elementwise"]["eval"]["log_likelihood"])
                  for x in per)
        summary["families"][f.name] = {"train_examples_per_second": tr, "eval_images_per_second": ev,
                                       "largest_log_likelihood_difference": gap}
        print(f"| {f.name}: training, ex/s | {tr['elementwise']:,.0f} | {tr['products']:,.0f} | "
              f"{tr['products'] / tr['elementwise']:.2f}× | | |")
        print(f"| {f.name}: evaluation K = {args.samples}, images/s | {ev['elementwise']:,.1f} | "
              f"{ev['products']:,.1f} | {ev['products'] / ev['elementwise']:.2f}× | | |")
    load_after = os.getloadavg()
    wall = time.perf_counter() - t_start
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; {wall:.0f} s in all")
    out = {**machine_info(),
           "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
           "rounds_count": args.rounds, "steps": args.steps, "images": args.images, "samples": args.samples,
           "batch_size": args.batch_size, "latent_dim": LATENT,
           "load_average_before": list(load_before), "load_average_after": list(load_after), "wall_seconds": wall,
           "summary": summary, "rounds": rounds}
    write_results(args.out, out)
    print(f"raw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
