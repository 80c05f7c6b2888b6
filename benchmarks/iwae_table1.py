"""IWAE paper, Table 1, MNIST, one stochastic layer (Burda, Grosse & Salakhutdinov 2016), in a wall-clock budget.

    taskset -c 1 python benchmarks/iwae_table1.py --rows vae --budget-minutes 60 --threads 1 \
        [--batch-size B] [--lr LR] [--schedule cosine] [--warmup-steps W] [--kl-warmup-epochs E]
    taskset -c 1 python benchmarks/iwae_table1.py --rows iwae5 iwae50 --budget-minutes 12 --eval-n 1000 --threads 1
    python benchmarks/iwae_table1.py --rows all ...      # all three rows, one after the other

Model: ``VAEConfig((1, 28, 28), latent_dim=50, hidden=(200, 200), activation='tanh',
likelihood='bernoulli')`` -- 784-200-200-50, tanh, diagonal Gaussian encoder, Bernoulli decoder.
Data: real MNIST (the IDX files in ``--data-dir``, default ``../shared/data/mnist`` relative to the
repository root), all 60,000 training images (``val_fraction=0``), dynamically binarised every
minibatch by ``fit_preprocessing(dataset, 'bernoulli').augment``; the 10,000 test images binarised
once with seed 0 (``vaekit.store.runs.eval_tensor``). ``fit`` needs a validation set; it gets the first 500
training images (monitoring only; nothing is selected on it).

Rows: ``vae`` = objective 'elbo' with 1 sample; ``iwae5`` / ``iwae50`` = objective 'iwae' with k = 5 / 50.
Each row trains with ``vaekit.training.loop.fit`` (Adam) for ``--budget-minutes`` of wall-clock time. The
default schedule, ``wall-cosine``, is a linear warm-up over ``--warmup-steps`` steps, then a cosine
decay of the learning rate to zero *over the wall-clock budget* (see ``wall_clock_cosine``: the
steps that fit in a budget on a shared CPU vary by tens of percent, so a step-counted schedule
either ends early or is cut before it has decayed). With ``--schedule cosine`` (vaekit's, counted
in steps) a short calibration (2 epochs on a few steps' worth of data) measures the seconds per
step and the number of epochs is chosen to fill ``--fill`` of the budget (or ``--epochs`` fixes it).
A per-epoch callback stops training once the budget is spent and saves a snapshot of the model at the first
epoch end after each mark in ``--snapshots`` (minutes; default 1/12, 1/6, 1/3, 1/2, 3/4 and 1 of
the budget) under ``--snapshot-dir``.

Evaluation: test NLL = -mean over the test images of log p(x) estimated by importance sampling
with K = ``--eval-k`` (5000) samples (``vaekit.inference.estimators.estimate_log_likelihood``, i.e. L_5000), on
the first ``--eval-n`` test images (default all 10,000), with its standard error over images;
active units (``vaekit.inference.estimators.active_units``, Cov_x(E_q[z_u]) > 0.01) on the same images.
Trend: the NLL of every snapshot on the first ``--trend-n`` (1,000) test images with
``--trend-k`` (5000) samples (the last snapshot, the final model, reuses the final evaluation's
per-image values on those images).

Published reference values (Burda et al. 2016, Table 1, MNIST, 1 stochastic layer; 3,280 passes
over the data, batch 20): VAE k=1 86.76, IWAE k=5 85.54, IWAE k=50 84.78 nats.

Results: a table and the trend on stdout and raw JSON in ``--out`` (default
``benchmarks/results/iwae_table1.json``). Rows already in that file that this command does not run
are kept; each row records its own command, date, machine, torch version and threads.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

import vaekit.training.loop
from vaekit import VAEConfig, build_vae
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.inference.estimators import active_units, estimate_log_likelihood
from vaekit.store.model_files import load_model, save_model
from vaekit.store.runs import eval_tensor
from vaekit.training import TrainConfig, fit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

ROWS = {  # name -> (objective, samples, published test NLL in nats, Burda et al. 2016 Table 1)
    "vae": ("elbo", 1, 86.76),
    "iwae5": ("iwae", 5, 85.54),
    "iwae50": ("iwae", 50, 84.78),
}
MONITOR_EXAMPLES = 500
CALIBRATION_STEPS = 30
EVAL_BATCH = 100


def model_config() -> VAEConfig:
    return VAEConfig((1, 28, 28), latent_dim=50, hidden=(200, 200), activation="tanh", likelihood="bernoulli")


def evaluate(model, x: torch.Tensor, k: int, seed: int) -> dict:
    """-mean log p(x) (L_k) over ``x`` with the standard error over images, the mean ELBO, the per-image values."""
    model.eval()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    log_p, elbo = [], []
    with torch.no_grad():
        for chunk in x.split(EVAL_BATCH):
            est = estimate_log_likelihood(model, chunk, n_samples=k)
            log_p.append(est.log_likelihood.double())
            elbo.append(est.elbo.double())
    log_p_all, elbo_all = torch.cat(log_p), torch.cat(elbo)
    n = log_p_all.shape[0]
    se = float(log_p_all.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "k": k, "nll": float(-log_p_all.mean()), "nll_se": se, "elbo": float(elbo_all.mean()),
            "seconds": time.perf_counter() - t0, "log_p": log_p_all}


@contextlib.contextmanager
def wall_clock_cosine(budget_seconds: float, t0: list[float]):
    """Make fit's learning-rate multiplier a cosine over wall-clock time: linear warm-up over the
    first ``warmup_steps`` steps, then ½ (1 + cos(π min(1, (t - t0) / budget))), with t0 = ``t0[0]``.

    vaekit's schedules count steps, and the steps that fit in a wall-clock budget on a shared CPU
    vary by tens of percent; this replaces ``vaekit.training.loop.lr_factor`` (which fit's LambdaLR calls
    at every step) for the duration of the block, so the rate reaches zero at the budget however
    fast the steps go.
    """
    original = vaekit.training.loop.lr_factor

    def factor(config: TrainConfig, step: int, total_steps: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (time.perf_counter() - t0[0]) / budget_seconds)))

    vaekit.training.loop.lr_factor = factor
    try:
        yield
    finally:
        vaekit.training.loop.lr_factor = original


def seconds_per_step(x_train, x_monitor, prep, config: TrainConfig) -> float:
    """Wall seconds per training step of ``config``, from the 2nd of 2 epochs on a few steps' worth of data."""
    steps = min(CALIBRATION_STEPS, math.ceil(x_train.shape[0] / config.batch_size))
    sub = x_train[: steps * config.batch_size]
    cal = TrainConfig(**{**config.to_dict(), "epochs": 2, "warmup_steps": 0, "kl_warmup_epochs": 0.0})
    torch.manual_seed(config.seed)
    result = fit(build_vae(model_config()), sub, x_monitor[:2], cal, preprocessing=prep)
    return result.history[1].seconds / math.ceil(sub.shape[0] / config.batch_size)


def run_row(name: str, args, x_train, x_monitor, x_test, prep) -> dict:
    objective, k, published = ROWS[name]
    budget = 60.0 * args.budget_minutes
    wall = args.schedule == "wall-cosine"
    base = TrainConfig(epochs=1, batch_size=args.batch_size, lr=args.lr, schedule="cosine" if wall else args.schedule,
                       warmup_steps=args.warmup_steps, objective=objective, samples=k,
                       kl_warmup_epochs=args.kl_warmup_epochs if objective == "elbo" else 0.0,
                       seed=args.seed, device="cpu")
    t_cal = time.perf_counter()
    sps = seconds_per_step(x_train, x_monitor, prep, base)
    cal_seconds = time.perf_counter() - t_cal
    steps_per_epoch = math.ceil(x_train.shape[0] / args.batch_size)
    epochs = args.epochs or max(1, int(args.fill * budget / (sps * steps_per_epoch)))
    if wall and not args.epochs:       # the budget, not the epoch count, ends training
        epochs = max(1, int(4 * budget / (sps * steps_per_epoch)))
    config = TrainConfig(**{**base.to_dict(), "epochs": epochs})
    print(f"[{name}] calibration: {sps * 1e3:.2f} ms/step ({cal_seconds:.1f} s) -> {epochs} epochs of "
          f"{steps_per_epoch} steps planned for {args.budget_minutes:g} min", flush=True)

    marks = sorted(args.snapshots if args.snapshots
                   else [budget / 60 * f for f in (1 / 12, 1 / 6, 1 / 3, 1 / 2, 3 / 4)])
    marks = [m for m in marks if m < args.budget_minutes] + [args.budget_minutes]
    snap_dir = Path(args.snapshot_dir) / name
    if snap_dir.exists():
        shutil.rmtree(snap_dir)
    snapshots: list[dict] = []
    history: list[dict] = []
    torch.manual_seed(args.seed)
    model = build_vae(model_config())
    pending = list(marks)
    t0 = time.perf_counter()
    t_start = [t0]

    def snapshot(m, mark: float | None) -> None:
        elapsed = time.perf_counter() - t0
        path = save_model(model, snap_dir / f"epoch{m.epoch:05d}")
        snapshots.append({"mark_minutes": mark, "epoch": m.epoch, "step": m.step, "train_seconds": elapsed,
                          "path": str(path)})
        print(f"[{name}] snapshot at {elapsed / 60:6.2f} min (mark {mark} min): epoch {m.epoch}, "
              f"train ELBO {m.train_elbo:.2f}, monitor ELBO {m.val_elbo:.2f}, lr {m.lr:.2e}", flush=True)

    def callback(m) -> bool:
        elapsed = time.perf_counter() - t0
        history.append({"epoch": m.epoch, "train_seconds": elapsed, "train_elbo": m.train_elbo,
                        "train_loss": m.train_loss, "monitor_elbo": m.val_elbo, "lr": m.lr,
                        "skipped_steps": m.skipped_steps})
        stop = elapsed >= budget
        crossed = [p for p in pending if p * 60 <= elapsed]
        if crossed or stop or m.epoch == epochs:
            for p in crossed:
                pending.remove(p)
            snapshot(m, crossed[-1] if crossed else None)
        return stop

    with wall_clock_cosine(budget, t_start) if wall else contextlib.nullcontext():
        result = fit(model, x_train, x_monitor, config, preprocessing=prep, callbacks=[callback],
                     restore_best=False)                    # the published protocol: the last epoch's weights
    train_seconds = time.perf_counter() - t0
    last = result.history[-1]
    print(f"[{name}] trained {last.epoch} epochs ({last.step} steps) in {train_seconds / 60:.2f} min; "
          f"final train ELBO {last.train_elbo:.2f}", flush=True)

    final = evaluate(model, x_test, args.eval_k, args.seed)
    au = active_units(model, x_test.split(EVAL_BATCH))
    print(f"[{name}] test NLL (L_{args.eval_k}, {final['n']} images) {final['nll']:.2f} +- {final['nll_se']:.2f}; "
          f"active units {au.count}; evaluation {final['seconds']:.0f} s", flush=True)

    trend = []
    for s in snapshots:
        is_final = s is snapshots[-1]
        if is_final and final["n"] >= args.trend_n and final["k"] == args.trend_k:
            lp = final["log_p"][: args.trend_n]
            ev = {"n": lp.shape[0], "k": args.trend_k, "nll": float(-lp.mean()),
                  "nll_se": (float(lp.std(unbiased=True) / math.sqrt(lp.shape[0])) if lp.shape[0] > 1
                             else math.nan),
                  "seconds": 0.0, "reused_final": True}
        else:
            ev = evaluate(load_model(s["path"]), x_test[: args.trend_n], args.trend_k, args.seed)
            ev.pop("log_p")
        trend.append({**{k_: v for k_, v in s.items() if k_ != "path"},
                      **{k_: v for k_, v in ev.items()
                         if k_ in ("n", "k", "nll", "nll_se", "seconds", "reused_final")}})
        print(f"[{name}] trend {s['train_seconds'] / 60:6.2f} min, epoch {s['epoch']:5d}: NLL "
              f"{trend[-1]['nll']:.2f} +- {trend[-1]['nll_se']:.2f} (first {ev['n']} test images, K={ev['k']})",
              flush=True)

    final.pop("log_p")
    return {
        "row": name, "objective": objective, "k": k, "published_nll": published,
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": platform.python_version(),
                    "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
        "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "schedule": {"batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule,
                     "warmup_steps": args.warmup_steps, "kl_warmup_epochs": config.kl_warmup_epochs,
                     "optimizer": "Adam", "planned_epochs": epochs, "train_config": config.to_dict(),
                     "budget_minutes": args.budget_minutes, "fill": args.fill, "epochs_given": bool(args.epochs),
                     "calibration_seconds_per_step": sps, "calibration_seconds": cal_seconds},
        "train_examples": int(x_train.shape[0]),
        "epochs": last.epoch, "steps": last.step, "passes": last.epoch, "train_seconds": train_seconds,
        "stopped_by_budget": bool(result.stopped_early),
        "final": {**final, "active_units": au.count, "unit_variances": au.variances.tolist(),
                  "active_threshold": au.threshold, "difference_from_published": final["nll"] - published},
        "trend": trend, "history": history,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=["vae"], choices=[*ROWS, "all"], help="rows to run (default vae)")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="training wall-clock budget per row (60)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", default="wall-cosine", choices=["wall-cosine", "cosine", "constant"],
                   help="learning-rate schedule: cosine over the wall-clock budget (default), or vaekit's "
                        "step-counted cosine (over the planned epochs) or constant")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps (0)")
    p.add_argument("--kl-warmup-epochs", type=float, default=0.0, help="KL warm-up epochs, VAE row only (0)")
    p.add_argument("--fill", type=float, default=0.98,
                   help="planned epochs fill this fraction of the budget at the calibrated speed (0.98)")
    p.add_argument("--epochs", type=int, default=0,
                   help="planned epochs (the cosine schedule's length); 0 = from the calibration and --fill (0)")
    p.add_argument("--snapshots", type=lambda s: [float(v) for v in s.split(",")], default=None,
                   help="snapshot marks in minutes, comma-separated (default 1/12,1/6,1/3,1/2,3/4,1 of the budget)")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--eval-n", type=int, default=10000, help="first N test images for the final NLL (10000 = all)")
    p.add_argument("--trend-k", type=int, default=5000)
    p.add_argument("--trend-n", type=int, default=1000, help="first N test images for the trend points (1000)")
    p.add_argument("--train-subset", type=int, default=0, help="use only the first N training images (0 = all)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--snapshot-dir", default=str(HERE / "results" / "tmp" / "iwae_table1"))
    p.add_argument("--out", default=str(HERE / "results" / "iwae_table1.json"))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = list(ROWS) if "all" in args.rows else list(dict.fromkeys(args.rows))

    dataset = load_dataset("mnist", data_dir=args.data_dir, val_fraction=0.0)
    prep = fit_preprocessing(dataset, "bernoulli")
    x_train = prep.prepare(dataset.train)                        # (60000, 1, 28, 28) in [0, 1]
    if args.train_subset:
        x_train = x_train[: args.train_subset].contiguous()
    x_monitor = x_train[:MONITOR_EXAMPLES]
    x_test = eval_tensor(prep, dataset.test, seed=0)             # (10000, 1, 28, 28) binarised once, seed 0
    x_test = x_test[: args.eval_n].contiguous()
    args.trend_n = min(args.trend_n, x_test.shape[0])
    print(f"MNIST from {args.data_dir}: train {tuple(x_train.shape)}, test {tuple(x_test.shape)}; "
          f"threads {torch.get_num_threads()}; cores {os.cpu_count()}; torch {torch.__version__}", flush=True)

    out_path = Path(args.out)
    existing = {}
    if out_path.exists():
        try:
            existing = {r["row"]: r for r in json.loads(out_path.read_text()).get("rows", [])}
        except (ValueError, KeyError, TypeError):
            existing = {}
    results = []
    for name in rows:
        results.append(run_row(name, args, x_train, x_monitor, x_test, prep))
        existing[name] = results[-1]
        ordered = [existing[r] for r in ROWS if r in existing]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"benchmark": "Burda, Grosse & Salakhutdinov 2016, Table 1, MNIST, 1 stochastic layer",
               "published_source": "IWAE paper Table 1 (test NLL, nats): VAE k=1 86.76, IWAE k=5 85.54, "
                                   "IWAE k=50 84.78; 3,280 passes",
               "rows": ordered}
        tmp = out_path.with_suffix(out_path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(out_path)

    print()
    print(f"{'row':7s} {'schedule':38s} {'epochs':>6s} {'train min':>9s} {'test NLL':>9s} {'+- se':>5s} "
          f"{'AU':>3s} {'published':>9s} {'diff':>6s}")
    for r in results:
        s, f = r["schedule"], r["final"]
        sched = (f"bs {s['batch_size']} lr {s['lr']:g} {s['schedule']}"
                 + (f" warm-up {s['warmup_steps']}" if s["warmup_steps"] else "")
                 + (f" KL warm-up {s['kl_warmup_epochs']:g} ep" if s["kl_warmup_epochs"] else ""))
        print(f"{r['row']:7s} {sched:38s} {r['epochs']:6d} {r['train_seconds'] / 60:9.2f} {f['nll']:9.2f} "
              f"{f['nll_se']:5.2f} {f['active_units']:3d} {r['published_nll']:9.2f} "
              f"{f['difference_from_published']:+6.2f}")
    print(f"(test NLL = -mean L_{args.eval_k} over the first {x_test.shape[0]} test images; se over images)")
    print()
    print(f"trend: NLL (L_{args.trend_k}) on the first {args.trend_n} test images at the snapshot wall times")
    for r in results:
        pts = ", ".join(f"{t['train_seconds'] / 60:.1f} min {t['nll']:.2f}" for t in r["trend"])
        print(f"{r['row']:7s} {pts}")
    resolved = out_path.resolve()
    shown = resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else out_path
    print(f"raw results: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
