"""Memory: peak resident memory of a ``vaekit train`` run on MNIST, against the size of the data
and of the model.

    taskset -c 0 python benchmarks/memory_training.py --threads 1 --with-default-eval

(the recorded run; see ``--help`` for the options). Every measurement is a fresh subprocess run
under ``/usr/bin/time -f %M``, which prints that process's peak resident set size (its
``ru_maxrss``: the kernel's high-water mark of its RSS over its whole life). Not ``os.wait4`` /
``RUSAGE_CHILDREN`` from this script: Linux carries the RSS high-water mark of the forking process
across fork + exec, so a direct child of this script (which holds torch and MNIST) would report at
least this script's own peak. Anonymous and file-backed RSS are also sampled from /proc every
20 ms. Children inherit this process's CPU affinity and run with ``OMP_NUM_THREADS`` =
``MKL_NUM_THREADS`` = ``--threads``.

* baseline  -- ``python -c "import torch, vaekit"``: the interpreter, torch and vaekit's imports;
* load only -- the import, then the data exactly as ``vaekit train`` holds them before training:
  ``load_dataset`` (raw uint8 splits), ``prepare`` of the train and validation splits (float32) and
  the dequantised test tensor (float32), nothing else;
* training runs -- the real command line,
  ``python -m vaekit train --data SPEC --hidden H --latent-dim K --epochs E --importance-samples 1
  --no-figures --device cpu --no-progress --out TMP``
  (defaults otherwise: Gaussian decoder with optimal c, tanh, Adam, batch 128, K = 1 importance
  sample for the final test evaluation so that the evaluation adds as little as possible);
  optionally (``--with-default-eval``) the same small-model run once more with the CLI's default
  ``--importance-samples 100`` (its evaluation chunks hold up to 2^24 floats at a time).

Data sizes: full MNIST (``--data mnist``: 54,000 train / 6,000 validation / 10,000 test) and the
first n MNIST training images for each n in ``--subsets``, written as a uint8 ``.npz`` that the
CLI splits into test (10 %), validation (10 % of the rest) and train (81 %), its default fractions.

For each configuration the script prints the peak RSS (median of ``--repeats`` fresh runs, and
their range), the import-only baseline (median of ``--baseline-repeats``), the training data as
float32 tensors (N_train x 784 x 4 bytes), the model's parameter bytes and the Adam state bytes
(measured: the optimiser's state tensors after one step of ``torch.optim.Adam`` on a copy of the
model built in this process), and

    ratio = (peak - baseline) / (training data + parameters + Adam state).

It also lists every float32 split the CLI keeps (train + validation + test). Raw results:
``benchmarks/results/memory_training.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vaekit import VAEConfig, build_vae
from vaekit.data import load_dataset

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MIB = 2**20

LOAD_ONLY = """
import sys, torch, vaekit
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.store.runs import eval_tensor
spec, data_dir = sys.argv[1], (sys.argv[2] or None)
ds = load_dataset(spec, data_dir=data_dir)
prep = fit_preprocessing(ds, "gaussian")
train_x, val_x = prep.prepare(ds.train), prep.prepare(ds.val)
test_x = eval_tensor(prep, ds.test if ds.test is not None else ds.val, seed=0)
print(train_x.shape[0], val_x.shape[0], test_x.shape[0])
"""


def _rss_parts(pid: int) -> tuple[int, int, int] | None:
    """(RssAnon, RssFile + RssShmem, VmHWM) of a live process in bytes, from /proc/PID/status; None if unreadable."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith(("Rss", "VmHWM")))
        kib = {k: int(v.split()[0]) for k, v in fields.items()}
        return kib["RssAnon"] * 1024, (kib["RssFile"] + kib.get("RssShmem", 0)) * 1024, kib["VmHWM"] * 1024
    except (OSError, KeyError, ValueError):
        return None


def _only_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if len(children) == 1 else None


def peak_rss(cmd: list[str], env: dict[str, str], log: Path, poll: float = 0.02) -> dict:
    """Run ``cmd`` to completion under ``/usr/bin/time -f %M`` and return its peak RSS in bytes.

    Why not ``ru_maxrss`` of a child of this process: Linux carries a process's RSS high-water mark
    across fork + exec (``signal->maxrss``), so a child of this benchmark, which holds torch and MNIST,
    would report at least this process's own peak. ``/usr/bin/time`` is a tiny C program: its child's
    ``ru_maxrss`` is that child's own peak. Also returned: the largest anonymous and file-backed RSS and
    VmHWM seen by polling /proc every ``poll`` seconds (sampled, so lower bounds), and the wall seconds.
    Non-zero exit: RuntimeError with the log's tail.
    """
    t0 = time.perf_counter()
    anon = file = hwm = samples = 0
    maxrss_file = log.with_suffix(".maxrss")
    with open(log, "wb") as out:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(maxrss_file), *cmd], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)
        child = None
        while proc.poll() is None:
            child = child or _only_child(proc.pid)
            parts = _rss_parts(child) if child else None
            if parts is not None:
                anon, file, hwm, samples = max(anon, parts[0]), max(file, parts[1]), max(hwm, parts[2]), samples + 1
            time.sleep(poll)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    kib = int(maxrss_file.read_text().split()[-1])        # GNU time's %M: the child's ru_maxrss in KiB
    return {"peak_rss_bytes": kib * 1024, "sampled_peak_anon_bytes": anon, "sampled_peak_file_bytes": file,
            "sampled_vm_hwm_bytes": hwm, "samples": samples, "wall_seconds": wall}


def model_bytes(shape: tuple[int, ...], hidden: tuple[int, ...], latent: int) -> dict:
    """Parameter count and bytes, and the bytes of Adam's state after one step (exp_avg, exp_avg_sq, step)."""
    model = build_vae(VAEConfig(shape, latent_dim=latent, hidden=hidden, likelihood="gaussian",
                                decoder_variance="optimal"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    adam = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return {"parameters": sum(p.numel() for p in params),
            "parameter_bytes": sum(p.numel() * p.element_size() for p in params),
            "gradient_bytes": sum(p.numel() * p.element_size() for p in params),
            "adam_state_bytes": adam, "buffer_bytes": buffers}


def parse_models(text: str) -> list[tuple[tuple[int, ...], int]]:
    """"400/20;200,200/50" -> [((400,), 20), ((200, 200), 50)]."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        hidden, latent = item.split("/")
        out.append((tuple(int(h) for h in hidden.split(",")), int(latent)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mnist",
                   help="mnist (default), or any other --data of vaekit train (digits, a .npy file, ...) "
                        "for a quick check")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--models", default="400/20;200,200/50;1024,1024/64",
                   help="hidden widths/latent dim, ';'-separated (default 400/20;200,200/50;1024,1024/64)")
    p.add_argument("--subsets", default="6000,20000",
                   help="also train the first model on the first n training images, for each n (comma-separated; "
                        "'' for none)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--with-default-eval", action="store_true",
                   help="also run the first model on the full data with the CLI's default --importance-samples 100")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each training configuration; the median peak is reported (default 3)")
    p.add_argument("--baseline-repeats", type=int, default=3, help="import-only runs; the median is used")
    p.add_argument("--no-load-only", action="store_true", help="skip the load-only reference runs (quick checks)")
    p.add_argument("--threads", type=int, default=1, help="threads of every child (OMP/MKL_NUM_THREADS; default 1)")
    p.add_argument("--out", default=str(HERE / "results" / "memory_training.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1")
    data_dir = args.data_dir if args.data in ("mnist", "fashion-mnist") else ""
    models = parse_models(args.models)
    subsets = [int(s) for s in args.subsets.split(",") if s.strip()] if args.data == "mnist" else []

    with tempfile.TemporaryDirectory(prefix="vaekit-mem-") as tmp_name:
        tmp = Path(tmp_name)
        full = load_dataset(args.data, data_dir=data_dir or None)
        shape = tuple(full.shape)
        dim = int(np.prod(shape))
        # (label, --data spec, dataset as the CLI will split it)
        datasets = [(f"{Path(args.data).name} (full)", args.data, full)]
        for n in subsets:
            path = tmp / f"mnist_first_{n}.npz"
            np.savez(path, x=full.train[:n, 0], y=full.train_labels[:n])      # (n, 28, 28) uint8
            datasets.append((f"mnist first {n}", str(path), load_dataset(path)))

        base_runs = [peak_rss([sys.executable, "-c", "import torch, vaekit"], env, tmp / f"baseline{i}.log")
                     for i in range(args.baseline_repeats)]
        baseline = int(statistics.median(b["peak_rss_bytes"] for b in base_runs))
        base_anon = int(statistics.median(b["sampled_peak_anon_bytes"] for b in base_runs))
        each = ", ".join(f"{b['peak_rss_bytes'] / MIB:.1f}" for b in base_runs)
        print(f"import-only baseline (import torch, vaekit), median of {len(base_runs)}: peak RSS "
              f"{baseline / MIB:.1f} MiB (all: {each}), "
              f"sampled anonymous {base_anon / MIB:.1f} MiB; torch {torch.__version__}, {args.threads} thread(s) "
              "per child", flush=True)

        loads = {}
        for label, spec, _ in ([] if args.no_load_only else datasets):
            m = peak_rss([sys.executable, "-c", LOAD_ONLY, spec, data_dir if spec == args.data else ""], env,
                         tmp / f"load_{len(loads)}.log")
            loads[spec] = m
            print(f"load only, {label}: peak RSS {m['peak_rss_bytes'] / MIB:.1f} MiB, sampled anonymous "
                  f"{m['sampled_peak_anon_bytes'] / MIB:.1f} MiB ({m['wall_seconds']:.1f} s)", flush=True)

        plan = [(label, spec, ds, hidden, latent, 1) for hidden, latent in models for label, spec, ds in datasets[:1]]
        plan += [(label, spec, ds, *models[0], 1) for label, spec, ds in datasets[1:]]
        if args.with_default_eval:
            plan.append((datasets[0][0], datasets[0][1], datasets[0][2], *models[0], 100))

        runs = []
        for i, (label, spec, ds, hidden, latent, k) in enumerate(plan):
            cmd = [sys.executable, "-m", "vaekit", "train", "--data", spec, "--hidden", ",".join(map(str, hidden)),
                   "--latent-dim", str(latent), "--epochs", str(args.epochs), "--importance-samples", str(k),
                   "--no-figures", "--no-progress", "--device", "cpu", "--out", str(tmp / f"run{i}")]
            if spec == args.data and data_dir:
                cmd[6:6] = ["--data-dir", data_dir]
            reps = []
            for rep in range(args.repeats):
                cmd[-1] = str(tmp / f"run{i}_{rep}")
                reps.append(peak_rss(cmd, env, tmp / f"run{i}_{rep}.log"))
            m = {key: statistics.median(r[key] for r in reps) for key in reps[0]}     # medians over repeats
            rss = m["peak_rss_bytes"]
            n_train, n_val, n_test = len(ds.train), len(ds.val), len(ds.test) if ds.test is not None else 0
            mb = model_bytes(shape, hidden, latent)
            train_bytes = n_train * dim * 4
            all_f32 = (n_train + n_val + n_test) * dim * 4
            denominator = train_bytes + mb["parameter_bytes"] + mb["adam_state_bytes"]
            arch = "-".join(map(str, (dim, *hidden, latent)))
            load = loads.get(spec)
            runs.append({
                "data": label, "data_spec": spec if spec == args.data else Path(spec).name, "arch": arch,
                "hidden": list(hidden), "latent_dim": latent, "importance_samples": k,
                "command": " ".join("python" if c == sys.executable else c for c in cmd),
                "n_train": n_train, "n_val": n_val, "n_test": n_test,
                "train_float32_bytes": train_bytes, "all_splits_float32_bytes": all_f32,
                "raw_uint8_bytes": (n_train + n_val + n_test) * dim, **mb, **m, "repeats": reps,
                "peak_rss_min_bytes": min(r["peak_rss_bytes"] for r in reps),
                "peak_rss_max_bytes": max(r["peak_rss_bytes"] for r in reps),
                "baseline_rss_bytes": baseline, "baseline_anon_bytes": base_anon,
                "load_only_rss_bytes": load["peak_rss_bytes"] if load else None,
                "load_only_anon_bytes": load["sampled_peak_anon_bytes"] if load else None,
                "ratio": (rss - baseline) / denominator,
                "ratio_anon": (m["sampled_peak_anon_bytes"] - base_anon) / denominator,
                "ratio_all_splits": (rss - baseline) / (all_f32 + mb["parameter_bytes"] + mb["gradient_bytes"]
                                                        + mb["adam_state_bytes"]),
            })
            each = ", ".join(f"{r['peak_rss_bytes'] / MIB:.1f}" for r in reps)
            print(f"{arch:>18s} on {label:18s} K={k:<3d}: peak RSS {rss / MIB:7.1f} MiB (median of {each}), sampled "
                  f"anonymous {m['sampled_peak_anon_bytes'] / MIB:7.1f} MiB ({m['wall_seconds']:5.1f} s each)",
                  flush=True)

    def mib(v: float | None) -> str:
        return "-" if v is None else f"{v / MIB:.1f}"

    print()
    print(f"peak RSS of `vaekit train` ({args.epochs} epoch(s)), MiB, median of {args.repeats} runs (min-max); "
          "baseline = import torch, vaekit = "
          f"{baseline / MIB:.1f} MiB (anonymous {base_anon / MIB:.1f}); data = N_train x {dim} x 4 bytes; "
          "model = parameters; Adam = its state; ratio = (peak - baseline) / (data + model + Adam); "
          "anon = sampled peak anonymous RSS, ratio_anon = (anon - baseline anon) / (data + model + Adam)")
    cols = ("model", "data", "K", "N train", "params", "peak", "min-max", "load only", "anon", "data", "model",
            "Adam", "all f32", "ratio", "r_anon")
    widths = (16, 18, 4, 8, 10, 7, 11, 9, 7, 7, 6, 6, 7, 6, 6)
    print(" ".join(f"{c:>{w}s}" for c, w in zip(cols, widths, strict=True)))
    for r in runs:
        cells = (r["arch"], r["data"], str(r["importance_samples"]), str(r["n_train"]), f"{r['parameters']:,d}",
                 mib(r["peak_rss_bytes"]), f"{r['peak_rss_min_bytes'] / MIB:.0f}-{r['peak_rss_max_bytes'] / MIB:.0f}",
                 mib(r["load_only_rss_bytes"]), mib(r["sampled_peak_anon_bytes"]),
                 mib(r["train_float32_bytes"]), mib(r["parameter_bytes"]), mib(r["adam_state_bytes"]),
                 mib(r["all_splits_float32_bytes"]), f"{r['ratio']:.2f}", f"{r['ratio_anon']:.2f}")
        print(" ".join(f"{c:>{w}s}" for c, w in zip(cells, widths, strict=True)))

    out = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": platform.python_version(),
                    "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
        "torch_version": torch.__version__,
        "threads_per_child": args.threads,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
        "method": {"peak_rss": "/usr/bin/time -f %M (the child's ru_maxrss, KiB -> bytes): its RSS high-water mark; "
                               "not os.wait4 here, since fork+exec carries the parent's high-water mark into the child",
                   "baseline": "python -c 'import torch, vaekit'",
                   "load_only": "import + load_dataset + prepare(train), prepare(val) + eval_tensor(test)",
                   "sampled_anon": "largest RssAnon in /proc/PID/status polled every 20 ms (a lower bound)",
                   "ratio": "(peak - baseline) / (N_train*D*4 + parameter bytes + Adam state bytes)",
                   "ratio_anon": "(sampled peak anon - baseline sampled anon) / (same denominator)",
                   "ratio_all_splits": "(peak - baseline) / (all float32 splits + parameters + gradients + Adam)"},
        "epochs": args.epochs, "repeats": args.repeats, "data_dim": dim,
        "baseline_rss_bytes": baseline, "baseline_anon_bytes": base_anon, "baseline_runs": base_runs,
        "load_only": loads, "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    shown = Path(args.out).resolve()
    print(f"raw results: {shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
