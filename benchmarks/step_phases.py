"""Where a training step's time goes: wall-clock milliseconds per step of each phase of ``vaekit.fit``.

    python benchmarks/step_phases.py [--threads 2] [--epochs 4] [--precision bf16] [--models examples,iwae]

A diagnosis, not a speed figure: the models of ``benchmarks/bf16_training.py`` (``examples``: 784-400-20
ReLU, ``iwae``: 784-200-200-50 tanh; Bernoulli decoders, batch 128, Adam 1e-3) train ``--epochs`` epochs on
the first 25,600 MNIST training images (200 steps per epoch) with ``vaekit.fit``, while a clock
(``time.perf_counter``, no profiler: a profiler's per-operation overhead misattributes time at these sizes)
accumulates the seconds spent in

* ``batch``: ``BatchPlan.batch`` -- gathering the rows, the binarisation's uniforms, the reparameterisation's
  normal draws;
* ``forward``: ``vaekit.training.step.batch_loss`` -- model and objective, of which
  ``forward_linear`` is every linear layer's forward (``vaekit.ops.linear.linear``, bf16 products inside
  ``bfloat16_products``) and ``forward_log_px`` the decoder's log-density ``log p(x|z)``;
* ``backward``: ``Tensor.backward`` of the loss;
* ``finite_check``: ``Stepper._finite`` -- the gradient norm and the finite-loss test;
* ``adam``: the optimizer's step (fused Adam);
* ``step_other``: the rest of ``Stepper.step`` (zero_grad, scheduler, buffer restore, running sums).

Every phase is per training step, averaged over all epochs' steps (the first epoch included), next to the
GEMM time the same step would take at ``torch.mm``'s speed on its shapes in the step's precision
(``bench_common.training_gemms``; bf16 operands for ``--precision bf16``). Raw JSON:
``benchmarks/results/step_phases.json``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_common import gemm_flops, machine_info, training_gemms, write_results  # noqa: E402
from bf16_training import MODELS, config_of, layers_of, roofline  # noqa: E402

from vaekit import build_vae  # noqa: E402
from vaekit.data import fit_preprocessing, load_dataset  # noqa: E402
from vaekit.models import networks  # noqa: E402
from vaekit.ops import linear as ops_linear  # noqa: E402
from vaekit.training import TrainConfig, batches, fit, step  # noqa: E402

BATCH = 128
SUBSET = 25_600


class PhaseClock:
    """Accumulates the wall-clock seconds of wrapped callables under phase names; restores them on close."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, phase: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        self._undo.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else original))
        setattr(owner, name, timed)

    def close(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def phases_of(name: str, x: torch.Tensor, x_val: torch.Tensor, prep, epochs: int, precision: str) -> dict:
    torch.manual_seed(0)
    model = build_vae(config_of(MODELS[name]))
    clock = PhaseClock()
    clock.wrap(batches.BatchPlan, "batch", "batch")
    clock.wrap(step.Stepper, "step", "step_total")
    clock.wrap(step.Stepper, "_finite", "finite_check")
    clock.wrap(step, "batch_loss", "forward")
    clock.wrap(networks, "linear", "forward_linear")          # the MLPs' (fused) layers
    clock.wrap(ops_linear.Linear, "forward", "forward_linear")  # the heads and output layers
    clock.wrap(torch.Tensor, "backward", "backward")
    clock.wrap(torch.optim.Adam, "step", "adam")
    clock.wrap(torch.distributions.Bernoulli, "log_prob", "forward_log_px")
    try:
        config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=1e-3, seed=0, device="cpu", precision=precision)
        result = fit(model, x, x_val, config, preprocessing=prep)
    finally:
        clock.close()
    steps = epochs * (x.shape[0] // BATCH)
    ms = {k: 1e3 * v / steps for k, v in clock.seconds.items()}
    ms["step_other"] = ms["step_total"] - ms["forward"] - ms["backward"] - ms["finite_check"] - ms["adam"]
    ms["step_and_batch"] = ms["step_total"] + ms["batch"]
    return {"ms_per_step": ms, "epoch_seconds": [m.seconds for m in result.history], "steps": steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--models", default="examples,iwae", help="comma-separated: examples, iwae")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "step_phases.json"))
    args = p.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names or any(m not in MODELS for m in names):
        p.error(f"--models: choose from {sorted(MODELS)}")
    if args.epochs < 1:
        p.error("--epochs: at least 1")
    torch.set_num_threads(args.threads)
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    prep = fit_preprocessing(dataset, "bernoulli")
    x = prep.prepare(dataset.train)[:SUBSET].contiguous()
    x_val = prep.prepare(dataset.val[:2])
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, precision {args.precision}", flush=True)
    results = {}
    for name in names:
        gemms = training_gemms(layers_of(MODELS[name]), BATCH)
        kind = "torch_bf16" if args.precision == "bf16" else "onednn_fp32"
        gemm_ms = 1e3 * gemm_flops(gemms) / roofline(gemms, kind)
        r = phases_of(name, x, x_val, prep, args.epochs, args.precision)
        r["gemm_ms_at_roofline"] = gemm_ms
        r["roofline_kind"] = kind
        results[name] = r
        print(f"\n[{name}] ms per step ({r['steps']} steps); the step's GEMMs at the {kind} roofline: "
              f"{gemm_ms:.3f} ms", flush=True)
        for phase, value in r["ms_per_step"].items():
            print(f"  {phase:16s} {value:7.3f}", flush=True)
    out = {**machine_info(), "command": " ".join(["python", "benchmarks/step_phases.py",
                                                   *(argv if argv is not None else sys.argv[1:])]),
           "precision": args.precision, "epochs": args.epochs, "batch_size": BATCH, "models": results}
    print(f"raw results: {write_results(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
