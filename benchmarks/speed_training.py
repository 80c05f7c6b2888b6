"""Training speed: vaekit vs the classic PyTorch-examples VAE loop vs the matmul roofline.

    python benchmarks/speed_training.py [--steps N] [--threads T] [--rounds R]

Loads real MNIST from ``../shared/data/mnist`` (relative to the repository root) with
``vaekit.data.load_dataset`` and measures, in one process, alternating A/B/A/B for ``--rounds``
rounds (the median is reported):

* baseline -- ``benchmarks/baseline_pytorch_examples.py`` (DataLoader + TensorDataset, shuffle,
  batch 128, Adam 1e-3, 784-400-20 ReLU MLP, BCE(sum) + KL). Grey levels in [0, 1] are the
  Bernoulli targets (no binarisation). 5 warm-up steps, then ``--steps`` timed steps.
* vaekit -- the same network, ``VAEConfig((1,28,28), latent_dim=20, hidden=(400,),
  activation='relu', likelihood='bernoulli')``, trained by ``vaekit.training.loop.fit`` (batch 128, Adam
  1e-3) on data prepared by ``fit_preprocessing(dataset, 'bernoulli')``, which *dynamically
  binarises* every batch (an extra ``torch.bernoulli`` per step that the baseline does not do).
  ``fit`` runs 1 warm-up epoch + k timed epochs on a training subset of ``--subset`` examples,
  k = round(steps / steps_per_epoch); the speed is examples / sum(EpochMetrics.seconds) over the
  timed epochs. ``EpochMetrics.seconds`` includes the epoch's validation, so the validation set is
  2 examples (one forward pass of batch 2: negligible).
* roofline -- the FLOP/s that ``torch.mm`` reaches here for exactly the GEMMs of one training step
  of this MLP at batch 128: for every linear layer (in -> out) the forward X·Wᵀ (128×in·in×out),
  the input gradient dY·W (128×out·out×in) and the weight gradient dYᵀ·X (out×128·128×in), each
  2·128·in·out FLOPs, timed in a tight loop (best of several repeats).
  vaekit's achieved FLOP/s = examples/s × FLOPs/example, FLOPs/example = 3 × 2 × W, where
  W = the number of weights in linear layers (784·400 + 2·400·20 + 20·400 + 400·784 = 651,200),
  i.e. 3.91 MFLOP (forward 2W, backward 4W; this slightly over-counts, as the first layer's input
  gradient is never computed, and ignores biases, activations, the loss and Adam).

Results: a table on stdout and raw JSON in ``benchmarks/results/speed_training.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import baseline_pytorch_examples as baseline  # noqa: E402
from bench_common import write_results  # noqa: E402

from vaekit import VAEConfig, build_vae  # noqa: E402
from vaekit.data import fit_preprocessing, load_dataset  # noqa: E402
from vaekit.training import TrainConfig, fit  # noqa: E402

BATCH = 128
LAYERS = [(784, 400), (400, 20), (400, 20), (20, 400), (400, 784)]  # (in, out) of every linear layer
LINEAR_WEIGHTS = sum(i * o for i, o in LAYERS)
FLOPS_PER_EXAMPLE = 3 * 2 * LINEAR_WEIGHTS


def vaekit_speed(train_x: torch.Tensor, val_x: torch.Tensor, prep, steps: int, seed: int) -> dict:
    """One vaekit measurement: 1 warm-up epoch + k timed epochs of fit() on ``train_x``."""
    steps_per_epoch = math.ceil(train_x.shape[0] / BATCH)
    timed_epochs = max(1, round(steps / steps_per_epoch))
    model = build_vae(VAEConfig((1, 28, 28), latent_dim=20, hidden=(400,), activation="relu",
                                likelihood="bernoulli"))
    config = TrainConfig(epochs=1 + timed_epochs, batch_size=BATCH, lr=1e-3, seed=seed, device="cpu")
    t0 = time.perf_counter()
    result = fit(model, train_x, val_x, config, preprocessing=prep)
    wall = time.perf_counter() - t0
    timed = result.history[1:]
    seconds = sum(m.seconds for m in timed)
    examples = train_x.shape[0] * len(timed)
    return {"examples_per_second": examples / seconds, "timed_epochs": len(timed),
            "timed_steps": steps_per_epoch * len(timed), "timed_seconds": seconds,
            "fit_wall_seconds": wall, "final_train_elbo": timed[-1].train_elbo}


def roofline(repeats: int = 5, min_seconds: float = 0.5) -> dict:
    """FLOP/s of torch.mm over the forward + backward GEMMs of one step at batch 128."""
    g = torch.Generator().manual_seed(0)
    calls = []
    for i, o in LAYERS:
        x = torch.randn(BATCH, i, generator=g)
        w = torch.randn(o, i, generator=g)        # nn.Linear stores (out, in)
        dy = torch.randn(BATCH, o, generator=g)
        calls += [(x, w.t()), (dy, w), (dy.t(), x)]  # forward, input gradient, weight gradient
    flops_per_pass = sum(2 * BATCH * i * o for i, o in LAYERS) * 3

    def one_pass() -> None:
        for a, b in calls:
            torch.mm(a, b)

    for _ in range(20):
        one_pass()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 0.2:
        one_pass()
        n += 1
    per_rep = max(1, int(n * min_seconds / 0.2))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per_rep):
            one_pass()
        rates.append(flops_per_pass * per_rep / (time.perf_counter() - t0))
    return {"flops_per_step_pass": flops_per_pass, "passes_per_repeat": per_rep,
            "repeats_flops_per_second": rates, "flops_per_second": max(rates)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=800, help="timed steps per measurement (default 800)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    p.add_argument("--subset", type=int, default=25600,
                   help="training examples in vaekit's fit subset (default 25600 = 200 steps per epoch)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "speed_training.json"))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    t_load = time.perf_counter()
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    prep = fit_preprocessing(dataset, "bernoulli")
    x_all = prep.prepare(dataset.train)          # (54000, 1, 28, 28) float32 in [0, 1]
    subset = min(args.subset, x_all.shape[0])
    x_sub = x_all[:subset].contiguous()
    x_val = prep.prepare(dataset.val[:2])        # tiny validation set: validation time negligible
    load_s = time.perf_counter() - t_load
    print(f"MNIST loaded from {args.data_dir} in {load_s:.1f} s: train {tuple(x_all.shape)}; "
          f"vaekit subset {subset}; threads {torch.get_num_threads()}; cores {os.cpu_count()}; "
          f"torch {torch.__version__}", flush=True)

    roof = roofline()
    print(f"roofline (torch.mm, step GEMMs at batch {BATCH}): {roof['flops_per_second'] / 1e9:.2f} GFLOP/s",
          flush=True)

    rounds = []
    for r in range(args.rounds):
        b = baseline.run(x_all, args.steps, seed=r)
        print(f"round {r + 1}: baseline {b:9.0f} ex/s", end="", flush=True)
        v = vaekit_speed(x_sub, x_val, prep, args.steps, seed=r)
        print(f" | vaekit {v['examples_per_second']:9.0f} ex/s ({v['timed_steps']} steps, "
              f"{v['timed_seconds']:.1f} s timed, fit {v['fit_wall_seconds']:.1f} s)", flush=True)
        rounds.append({"round": r + 1, "baseline_examples_per_second": b, "vaekit": v})

    med_b = statistics.median(x["baseline_examples_per_second"] for x in rounds)
    med_v = statistics.median(x["vaekit"]["examples_per_second"] for x in rounds)
    flops_v = med_v * FLOPS_PER_EXAMPLE
    flops_b = med_b * FLOPS_PER_EXAMPLE
    roof_f = roof["flops_per_second"]

    rows = [("baseline (pytorch/examples loop)", med_b, flops_b),
            ("vaekit.training.loop.fit", med_v, flops_v),
            ("matmul roofline (torch.mm)", roof_f / FLOPS_PER_EXAMPLE, roof_f)]
    print()
    print(f"median of {args.rounds} rounds, batch {BATCH}, {torch.get_num_threads()} threads, "
          f"FLOPs/example = 3*2*{LINEAR_WEIGHTS} = {FLOPS_PER_EXAMPLE / 1e6:.2f} M")
    print(f"{'':34s} {'examples/s':>12s} {'ms/step':>9s} {'GFLOP/s':>9s} {'% roofline':>11s}")
    for name, eps, fl in rows:
        print(f"{name:34s} {eps:12.0f} {1e3 * BATCH / eps:9.3f} {fl / 1e9:9.2f} {100 * fl / roof_f:10.1f}%")
    print(f"ratio vaekit / baseline : {med_v / med_b:.3f}")
    print(f"ratio vaekit / roofline : {flops_v / roof_f:.3f}")

    out = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": platform.python_version()},
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
        "steps": args.steps, "rounds_count": args.rounds, "batch_size": BATCH,
        "data": {"dir": args.data_dir, "train_examples": int(x_all.shape[0]), "vaekit_subset": subset,
                 "vaekit_val_examples": int(x_val.shape[0])},
        "method": {
            "baseline": "DataLoader(TensorDataset(x in [0,1]), batch 128, shuffle) + Adam 1e-3; BCE(sum)+KL; "
                        "5 warm-up steps then `steps` timed steps; no binarisation",
            "vaekit": "vaekit.training.loop.fit, 1 warm-up epoch + k timed epochs on the subset; examples/s = "
                      "examples / sum(EpochMetrics.seconds) of timed epochs (includes validation of 2 examples); "
                      "dynamic binarisation each batch",
            "roofline": "torch.mm over forward X@W^T, dX=dY@W, dW=dY^T@X of each linear layer at batch 128, "
                        "best of repeats",
            "flops_per_example": "3 * 2 * linear weights (biases, activations, loss, optimizer ignored)",
        },
        "linear_weights": LINEAR_WEIGHTS, "flops_per_example": FLOPS_PER_EXAMPLE,
        "roofline": roof,
        "rounds": rounds,
        "median": {"baseline_examples_per_second": med_b, "vaekit_examples_per_second": med_v,
                   "baseline_flops_per_second": flops_b, "vaekit_flops_per_second": flops_v,
                   "roofline_flops_per_second": roof_f},
        "ratios": {"vaekit_over_baseline": med_v / med_b, "vaekit_over_roofline": flops_v / roof_f,
                   "baseline_over_roofline": flops_b / roof_f},
    }
    print(f"raw results: {write_results(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
