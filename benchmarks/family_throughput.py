"""Throughput of every model family on MNIST, side by side: training steps and importance-sampled log p(x).

    python benchmarks/family_throughput.py [--threads T] [--rounds R] [--train-seconds S] [--eval-seconds S]

Loads real MNIST from ``../shared/data/mnist`` (relative to the repository root) with
``vaekit.data.load_dataset`` and, in one process, measures each family below. Every family is the
baseline (784-200-200-50 tanh MLP, Bernoulli decoder, diagonal Gaussian q, N(0, I) prior, the model of
benchmark 1) with one thing changed, as ``vaekit train`` would build it (``VAEConfig`` + ``build_vae``;
the data prepared by ``fit_preprocessing(dataset, likelihood.data_kind)``: dynamically binarised for
Bernoulli, the levels k/255 for the discretized logistics, whose ``bins`` are 256):

* mlp -- the baseline; conv, resnet -- ``arch`` with its default ``arch_args`` (width 32, 2 stages,
  ReLU; resnet 1 block per stage); mixture -- ``prior="mixture"`` (10 components); vamp --
  ``prior="vamp"`` (500 pseudo-inputs); iaf -- ``posterior="iaf"`` (2 steps, MADE 64-64, context 32);
  layers2 -- the IWAE paper's two stochastic layers, 784-200-200-100 (z1) and 100-100-50 (z2), trained by
  the ELBO; conditional -- ``num_classes=10`` (MNIST's labels); logistic -- ``discretized-logistic``;
  logistic-mixture -- ``discretized-logistic-mixture`` (10 components).

Two measurements per family, interleaved round-robin over the families (round r measures every family
once, in the order above, so a change of machine load hits all alike), ``--rounds`` rounds, medians:

* training -- examples/s of ``vaekit.fit`` (what ``vaekit train`` runs: batching by permutation, the
  batch's binarisation, forward, backward, the divergence guard's gradient norm, fused Adam 1e-3,
  batch ``--batch-size``), on a fresh model (seed r) and a training subset of n steps: 1 warm-up epoch
  + 1 timed epoch, speed = subset / the timed epoch's ``EpochMetrics.seconds`` (which includes the
  validation of 2 examples: negligible). n is set per family, once, from a 3-step calibration, so that a
  timed epoch lasts about ``--train-seconds`` (at least 2 steps, at most the 54,000 training images).
* evaluation -- images/s of ``vaekit.estimate_log_likelihood(model, x, n_samples=K)`` (K =
  ``--samples``, default chunking), over the first ``--images`` test images (binarised once, seed 0, as
  ``vaekit evaluate``), in batches of ``--batch-size``, repeated m times (m set once per family from a
  calibration so that a measurement lasts about ``--eval-seconds``), after a small warm-up call; on the
  model just trained.

The ratio to the baseline is the family's median over the mlp's median. The 1-minute load average is
recorded before and after the run (``os.getloadavg``). Results: a Markdown table on stdout and the raw
JSON in ``benchmarks/results/family_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_common import machine_info, write_results  # noqa: E402

from vaekit import VAEConfig, build_vae, estimate_log_likelihood, fit  # noqa: E402
from vaekit.data import Preprocessing, fit_preprocessing, load_dataset  # noqa: E402
from vaekit.models.likelihoods import build_likelihood  # noqa: E402
from vaekit.store.runs import eval_tensor  # noqa: E402
from vaekit.training import TrainConfig  # noqa: E402

#: The baseline: benchmark 1's model (IWAE paper, one stochastic layer).
BASE: dict[str, Any] = {"data_shape": (1, 28, 28), "latent_dim": 50, "hidden": (200, 200), "activation": "tanh",
                        "likelihood": "bernoulli"}
_NOT_MLP = {"hidden": None, "activation": None}
#: (name, the ``vaekit train`` options that make it, VAEConfig fields changed from BASE)
FAMILIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("mlp", "--hidden 200,200 --latent-dim 50 --activation tanh --likelihood bernoulli", {}),
    ("conv", "--arch conv", {"arch": "conv", **_NOT_MLP}),
    ("resnet", "--arch resnet", {"arch": "resnet", **_NOT_MLP}),
    ("mixture", "--prior mixture", {"prior": "mixture"}),
    ("vamp", "--prior vamp", {"prior": "vamp"}),
    ("iaf", "--posterior iaf", {"posterior": "iaf"}),
    ("layers2", "--layers 2 --latent-dim 100 --layer-args '{\"latent_dims\": [50], \"hidden\": [[100, 100]]}'",
     {"layers": 2, "latent_dim": 100, "layer_args": {"latent_dims": [50], "hidden": [[100, 100]]}}),
    ("conditional", "--conditional", {"num_classes": 10}),
    ("logistic", "--likelihood discretized-logistic",
     {"likelihood": "discretized-logistic", "likelihood_args": {"bins": 256}}),
    ("logistic-mixture", "--likelihood discretized-logistic-mixture",
     {"likelihood": "discretized-logistic-mixture", "likelihood_args": {"bins": 256}}),
)
CALIBRATION_STEPS = 3
MIN_STEPS = 2


class Family:
    """One family's configuration, prepared data and calibrated measurement sizes."""

    def __init__(self, name: str, options: str, changes: dict[str, Any], data: dict[str, Any], args) -> None:
        self.name, self.options = name, options
        self.config = VAEConfig(**{**BASE, **changes})
        kind = build_likelihood(self.config.likelihood, self.config.data_shape,
                                args=self.config.likelihood_args).data_kind
        self.prep, self.train_x, self.test_x = data[kind]
        self.val_x = self.train_x[-2:]                       # 2 validation examples: one tiny forward pass
        labelled = self.config.num_classes > 0
        self.train_y = data["train_y"] if labelled else None
        self.test_y = data["test_y"] if labelled else None
        self.batch, self.samples = args.batch_size, args.samples
        self.steps = self.eval_repeats = 1

    def model(self, seed: int):
        torch.manual_seed(seed)
        return build_vae(self.config)

    def train(self, steps: int, seed: int) -> dict[str, Any]:
        """fit(): 1 warm-up epoch + 1 timed epoch of ``steps`` steps on a fresh model (seed ``seed``)."""
        n = steps * self.batch
        x = self.train_x[:n]
        labels = {} if self.train_y is None else {"train_y": self.train_y[:n], "val_y": self.train_y[-2:]}
        model = self.model(seed)
        config = TrainConfig(epochs=2, batch_size=self.batch, lr=1e-3, seed=seed, device="cpu")
        result = fit(model, x, self.val_x, config, preprocessing=self.prep, **labels)
        timed = result.history[-1]
        return {"model": model, "examples_per_second": n / timed.seconds, "steps": steps,
                "seconds": timed.seconds, "ms_per_step": 1e3 * timed.seconds / steps,
                "train_elbo": timed.train_elbo}

    def log_px(self, model, images: int, samples: int) -> float:
        """One pass of estimate_log_likelihood over the first ``images`` test images; their mean log p̂(x)."""
        total = 0.0
        for i in range(0, images, self.batch):
            x = self.test_x[i:min(i + self.batch, images)]
            y = None if self.test_y is None else self.test_y[i:i + x.shape[0]]
            total += float(estimate_log_likelihood(model, x, n_samples=samples, y=y).log_likelihood.sum())
        return total / images

    def evaluate(self, model, images: int, repeats: int, seed: int) -> dict[str, Any]:
        """``repeats`` passes over ``images`` test images with K = ``self.samples``, after a warm-up call."""
        self.log_px(model, min(2, images), 4)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        values = [self.log_px(model, images, self.samples) for _ in range(repeats)]
        seconds = time.perf_counter() - t0
        return {"examples_per_second": images * repeats / seconds, "repeats": repeats, "seconds": seconds,
                "ms_per_image": 1e3 * seconds / (images * repeats), "log_likelihood": statistics.fmean(values)}

    def calibrate(self, args) -> dict[str, Any]:
        """Steps per timed epoch and passes per evaluation, from a short run (which is also a warm-up)."""
        cal = self.train(CALIBRATION_STEPS, seed=0)
        per_step = cal["seconds"] / CALIBRATION_STEPS
        self.steps = max(MIN_STEPS, min(self.train_x.shape[0] // self.batch, round(args.train_seconds / per_step)))
        cal_images = min(args.images, 32)
        e = self.evaluate(cal["model"], cal_images, 1, seed=0)
        per_pass = e["seconds"] * args.images / cal_images
        self.eval_repeats = max(1, round(args.eval_seconds / per_pass))
        params = sum(p.numel() for p in cal["model"].parameters())
        return {"seconds_per_step": per_step, "steps": self.steps, "train_subset": self.steps * self.batch,
                "seconds_per_eval_pass": per_pass, "eval_repeats": self.eval_repeats, "parameters": params}


def load_data(args) -> dict[str, Any]:
    """MNIST prepared once per data kind the families need: (preprocessing, train, test)."""
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    if dataset.test is None or dataset.train_labels is None or dataset.test_labels is None:
        raise SystemExit(f"--data-dir {args.data_dir}: needs MNIST's test images and both label files (the "
                         "conditional family trains on the labels)")
    data: dict[str, Any] = {"train_y": torch.as_tensor(dataset.train_labels),
                            "test_y": torch.as_tensor(dataset.test_labels[:args.images])}
    for kind in ("binary", "discrete"):
        prep: Preprocessing = fit_preprocessing(dataset, kind)
        data[kind] = (prep, prep.prepare(dataset.train), eval_tensor(prep, dataset.test[:args.images], seed=0))
    return data


def _round_ratios(rounds: list[dict[str, Any]], name: str) -> dict[str, float]:
    """Median over rounds of the family's speed over the mlp's in the same round (less sensitive to a load
    that changes between rounds than the ratio of the medians)."""
    out = {}
    for part in ("train", "eval"):
        out[f"{part}_over_mlp"] = statistics.median(r["families"][name][part]["examples_per_second"]
                                                    / r["families"]["mlp"][part]["examples_per_second"]
                                                    for r in rounds)
    return out


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def table(families: list[Family], medians: dict[str, dict[str, float]], args) -> str:
    """The Markdown table of medians and ratios to the mlp baseline."""
    base = medians["mlp"]
    lines = [f"| family | option | parameters | train ex/s | ms/step | × mlp | eval images/s (K = {args.samples}) "
             "| ms/image | × mlp |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for f in families:
        m = medians[f.name]
        lines.append(f"| {f.name} | `{f.options}` | {m['parameters']:,} | {_fmt(m['train'])} | "
                     f"{1e3 * args.batch_size / m['train']:.1f} | {m['train'] / base['train']:.2f} | "
                     f"{_fmt(m['eval'])} | {1e3 / m['eval']:.2f} | {m['eval'] / base['eval']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the families (default 3)")
    p.add_argument("--batch-size", type=int, default=128, help="training and evaluation batch (default 128)")
    p.add_argument("--train-seconds", type=float, default=2.5,
                   help="target seconds of one timed training epoch, which sets its steps (default 2.5)")
    p.add_argument("--eval-seconds", type=float, default=2.0,
                   help="target seconds of one evaluation measurement, which sets its passes (default 2)")
    p.add_argument("--images", type=int, default=256, help="test images per evaluation pass (default 256)")
    p.add_argument("--samples", type=int, default=100, help="importance samples K (default 100)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "family_throughput.json"))
    args = p.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or args.batch_size < 1 or args.images < 2 or args.samples < 1:
        p.error("--threads, --rounds, --batch-size and --samples must be >= 1, --images >= 2")
    if not (args.train_seconds > 0 and args.eval_seconds > 0):
        p.error("--train-seconds and --eval-seconds must be > 0")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t_start = time.perf_counter()

    data = load_data(args)
    families = [Family(name, options, changes, data, args) for name, options, changes in FAMILIES]
    print(f"MNIST from {args.data_dir}; batch {args.batch_size}; K = {args.samples} on {args.images} test images; "
          f"threads {torch.get_num_threads()}; cores {os.cpu_count()}; torch {torch.__version__}; "
          f"load average {load_before[0]:.2f}", flush=True)
    calibration = {}
    for f in families:
        calibration[f.name] = c = f.calibrate(args)
        print(f"calibrated {f.name:17s} {1e3 * c['seconds_per_step']:7.1f} ms/step -> {c['steps']:4d} steps; "
              f"{c['seconds_per_eval_pass']:6.2f} s/eval pass -> {c['eval_repeats']} passes", flush=True)

    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        row: dict[str, Any] = {"round": r + 1, "families": {}}
        for f in families:
            t = f.train(f.steps, seed=r)
            e = f.evaluate(t.pop("model"), args.images, f.eval_repeats, seed=r)
            row["families"][f.name] = {"train": t, "eval": e}
            print(f"round {r + 1} {f.name:17s} train {t['examples_per_second']:9.0f} ex/s | eval "
                  f"{e['examples_per_second']:8.1f} images/s", flush=True)
        rounds.append(row)

    medians: dict[str, dict[str, float]] = {}
    for f in families:
        per = [x["families"][f.name] for x in rounds]
        medians[f.name] = {"train": statistics.median(x["train"]["examples_per_second"] for x in per),
                           "eval": statistics.median(x["eval"]["examples_per_second"] for x in per),
                           "parameters": calibration[f.name]["parameters"]}
    base = medians["mlp"]
    load_after = os.getloadavg()
    wall = time.perf_counter() - t_start
    print()
    print(f"median of {args.rounds} rounds; {torch.get_num_threads()} threads; load average (1 min) "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {wall:.0f} s in all")
    print(table(families, medians, args))

    out = {
        **machine_info(),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
        "rounds_count": args.rounds, "batch_size": args.batch_size, "samples": args.samples, "images": args.images,
        "train_seconds_target": args.train_seconds, "eval_seconds_target": args.eval_seconds,
        "load_average_before": list(load_before), "load_average_after": list(load_after), "wall_seconds": wall,
        "data": {"dir": args.data_dir, "train_examples": int(data["binary"][1].shape[0]),
                 "test_images": args.images},
        "method": {
            "train": "vaekit.fit (what `vaekit train` runs), fresh model per round, 1 warm-up epoch + 1 timed epoch "
                     "of `steps` steps; examples/s = subset / EpochMetrics.seconds of the timed epoch (includes the "
                     "validation of 2 examples); Adam 1e-3, ELBO with 1 draw",
            "eval": "vaekit.estimate_log_likelihood(model, x, n_samples=K) over the first `images` test images in "
                    "batches of batch_size, `repeats` passes, after a warm-up call; images/s",
            "order": "round-robin: each round measures every family once, in the listed order; medians over rounds",
            "ratio": "family median / mlp median",
        },
        "families": {f.name: {"options": f.options, "config": f.config.to_dict(), "calibration": calibration[f.name],
                              "median_train_examples_per_second": medians[f.name]["train"],
                              "median_eval_images_per_second": medians[f.name]["eval"],
                              "train_over_mlp": medians[f.name]["train"] / base["train"],
                              "eval_over_mlp": medians[f.name]["eval"] / base["eval"],
                              "median_of_round_ratios": _round_ratios(rounds, f.name)} for f in families},
        "rounds": rounds,
    }
    print(f"raw results: {write_results(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
