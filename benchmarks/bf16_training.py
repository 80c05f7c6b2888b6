"""Training speed in float32 and bfloat16 against the PyTorch-examples loop, the GEMM rooflines, and
the test ELBO that bf16 training reaches.

    python benchmarks/bf16_training.py [--threads 2] [--steps 800] [--rounds 3] [--epochs 10] [--seeds 2]

Two models, both Bernoulli decoders on dynamically binarised MNIST (``../shared/data/mnist``), batch 128,
Adam 1e-3:

* ``examples``: 784-400-20, ReLU (the PyTorch-examples VAE);
* ``iwae``: 784-200-200-50, tanh (the IWAE paper's one-layer model).

**Speed** (per model, alternating for ``--rounds`` rounds; medians):

* baseline -- ``benchmarks/baseline_pytorch_examples.py``: the PyTorch-examples loop (DataLoader over a
  TensorDataset, float32, ``nn.Linear``, i.e. PyTorch's CPU matmul) with the model's widths and
  activation; ``--steps`` timed steps after 5 warm-up steps;
* vaekit fp32 and vaekit bf16 -- ``vaekit.training.loop.fit`` with ``precision="fp32"`` / ``"bf16"``
  (1 warm-up epoch + k timed epochs on a subset of ``--subset`` examples, k = round(steps / steps per
  epoch), speed = examples / the timed epochs' seconds, as ``benchmarks/speed_training.py``).

**Rooflines**: the FLOP/s of the step's GEMMs at batch 128 (forward X·Wᵀ, input gradient dY·W, weight
gradient dYᵀ·X of every linear layer; ``bench_common.training_gemms``), timed back to back: float32
``torch.mm`` (PyTorch's matmul), float32 on oneDNN (``vaekit.ops.linear``'s kernel, the layouts its
backward uses) and bfloat16 ``torch.mm`` (oneDNN's bf16 kernels). FLOPs per example = 3 × 2 × the
linear layers' weights. A loop's fraction of a roofline = its achieved FLOP/s / that roofline.

**Quality** (``--epochs`` epochs, ``--seeds`` seeds, each seed the same initial weights and draws in both
precisions): ``fit`` on the 54,000 training images, then the test ELBO on the 10,000 test images
(binarised once, seed 0) with ``evaluate(..., elbo_samples=10)``, float32 evaluation for both. Reported:
each ELBO, bf16 − fp32 per seed and its mean.

Raw JSON: ``benchmarks/results/bf16_training.json``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import baseline_pytorch_examples as baseline  # noqa: E402
from bench_common import gemm_flops, machine_info, training_gemms, write_results  # noqa: E402

from vaekit import VAEConfig, build_vae  # noqa: E402
from vaekit.data import fit_preprocessing, load_dataset  # noqa: E402
from vaekit.inference.evaluate import evaluate  # noqa: E402
from vaekit.ops.linear import _mm, cpu_matmul  # noqa: E402
from vaekit.store.runs import eval_tensor  # noqa: E402
from vaekit.training import TrainConfig, fit  # noqa: E402

BATCH = 128
MODELS = {
    "examples": {"hidden": (400,), "latent": 20, "activation": "relu", "baseline_activation": F.relu},
    "iwae": {"hidden": (200, 200), "latent": 50, "activation": "tanh", "baseline_activation": torch.tanh},
}


def layers_of(spec: dict) -> list[tuple[int, int]]:
    """(in, out) of every linear layer: encoder trunk, the two heads, decoder."""
    widths = [784, *spec["hidden"]]
    enc = list(zip(widths[:-1], widths[1:], strict=False))
    heads = [(widths[-1], spec["latent"])] * 2
    back = [spec["latent"], *reversed(spec["hidden"]), 784]
    return enc + heads + list(zip(back[:-1], back[1:], strict=False))


def config_of(spec: dict) -> VAEConfig:
    return VAEConfig((1, 28, 28), latent_dim=spec["latent"], hidden=spec["hidden"], activation=spec["activation"],
                     likelihood="bernoulli")


def vaekit_speed(spec: dict, x: torch.Tensor, x_val: torch.Tensor, prep, steps: int, seed: int,
                 precision: str) -> dict:
    steps_per_epoch = math.ceil(x.shape[0] / BATCH)
    timed_epochs = max(1, round(steps / steps_per_epoch))
    torch.manual_seed(seed)
    model = build_vae(config_of(spec))
    config = TrainConfig(epochs=1 + timed_epochs, batch_size=BATCH, lr=1e-3, seed=seed, device="cpu",
                         precision=precision)
    result = fit(model, x, x_val, config, preprocessing=prep)
    timed = result.history[1:]
    seconds = sum(m.seconds for m in timed)
    return {"examples_per_second": x.shape[0] * len(timed) / seconds, "timed_epochs": len(timed),
            "timed_seconds": seconds}


def roofline(gemms: list[tuple[int, int, int]], kind: str, min_seconds: float = 0.3, repeats: int = 5) -> float:
    """Best FLOP/s over ``repeats`` of the GEMMs back to back: kind "torch_fp32", "onednn_fp32", "torch_bf16"."""
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if kind == "torch_bf16" else torch.float32
    calls = []
    for m, k, n in gemms:
        a = torch.randn(m, k, generator=g).to(dtype)
        if kind == "onednn_fp32":                        # _mm(a, b_rows) = a @ b_rowsᵀ, b_rows (n, k)
            b_rows = torch.randn(n, k, generator=g)
            calls.append(lambda a=a, b=b_rows: _mm(a, b))
        else:
            b = torch.randn(k, n, generator=g).to(dtype)
            calls.append(lambda a=a, b=b: torch.mm(a, b))
    flops = gemm_flops(gemms)

    def one_pass() -> None:
        for c in calls:
            c()

    for _ in range(5):
        one_pass()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.1:
        one_pass()
        n += 1
    per_rep = max(1, round(n * min_seconds / 0.1))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per_rep):
            one_pass()
        best = max(best, flops * per_rep / (time.perf_counter() - t0))
    return best


def quality(spec: dict, x_train: torch.Tensor, x_val: torch.Tensor, x_test: torch.Tensor, prep, epochs: int,
            seed: int, precision: str) -> dict:
    torch.manual_seed(seed)
    model = build_vae(config_of(spec))
    config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=1e-3, seed=seed, device="cpu", precision=precision)
    t0 = time.perf_counter()
    result = fit(model, x_train, x_val, config, preprocessing=prep, restore_best=False)   # published: last weights
    train_seconds = time.perf_counter() - t0
    torch.manual_seed(0)
    ev = evaluate(model, x_test, importance_samples=1, elbo_samples=10)
    return {"seed": seed, "precision": precision, "test_elbo": ev.elbo, "train_seconds": train_seconds,
            "final_train_elbo": result.history[-1].train_elbo, "final_val_elbo": result.history[-1].val_elbo}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=800, help="timed steps per speed measurement (default 800)")
    p.add_argument("--rounds", type=int, default=3, help="alternating speed rounds (default 3)")
    p.add_argument("--subset", type=int, default=25600, help="vaekit's training subset for speed (default 25600)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the quality runs (default 10)")
    p.add_argument("--seeds", type=int, default=2, help="seeds of the quality runs (default 2; 0 skips them)")
    p.add_argument("--models", default="examples,iwae", help="comma-separated: examples, iwae")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "bf16_training.json"))
    args = p.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if any(m not in MODELS for m in names) or not names:
        p.error(f"--models: choose from {sorted(MODELS)}")
    torch.set_num_threads(args.threads)
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    prep = fit_preprocessing(dataset, "bernoulli")
    x_all = prep.prepare(dataset.train)
    x_sub = x_all[:args.subset].contiguous()
    x_tiny_val = prep.prepare(dataset.val[:2])
    x_val = prep.prepare(dataset.val)
    x_test = eval_tensor(prep, dataset.test, seed=0)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, cpu matmul {cpu_matmul()}; train "
          f"{tuple(x_all.shape)}, test {tuple(x_test.shape)}", flush=True)

    results: dict = {}
    for name in names:
        spec = MODELS[name]
        layers = layers_of(spec)
        fpe = 3 * 2 * sum(i * o for i, o in layers)
        gemms = training_gemms(layers, BATCH)
        roofs = {kind: roofline(gemms, kind) for kind in ("torch_fp32", "onednn_fp32", "torch_bf16")}
        print(f"\n[{name}] {'-'.join(str(w) for w in (784, *spec['hidden'], spec['latent']))} {spec['activation']}: "
              f"{fpe / 1e6:.2f} MFLOP/example; rooflines (GFLOP/s) " +
              ", ".join(f"{k} {v / 1e9:.1f}" for k, v in roofs.items()), flush=True)
        rounds = []
        for r in range(args.rounds):
            b = baseline.run(x_all, args.steps, seed=r, hidden=spec["hidden"], latent=spec["latent"],
                             activation=spec["baseline_activation"])
            f32 = vaekit_speed(spec, x_sub, x_tiny_val, prep, args.steps, r, "fp32")
            b16 = vaekit_speed(spec, x_sub, x_tiny_val, prep, args.steps, r, "bf16")
            rounds.append({"baseline": b, "vaekit_fp32": f32, "vaekit_bf16": b16})
            print(f"round {r + 1}: baseline {b:8.0f} ex/s | vaekit fp32 {f32['examples_per_second']:8.0f} | "
                  f"vaekit bf16 {b16['examples_per_second']:8.0f}", flush=True)
        med = {"baseline": statistics.median(x["baseline"] for x in rounds),
               "vaekit_fp32": statistics.median(x["vaekit_fp32"]["examples_per_second"] for x in rounds),
               "vaekit_bf16": statistics.median(x["vaekit_bf16"]["examples_per_second"] for x in rounds)}
        fractions = {loop: {kind: ex * fpe / roof for kind, roof in roofs.items()} for loop, ex in med.items()}
        print(f"medians: baseline {med['baseline']:.0f}, vaekit fp32 {med['vaekit_fp32']:.0f} "
              f"({med['vaekit_fp32'] / med['baseline']:.2f}x), vaekit bf16 {med['vaekit_bf16']:.0f} "
              f"({med['vaekit_bf16'] / med['baseline']:.2f}x); vaekit bf16 at "
              f"{100 * fractions['vaekit_bf16']['torch_bf16']:.0f}% of the bf16 roofline", flush=True)
        runs = []
        for seed in range(args.seeds):
            for precision in ("fp32", "bf16"):
                q = quality(spec, x_all, x_val, x_test, prep, args.epochs, seed, precision)
                runs.append(q)
                print(f"quality seed {seed} {precision}: test ELBO {q['test_elbo']:.3f} "
                      f"({args.epochs} epochs, {q['train_seconds']:.0f} s)", flush=True)
        diffs = [b["test_elbo"] - a["test_elbo"] for a, b in zip(runs[0::2], runs[1::2], strict=True)]
        if diffs:
            print(f"bf16 - fp32 test ELBO per seed: {', '.join(f'{d:+.3f}' for d in diffs)}; mean "
                  f"{statistics.fmean(diffs):+.3f} nats", flush=True)
        results[name] = {"layers": layers, "flops_per_example": fpe, "rooflines_flops_per_second": roofs,
                         "rounds": rounds, "median_examples_per_second": med,
                         "speedup_over_baseline": {k: v / med["baseline"] for k, v in med.items()},
                         "fraction_of_roofline": fractions, "quality_runs": runs,
                         "bf16_minus_fp32_test_elbo": diffs,
                         "mean_bf16_minus_fp32_test_elbo": statistics.fmean(diffs) if diffs else None}
    out = {**machine_info(), "command": " ".join(["python", "benchmarks/bf16_training.py",
                                                   *(argv if argv is not None else sys.argv[1:])]),
           "cpu_matmul": cpu_matmul(), "batch_size": BATCH, "steps": args.steps, "rounds_count": args.rounds,
           "epochs": args.epochs, "seeds": args.seeds, "models": results}
    print(f"raw results: {write_results(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
