"""The CPU kernels behind vaekit.ops.linear and vaekit.allocator, timed one by one.

    python benchmarks/cpu_kernels.py [--threads 1]

* GEMM GFLOP/s at the shapes of the 784-200-200-50 model's evaluation (2,560 rows: 10 draws × 256 images)
  and of a training step (128 rows): float32 through ``torch.nn.functional.linear`` (PyTorch's CPU
  matmul, MKL's sgemm), float32 through oneDNN (``vaekit.ops.linear._mm``) and bfloat16 through
  ``F.linear`` (oneDNN's bf16 kernels). Best of 5 repeats.
* tanh after the product: ``torch.tanh(F.linear(...))`` against oneDNN's product with the tanh fused
  (``vaekit.ops.linear.linear(..., activation="tanh")``), at 2,560 × 200 → 200.
* The allocator: ``estimate_log_likelihood`` on 256 binarised images × 500 draws of the fresh model, in
  two subprocesses, with glibc's defaults (``VAEKIT_KEEP_FREED_MEMORY=0``) and with
  :func:`vaekit.allocator.keep_freed_memory`; best of 3 calls each.

Raw JSON: ``benchmarks/results/cpu_kernels.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_common import machine_info, write_results  # noqa: E402

from vaekit.ops.linear import _mm, linear, use_cpu_matmul  # noqa: E402

SHAPES = {"evaluation": [(2560, 50, 200), (2560, 200, 200), (2560, 200, 784)],
          "training": [(128, 784, 200), (128, 200, 200), (128, 200, 784)]}
ALLOCATOR_CODE = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from vaekit import VAEConfig, build_vae
from vaekit.allocator import keep_freed_memory
from vaekit.inference.estimators import estimate_log_likelihood
kept = keep_freed_memory()
torch.manual_seed(0)
model = build_vae(VAEConfig((1, 28, 28), latent_dim=50, hidden=(200, 200), activation="tanh", likelihood="bernoulli"))
x = (torch.rand(256, 1, 28, 28) < 0.13).float()
estimate_log_likelihood(model, x[:4], n_samples=10)
times = []
for _ in range(3):
    t0 = time.perf_counter(); estimate_log_likelihood(model, x, n_samples=500); times.append(time.perf_counter() - t0)
print(json.dumps({"kept": kept, "seconds": min(times)}))
"""


def best_seconds(fn, repeats: int = 5, min_seconds: float = 0.2) -> float:
    for _ in range(3):
        fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.05:
        fn()
        n += 1
    per = max(1, round(n * min_seconds / 0.05))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per):
            fn()
        best = min(best, (time.perf_counter() - t0) / per)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "cpu_kernels.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    gemms: dict = {}
    for name, shapes in SHAPES.items():
        for m, k, n in shapes:
            x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
            xb, wb = x.bfloat16(), w.bfloat16()
            flops = 2 * m * k * n
            row = {"torch_fp32": flops / best_seconds(lambda x=x, w=w: F.linear(x, w)),
                   "onednn_fp32": flops / best_seconds(lambda x=x, w=w: _mm(x, w)),
                   "onednn_bf16": flops / best_seconds(lambda x=xb, w=wb: F.linear(x, w))}
            gemms[f"{name} {m}x{k}x{n}"] = row
            print(f"GEMM {name:10s} {m:5d}x{k:3d}x{n:3d}: GFLOP/s torch fp32 {row['torch_fp32'] / 1e9:6.1f} | "
                  f"oneDNN fp32 {row['onednn_fp32'] / 1e9:6.1f} | oneDNN bf16 {row['onednn_bf16'] / 1e9:6.1f}",
                  flush=True)
    h = torch.randn(2560, 200, generator=g)
    w, b = torch.randn(200, 200, generator=g) / 14, torch.randn(200, generator=g)
    with use_cpu_matmul("torch"):
        separate = best_seconds(lambda: linear(h, w, b, "tanh"))
    fused = best_seconds(lambda: linear(h, w, b, "tanh"))
    product = best_seconds(lambda: linear(h, w, b))
    tanh_only = best_seconds(lambda: torch.tanh(h))
    print(f"tanh at 2560x200->200: torch.tanh(F.linear) {1e3 * separate:.3f} ms; oneDNN product alone "
          f"{1e3 * product:.3f} ms, with tanh fused {1e3 * fused:.3f} ms; torch.tanh alone {1e3 * tanh_only:.3f} ms "
          f"({1e9 * tanh_only / h.numel():.2f} ns per value)", flush=True)
    allocator = {}
    for setting in ("0", "1"):
        proc = subprocess.run([sys.executable, "-c", ALLOCATOR_CODE, str(args.threads)], capture_output=True,
                              text=True, check=True,
                              env={**os.environ, "VAEKIT_KEEP_FREED_MEMORY": setting, "PYTHONPATH": str(REPO / "src")})
        allocator["kept" if setting == "1" else "glibc_defaults"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"estimate_log_likelihood, 256 images x 500 draws: glibc defaults "
          f"{allocator['glibc_defaults']['seconds']:.3f} s, freed memory kept {allocator['kept']['seconds']:.3f} s "
          f"({allocator['glibc_defaults']['seconds'] / allocator['kept']['seconds']:.2f}x)", flush=True)
    out = {**machine_info(), "command": " ".join(["python", "benchmarks/cpu_kernels.py",
                                                   *(argv if argv is not None else sys.argv[1:])]),
           "gemm_flops_per_second": gemms,
           "tanh_ms": {"torch_separate": 1e3 * separate, "onednn_product": 1e3 * product,
                       "onednn_fused": 1e3 * fused, "torch_tanh_alone": 1e3 * tanh_only},
           "allocator": allocator}
    print(f"raw results: {write_results(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
