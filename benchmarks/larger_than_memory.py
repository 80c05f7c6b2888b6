"""Training on a .npy file larger than the memory the process may use, and what streaming costs.

    python benchmarks/larger_than_memory.py [--budget-mb 1024] [--file-gb 4] [--threads 2]

1. Generates ``--file-gb`` GiB of MNIST-like uint8 images (N, 28, 28) in
   ``benchmarks/results/tmp/large.npy`` (``--work-dir``): the real MNIST training images (from
   ``../shared/data/mnist``) tiled, each copy shifted by a random whole-pixel offset so the rows
   are not identical. Written chunk by chunk through ``np.lib.format.open_memmap``.
2. Runs ``vaekit train --stream`` on it for one epoch as a subprocess whose data segment is
   limited to ``--budget-mb`` MiB (``RLIMIT_DATA``: heap and private anonymous memory, so neither
   the array nor its float32 copy can be held; the read-only file mapping is not counted), and
   reports its peak resident memory (``/usr/bin/time -f %M``) against the file size. The same command
   without ``--stream`` runs under the same limit to show that the in-memory path cannot.
3. Measures the throughput cost of streaming: ``vaekit train`` on the 60,000 MNIST training images
   saved as a .npy file, in memory and with ``--stream``, alternating for ``--rounds`` rounds
   (examples per second from ``metrics.jsonl``: training examples / epoch seconds, epochs 2..E,
   the first is a warm-up); no memory limit.

Model for all runs: 784-200-200-16 tanh MLP, Bernoulli decoder (dynamic binarisation), batch 256.
Raw JSON: ``benchmarks/results/larger_than_memory.json``. The generated file is deleted at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import REPO, machine_info

from vaekit.data import load_dataset

RESULTS = REPO / "benchmarks" / "results"
TMP = RESULTS / "tmp"
MODEL = ["--hidden", "200,200", "--latent-dim", "16", "--activation", "tanh", "--likelihood", "bernoulli",
         "--batch-size", "256", "--lr", "1e-3", "--no-figures", "--importance-samples", "10", "--no-progress"]


def generate(path: Path, gib: float, seed: int = 0) -> int:
    """Write about ``gib`` GiB of shifted MNIST digits to ``path``; return the number of rows."""
    mnist = load_dataset("mnist", data_dir=REPO.parent / "shared" / "data" / "mnist").train[:, 0]   # (N, 28, 28)
    rows = int(gib * (1 << 30)) // (28 * 28)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, 28, 28))
    rng = np.random.default_rng(seed)
    done = 0
    while done < rows:
        take = min(len(mnist), rows - done)
        dy, dx = rng.integers(-3, 4, size=2)
        out[done:done + take] = np.roll(mnist[:take], (int(dy), int(dx)), axis=(1, 2))
        done += take
    out.flush()
    del out
    return rows


def run_train(args: list[str], out: Path, *, budget_bytes: int | None, threads: int) -> dict:
    """``vaekit train`` as a subprocess (optionally under RLIMIT_DATA): wall time, peak resident
    memory, exit code, metrics rows. The peak is ``/usr/bin/time -f %M`` (the child's own
    ``ru_maxrss``): waiting on a direct child of this process would report this process's own
    high-water mark when it is larger, since fork and exec carry it into the child."""
    def limit() -> None:
        if budget_bytes is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (budget_bytes, budget_bytes))

    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log, peak_file = out.with_suffix(".stderr"), out.with_suffix(".maxrss")
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak_file), sys.executable, "-m", "vaekit",
                               "train", *args, "--out", str(out), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=err, env=env, preexec_fn=limit)
    wall = time.perf_counter() - t0
    lines = log.read_text().strip().splitlines()
    peak_kib = int(peak_file.read_text().split()[-1])
    log.unlink()
    peak_file.unlink()
    metrics = []
    if (out / "metrics.jsonl").exists():
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"returncode": proc.returncode, "wall_s": wall, "peak_rss_mib": peak_kib / 1024,
            "stderr_tail": lines[-1] if lines else "", "metrics": metrics}


def examples_per_second(result: dict, n_train: int) -> float:
    seconds = [m["seconds"] for m in result["metrics"][1:]]
    return n_train * len(seconds) / sum(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-mb", type=int, default=1024, help="RLIMIT_DATA of the streamed run, MiB")
    p.add_argument("--file-gb", type=float, default=4.0, help="size of the generated file, GiB")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="epochs of each throughput run (the first is a warm-up)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the generated file")
    p.add_argument("--work-dir", type=Path, default=TMP, help="where the generated files and runs go")
    p.add_argument("--out", type=Path, default=RESULTS / "larger_than_memory.json")
    args = p.parse_args()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    budget = args.budget_mb << 20
    command = " ".join(["python", "benchmarks/larger_than_memory.py", *sys.argv[1:]])
    report: dict = {**machine_info(), "command": command, "budget_mib": args.budget_mb}

    big = work / "large.npy"
    t0 = time.perf_counter()
    rows = generate(big, args.file_gb)
    file_mib = big.stat().st_size / (1 << 20)
    report["file"] = {"rows": rows, "mib": file_mib, "float32_mib": rows * 784 * 4 / (1 << 20),
                      "generate_s": time.perf_counter() - t0}
    print(f"generated {big.name}: {rows:,} images, {file_mib:,.0f} MiB (as float32: "
          f"{report['file']['float32_mib']:,.0f} MiB); limit of the training process: {args.budget_mb} MiB",
          flush=True)
    split = ["--val-fraction", "0.001", "--test-fraction", "0.001"]
    import shutil

    for name, extra in (("in-memory", []), ("streamed", ["--stream"])):
        out = work / f"large-{name}"
        shutil.rmtree(out, ignore_errors=True)
        r = run_train(["--data", str(big), *extra, *split, *MODEL, "--epochs", "1"], out, budget_bytes=budget,
                      threads=args.threads)
        n_train = rows - 2 * round(0.001 * rows)
        r["examples_per_s"] = n_train / r["metrics"][0]["seconds"] if r["metrics"] else None
        r.pop("metrics")
        report[f"large_{name}"] = r
        status = "finished" if r["returncode"] == 0 else f"failed (exit {r['returncode']}): {r['stderr_tail']}"
        rss = f"{r['peak_rss_mib']:,.0f} MiB"
        print(f"{name:>9} under the limit: {status}; wall {r['wall_s']:.0f} s, peak RSS {rss}"
              + (f", {r['examples_per_s']:,.0f} ex/s" if r["examples_per_s"] else ""), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        big.unlink()

    small = work / "mnist-train.npy"
    mnist = load_dataset("mnist", data_dir=REPO.parent / "shared" / "data" / "mnist")
    np.save(small, np.concatenate([mnist.train, mnist.val])[:, 0])
    n_small = len(np.load(small, mmap_mode="r"))
    n_train = n_small - round(0.1 * n_small) - round(0.1 * (n_small - round(0.1 * n_small)))
    rates: dict[str, list[float]] = {"in-memory": [], "streamed": []}
    for _ in range(args.rounds):
        for name, extra in (("in-memory", []), ("streamed", ["--stream"])):
            out = work / f"small-{name}"
            shutil.rmtree(out, ignore_errors=True)
            r = run_train(["--data", str(small), *extra, *MODEL, "--epochs", str(args.epochs)], out,
                          budget_bytes=None, threads=args.threads)
            if r["returncode"] != 0:
                raise SystemExit(f"{name} MNIST run failed: {r['stderr_tail']}")
            rates[name].append(examples_per_second(r, n_train))
            shutil.rmtree(out, ignore_errors=True)
    small.unlink()
    med = {k: statistics.median(v) for k, v in rates.items()}
    report["throughput"] = {"rates": rates, "median": med, "n_train": n_train, "epochs": args.epochs,
                            "rounds": args.rounds, "streamed_over_in_memory": med["streamed"] / med["in-memory"]}
    print(f"MNIST ({n_train:,} training images), median of {args.rounds}: in memory {med['in-memory']:,.0f} ex/s, "
          f"streamed {med['streamed']:,.0f} ex/s ({med['streamed'] / med['in-memory']:.2f}×)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
