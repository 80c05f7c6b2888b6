"""Objectives and gradient estimators side by side on dynamically binarised MNIST, each row with the
same wall-clock training budget (issue 28, item 5).

    taskset -c 1 python benchmarks/objectives_table.py --rows all --budget-minutes 60 --threads 1
    python benchmarks/objectives_table.py --rows iwae5 iwae5-dreg --budget-minutes 30 --eval-n 1000

Model (as ``benchmarks/iwae_table1.py``): 784-200-200-50, tanh, diagonal Gaussian encoder, Bernoulli
decoder; all 60,000 training images binarised afresh every minibatch, the 10,000 test images binarised
once with seed 0; Adam, batch ``--batch-size``, the learning rate decayed by a cosine over the wall-clock
budget (``iwae_table1.wall_clock_cosine``), training stopped at the first epoch end past the budget.

Rows (:data:`ROWS`): ELBO (reparam), IWAE k = 5 reparam and DReG, MIWAE(8, 8), PIWAE(8, 8), CIWAE(β = 0.05,
K = 64: the 64 draws of the 8 × 8 rows) and VR-α (α = 0.5, K = 5). Every row reports the same things,
whatever it trained: the test NLL = -mean L_K over the first ``--eval-n`` test images with K =
``--eval-k`` (5000) importance samples, its standard error over images, the test ELBO, and the seconds
one epoch of the row costs (median over its epochs: the price of its extra draws and passes).

Published values sit beside a row only where a paper reports the same protocol (this architecture, one
stochastic layer, binarised MNIST, L_5000): the IWAE paper's Table 1 (Burda et al. 2016; 3,280 passes):
VAE 86.76, IWAE k = 5 85.54. The other rows' papers (Rainforth et al. 2018; Tucker et al. 2019; Li &
Turner 2016) and pythae's reproductions use other architectures, budgets or estimators; their figures
are to be added beside the rows, with where each was read, when the table is written into BENCHMARKS.md.

Raw results: ``--out`` (default ``benchmarks/results/objectives_table.json``); rows already in that file
that this command does not run are kept; each row records its command, date, machine and threads.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import machine_info, write_results
from iwae_table1 import evaluate, model_config, wall_clock_cosine

from vaekit import build_vae
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.store.runs import eval_tensor
from vaekit.training import TrainConfig, fit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: name -> the TrainConfig fields of the row and its published test NLL (nats; None where no paper reports
#: this protocol).
ROWS: dict[str, dict[str, Any]] = {
    "elbo": {"objective": "elbo", "samples": 1, "gradient": "reparam", "objective_args": None, "published": 86.76},
    "iwae5": {"objective": "iwae", "samples": 5, "gradient": "reparam", "objective_args": None, "published": 85.54},
    "iwae5-dreg": {"objective": "iwae", "samples": 5, "gradient": "dreg", "objective_args": None, "published": None},
    "miwae8x8": {"objective": "miwae", "samples": 8, "gradient": "reparam", "objective_args": {"groups": 8},
                 "published": None},
    "piwae8x8": {"objective": "piwae", "samples": 8, "gradient": "reparam", "objective_args": {"groups": 8},
                 "published": None},
    "ciwae0.05": {"objective": "ciwae", "samples": 64, "gradient": "reparam", "objective_args": {"beta": 0.05},
                  "published": None},
    "vr0.5": {"objective": "vr", "samples": 5, "gradient": "reparam", "objective_args": {"alpha": 0.5},
              "published": None},
}
PUBLISHED_SOURCE = ("Burda, Grosse & Salakhutdinov 2016, Table 1 (MNIST, 1 stochastic layer, L_5000, 3,280 passes): "
                    "VAE k=1 86.76, IWAE k=5 85.54 nats")
MONITOR_EXAMPLES = 500


def run_row(name: str, args: argparse.Namespace, x_train, x_monitor, x_test, prep) -> dict:
    """Train row ``name`` for the wall-clock budget, then evaluate it; the row's JSON."""
    row = ROWS[name]
    budget = 60.0 * args.budget_minutes
    config = TrainConfig(epochs=10**6, batch_size=args.batch_size, lr=args.lr, schedule="cosine",
                         objective=row["objective"], samples=row["samples"], gradient=row["gradient"],
                         objective_args=row["objective_args"], seed=args.seed, device="cpu", precision=args.precision)
    history: list[dict] = []
    t0 = time.perf_counter()
    start = [t0]

    def callback(m) -> bool:
        history.append({"epoch": m.epoch, "train_seconds": time.perf_counter() - t0, "epoch_seconds": m.seconds,
                        "train_loss": m.train_loss, "train_elbo": m.train_elbo, "monitor_elbo": m.val_elbo,
                        "lr": m.lr, "skipped_steps": m.skipped_steps})
        return time.perf_counter() - t0 >= budget

    torch.manual_seed(args.seed)
    model = build_vae(model_config())
    with wall_clock_cosine(budget, start):
        result = fit(model, x_train, x_monitor, config, preprocessing=prep, callbacks=[callback])
    train_seconds = time.perf_counter() - t0
    final = evaluate(model, x_test, args.eval_k, args.seed)
    final.pop("log_p")
    last = result.history[-1]
    per_epoch = statistics.median(h["epoch_seconds"] for h in history)
    published = row["published"]
    print(f"[{name}] {last.epoch} epochs ({last.step} steps) in {train_seconds / 60:.2f} min, {per_epoch:.1f} s/epoch; "
          f"test NLL {final['nll']:.2f} +- {final['nll_se']:.2f}, test ELBO {final['elbo']:.2f}", flush=True)
    return {"row": name, **{k: v for k, v in row.items() if k != "published"}, "published_nll": published,
            "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), **machine_info(),
            "train_config": config.to_dict(), "budget_minutes": args.budget_minutes,
            "train_examples": int(x_train.shape[0]), "epochs": last.epoch, "steps": last.step,
            "train_seconds": train_seconds, "seconds_per_epoch_median": per_epoch,
            "final": {**final, "difference_from_published": (final["nll"] - published) if published else None},
            "history": history}


def _table(rows: list[dict], eval_k: int) -> None:
    print(f"\n{'row':11s} {'epochs':>6s} {'s/epoch':>8s} {'test NLL':>9s} {'+- se':>5s} {'test ELBO':>9s} "
          f"{'published':>9s}")
    for r in rows:
        f, p = r["final"], r["published_nll"]
        print(f"{r['row']:11s} {r['epochs']:6d} {r['seconds_per_epoch_median']:8.1f} {f['nll']:9.2f} "
              f"{f['nll_se']:5.2f} {f['elbo']:9.2f} {p if p is not None else '-':>9}")
    print(f"(test NLL = -mean L_{eval_k} over the first {rows[0]['final']['n']} test images; se over images)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=["all"], choices=[*ROWS, "all"], help="rows to run (default all)")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="training wall-clock budget per row (60)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--eval-n", type=int, default=10000, help="first N test images (10000 = all)")
    p.add_argument("--train-subset", type=int, default=0, help="use only the first N training images (0 = all)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "objectives_table.json"))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = list(ROWS) if "all" in args.rows else list(dict.fromkeys(args.rows))

    dataset = load_dataset("mnist", data_dir=args.data_dir, val_fraction=0.0)
    prep = fit_preprocessing(dataset, "bernoulli")
    x_train = prep.prepare(dataset.train)                        # (60000, 1, 28, 28) in [0, 1]
    if args.train_subset:
        x_train = x_train[: args.train_subset].contiguous()
    x_test = eval_tensor(prep, dataset.test, seed=0)[: args.eval_n].contiguous()   # binarised once, seed 0
    print(f"MNIST: train {tuple(x_train.shape)}, test {tuple(x_test.shape)}; threads {torch.get_num_threads()}",
          flush=True)

    out = Path(args.out)
    kept: dict[str, dict] = {}
    if out.exists():
        try:
            kept = {r["row"]: r for r in json.loads(out.read_text()).get("rows", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            kept = {}
    done = []
    for name in names:
        done.append(run_row(name, args, x_train, x_train[:MONITOR_EXAMPLES], x_test, prep))
        kept[name] = done[-1]
        shown = write_results(out, {"benchmark": "objectives and gradient estimators, equal wall-clock budget, "
                                                 "binarised MNIST, 784-200-200-50",
                                    "published_source": PUBLISHED_SOURCE,
                                    "rows": [kept[r] for r in ROWS if r in kept]})
    _table(done, args.eval_k)
    print(f"raw results: {shown}")
    return 0 if all(math.isfinite(r["final"]["nll"]) for r in done) else 1


if __name__ == "__main__":
    raise SystemExit(main())
