"""The README's timings, measured: the quick-start training command, the Python example, and (with --tests)
the default test suite, each timed as a whole command on this machine, with the CPU named.

    python scripts/readme_timings.py [--threads 1] [--tests] [--out benchmarks/results/readme_timings.json]

The quick start is `vaekit train --out DIR` (digits, the defaults: 50 epochs, then the evaluation, the figures
and report.html); the Python example is the README's first ```python block under "## Python example", run as
a script in a temporary folder; the tests are `python -m pytest -q` from the repository root. Each runs with
OMP_NUM_THREADS = --threads. On a machine that other jobs share the seconds vary from run to run: the JSON
records the load average before and after each.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

from bench_common import machine_info, write_results  # noqa: E402

from docs_blocks import blocks  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name as lscpu gives it (else the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown")


def python_example() -> str:
    """The README's first Python block after the heading "## Python example"."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Python example")
    line = text[:start].count("\n") + 1
    return next(b.text for b in blocks(REPO / "README.md") if b.line > line and b.language == "python")


def timed(command: list[str], cwd: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    tail = (done.stdout.strip().splitlines() or [""])[-1]
    return {"command": " ".join(command), "seconds": round(seconds, 1), "exit_code": done.returncode,
            "last_line": tail, "load_before": load, "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tests", action="store_true", help="also time the default test suite")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "readme_timings.json"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vaekit = str(Path(sys.executable).parent / "vaekit")
        results["quick_start"] = timed([vaekit, "train", "--out", str(work / "digits")], work, args.threads)
        (work / "example.py").write_text(python_example(), encoding="utf-8")
        results["python_example"] = timed([sys.executable, "example.py"], work, args.threads)
    if args.tests:
        results["tests"] = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], REPO, args.threads)
    for name, r in results.items():
        print(f"{name:15s} {r['seconds']:8.1f} s  exit {r['exit_code']}  load {r['load_before']:.1f} -> "
              f"{r['load_after']:.1f}  {r['last_line']}")
    doc = {**machine_info(), "cpu": cpu_name(), "command": "python scripts/readme_timings.py " + " ".join(sys.argv[1:]),
           "results": results}
    print("wrote", write_results(args.out, doc))


if __name__ == "__main__":
    main()
