#!/usr/bin/env python
"""Crash-resume check for ``vaekit train``: SIGKILL a run at random moments, resume it, compare bit for bit.

Trains once without interruption (the reference, WORKDIR/reference), then trains the same run in
WORKDIR/killed, killing the process with SIGKILL ``--kills`` times at seeded-random moments —
sometimes a random time after the start (often during an epoch's steps, or before the first
checkpoint), sometimes a few milliseconds after an epoch's line is printed (during that epoch's
checkpoint writes) — and restarting it each time with ``--resume`` (or afresh when the kill came
before config.json was written). After every kill the checkpoint left behind, if any, must load
with :func:`vaekit.store.checkpoint.load_training_state` and hold a prefix of the reference history.
Finally the run is resumed to completion and model.safetensors, checkpoints/last.safetensors (every
tensor: model, optimizer, RNG) and metrics.jsonl (minus wall-clock seconds) are compared with the
reference. Prints one line per kill and ``bitwise identical: yes`` (exit 0) or ``no`` (exit 1).

Usage (from the repository root, with vaekit installed)::

    python scripts/crash_resume.py --kills 10 --epochs 20
    python scripts/crash_resume.py --kills 5 --data fashion-mnist --epochs 3 --workdir /tmp/cr -- --hidden 64

Arguments after ``--`` (or any option this script does not know) go to ``vaekit train``; the
defaults add ``--hidden 16 --latent-dim 2 --batch-size 64 --importance-samples 2`` unless given.
The kill moments depend on ``--kill-seed`` (default: ``--seed``), but where a kill lands also
depends on the machine's speed. CPU only (``--device cpu``): bitwise equality holds on one device.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TRAIN = {"--hidden": "16", "--latent-dim": "2", "--batch-size": "64", "--importance-samples": "2"}


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                epilog="other arguments are passed to 'vaekit train'")
    p.add_argument("--kills", type=int, default=10, help="number of SIGKILLs (default: 10)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    p.add_argument("--data", default="digits", help="--data for vaekit train (default: digits)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument("--kill-seed", type=int, default=None, help="seed of the kill moments (default: --seed)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the two runs (default: a temporary folder, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    for flag, value in DEFAULT_TRAIN.items():
        if flag not in extra:
            extra += [flag, value]
    if args.kills < 0 or args.epochs < 1:
        p.error("--kills must be >= 0 and --epochs >= 1")
    return args, extra


class Runner:
    def __init__(self, args: argparse.Namespace, train_args: list[str]):
        self.command = [sys.executable, "-m", "vaekit", "train", "--data", args.data, "--epochs", str(args.epochs),
                        "--seed", str(args.seed), "--device", "cpu", "--no-progress", "--no-figures", *train_args]

    def start(self, run: Path) -> subprocess.Popen:
        resume = ["--resume"] if (run / "config.json").exists() else []
        return subprocess.Popen([*self.command, "--out", str(run), *resume], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"vaekit train failed (exit {proc.returncode}):\n{out}\n{err}")


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def _epoch_of(line: str) -> int | None:
    if line.startswith("epoch "):
        return int(line.split()[1].split("/")[0])
    return None


def reference_run(runner: Runner, run: Path) -> tuple[float, float]:
    """Train without interruption; return (seconds to the first epoch line, seconds per epoch)."""
    t0 = time.perf_counter()
    proc = runner.start(run)
    stamps = []
    for line in proc.stdout:
        if _epoch_of(line) is not None:
            stamps.append(time.perf_counter() - t0)
    _finish(proc)
    per_epoch = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1) if stamps else 0.0
    return (stamps[0] if stamps else time.perf_counter() - t0), per_epoch


def checkpoint_state(run: Path, reference: list[dict]) -> str:
    """Describe the checkpoint a kill left and check it: it loads, and its history is a prefix of the reference."""
    import torch

    from vaekit.models.vae import build_vae
    from vaekit.store.checkpoint import checkpoint_paths, load_training_state
    from vaekit.store.model_files import read_config

    if not (run / "config.json").exists():
        return "no config.json yet (restart afresh)"
    folder = run / "checkpoints"
    st_path, json_path = checkpoint_paths(folder / "last")
    strays = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    odd = [n for n in strays if n not in ("last.json", "last.safetensors", "last.safetensors.next")
           and not (n.startswith(".") and n.endswith(".tmp"))]
    if odd:
        raise AssertionError(f"unexpected files in {folder}: {odd}")
    if not json_path.exists():
        if st_path.exists():
            raise AssertionError(f"{st_path} exists without the JSON that commits it")
        return "config.json, no checkpoint yet"
    config, _ = read_config(run)
    model = build_vae(config)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    state = load_training_state(folder / "last", model, optimizer, scheduler)   # raises if torn
    history = [{k: v for k, v in m.items() if k != "seconds"} for m in state["extra"]["history"]]
    if history != reference[:state["epoch"]]:
        raise AssertionError(f"checkpoint at epoch {state['epoch']} does not match the reference history")
    committed = json.loads(json_path.read_text())["sha256"]
    on_disk = hashlib.sha256(st_path.read_bytes()).hexdigest() if st_path.exists() else None
    pending = " (committed, its rename from .next pending)" if on_disk != committed else \
        (" (an uncommitted .next ignored)" if (folder / "last.safetensors.next").exists() else "")
    temps = sum(n.endswith(".tmp") for n in strays)
    return f"checkpoint epoch {state['epoch']} loads{pending}" + (f", {temps} stray .tmp ignored" if temps else "")


def _bytes(t) -> bytes:
    import torch

    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _checkpoint_epoch(run: Path) -> int:
    path = run / "checkpoints" / "last.json"
    return json.loads(path.read_text())["epoch"] if path.exists() else 0


def compare(a: Path, b: Path) -> list[str]:
    """Differences between the reference and the killed run (empty: bitwise identical)."""
    from safetensors.torch import load_file

    problems = []
    for name in ("model.safetensors", "checkpoints/last.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        if sorted(ta) != sorted(tb):
            problems.append(f"{name}: different tensor names")
            continue
        for key in ta:
            x, y = ta[key], tb[key]
            if x.dtype != y.dtype or x.shape != y.shape or _bytes(x) != _bytes(y):
                problems.append(f"{name}: {key} differs")
    if _rows(a / "metrics.jsonl") != _rows(b / "metrics.jsonl"):
        problems.append("metrics.jsonl differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    args, train_args = _parse(argv)
    rng = random.Random(args.seed if args.kill_seed is None else args.kill_seed)
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="vaekit-crash-")) if temporary else args.workdir
    ref, run = workdir / "reference", workdir / "killed"
    for d in (ref, run):
        if d.exists():
            shutil.rmtree(d)
    runner = Runner(args, train_args)
    try:
        print(f"reference: {' '.join(runner.command[1:])} --out {ref}", flush=True)
        t0 = time.perf_counter()
        startup, per_epoch = reference_run(runner, ref)
        print(f"reference done in {time.perf_counter() - t0:.1f} s (first epoch line after {startup:.2f} s, "
              f"{per_epoch * 1000:.0f} ms per epoch)", flush=True)
        reference = _rows(ref / "metrics.jsonl")

        restarts = 0
        for i in range(1, args.kills + 1):
            proc = runner.start(run)
            restarts += 1
            at = _checkpoint_epoch(run)
            # spread the kills over the epochs still to come
            target = min(args.epochs, at + max(1, round(rng.uniform(0.5, 1.5) * (args.epochs - at) /
                                                        (args.kills - i + 2))))
            if rng.random() < 0.5:
                # during the steps of epoch `target`: a random fraction of an epoch after the line of
                # target - 1 (or, for the first epoch of this process, a random time after its start)
                last_seen, gap = None, per_epoch
                if target - 1 > at:
                    for line in proc.stdout:
                        epoch, now = _epoch_of(line), time.perf_counter()
                        if epoch is None:
                            continue
                        if last_seen is not None:
                            gap = now - last_seen      # this process's own pace
                        last_seen = now
                        if epoch >= target - 1:
                            break
                    delay = rng.uniform(0.0, 0.9 * gap)
                    where = f"{delay * 1000:.1f} ms into epoch {target}"
                else:
                    delay = rng.uniform(0.0, startup)
                    where = f"{delay:.3f} s after start"
                time.sleep(delay)
                mode = "step"
            else:
                # during the checkpoint writes of epoch `target`: just after its line is printed
                jitter = rng.uniform(0.0, 0.005)
                for line in proc.stdout:
                    epoch = _epoch_of(line)
                    if epoch is not None and epoch >= target:
                        break
                time.sleep(jitter)
                where = f"{jitter * 1000:.1f} ms after the line of epoch {target} (its checkpoint writes)"
                mode = "write"
            if proc.poll() is not None:
                _finish(proc)
                print(f"kill {i:>2}: process finished before the kill ({mode}: {where})", flush=True)
                if (run / "evaluation-test.json").exists() or (run / "evaluation-val.json").exists():
                    print("          run complete; no more kills", flush=True)
                    break
                continue
            proc.kill()
            proc.communicate()
            print(f"kill {i:>2}: SIGKILL {where}: {checkpoint_state(run, reference)}", flush=True)

        while not ((run / "evaluation-test.json").exists() or (run / "evaluation-val.json").exists()):
            _finish(runner.start(run))
            restarts += 1
        print(f"completed after {restarts} starts", flush=True)
        problems = compare(ref, run)
        for p in problems:
            print("  " + p)
        print(f"bitwise identical: {'no' if problems else 'yes'}")
        return 1 if problems else 0
    finally:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif temporary:
            print(f"workdir kept: {workdir}")


if __name__ == "__main__":
    sys.exit(main())
