"""Train one model of each family on the embedded digits data and print the README's "Model families" section.

Each family is one ``vaekit train`` command (the same data, split, seed, epochs and test importance samples for
all); the script runs it in a subprocess, then ``vaekit sample`` on the run, and prints, per family, the command,
the figures the run wrote and its test numbers (from the run's ``evaluation-test.json`` and ``run.json``). The
raw numbers go to ``benchmarks/results/model_families.json``.

    python scripts/model_families.py                    # all families, 50 epochs (about 5 minutes on 2 cores)
    python scripts/model_families.py --epochs 2 --only conv,vamp --out /tmp/fam   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (name, title, the options of ``vaekit train`` beyond the common ones, what the family is)
FAMILIES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("mlp", "The seed's model (baseline)", (),
     "MLP 200-200, K = 16, Gaussian decoder with the optimal c, N(0, I) prior, diagonal Gaussian posterior."),
    ("conv", "Convolutional networks", ("--arch", "conv"),
     "Stride-2 convolutions down, transposed convolutions up; the decoder's output has the input's (C, H, W) "
     "shape by construction, for any image size (`--arch-args '{\"width\": 32, \"stages\": 2}'`)."),
    ("resnet", "Residual networks", ("--arch", "resnet"),
     "The conv networks with residual blocks at every stage (`blocks`, default 1), no batch norm."),
    ("mixture", "Mixture-of-Gaussians prior", ("--prior", "mixture"),
     "p(z) = Σ_k π_k N(μ_k, diag σ_k²), learned (`--prior-args '{\"components\": 10}'`); KL by Monte Carlo."),
    ("vamp", "VampPrior", ("--prior", "vamp"),
     "p(z) = (1/K) Σ_k q(z | u_k), learned pseudo-inputs u_k (Tomczak & Welling 2018; `pseudo_inputs`, "
     "default 500)."),
    ("iaf", "Inverse autoregressive flow posterior", ("--posterior", "iaf"),
     "q(z|x): a diagonal Gaussian followed by T IAF steps (Kingma et al. 2016; zuko's masked autoregressive "
     "transforms; `--posterior-args '{\"steps\": 2}'`); z and log q(z) in one pass."),
    ("layers2", "Two stochastic layers", ("--layers", "2"),
     "q(z1|x) q(z2|z1), p(z2) p(z1|z2) p(x|z1) (Burda et al. 2016); the upper layer has half the widths and "
     "half the latents by default (`--layer-args`)."),
    ("conditional", "Conditional VAE", ("--conditional",),
     "q(z|x, y) and p(x|z, y) on the data's labels (Sohn et al. 2015); `vaekit sample RUN --label 3`."),
    ("logistic", "Discretized logistic likelihood", ("--likelihood", "discretized-logistic"),
     "Exact probabilities of the pixel levels (PixelCNN++ / IAF); bits/dim needs no dequantisation."),
    ("logistic-mixture", "Discretized logistic mixture", ("--likelihood", "discretized-logistic-mixture"),
     "A mixture of 10 discretized logistics per pixel (`--likelihood-args '{\"components\": 10}'`)."),
)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {shlex.join(cmd)}\n{done.stderr[-2000:]}")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--importance-samples", type=int, default=1000)
    parser.add_argument("--only", default=None, help="comma-separated family names")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "families")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "model_families.json")
    parser.add_argument("--render", action="store_true", help="print the section from --results; train nothing")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.results.read_text())
        print(render(saved["rows"], saved.get("epochs", 50), saved.get("importance_samples", 1000)))
        return 0
    chosen = [f for f in FAMILIES if args.only is None or f[0] in args.only.split(",")]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    common = ["--data", "digits", "--epochs", str(args.epochs), "--seed", "0",
              "--importance-samples", str(args.importance_samples), "--no-progress"]
    rows = []
    for name, title, options, _ in chosen:
        run = args.out / name
        if run.exists():
            shutil.rmtree(run)                      # this script's own run from a previous call
        cmd = [sys.executable, "-m", "vaekit", "train", *common, *options, "--out", str(run)]
        print(f"[{name}] {shlex.join(cmd[3:])}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        _run(cmd, env)
        seconds = time.perf_counter() - start
        sample = [sys.executable, "-m", "vaekit", "sample", str(run), "--n", "16", "--out", str(run / "samples.npy"),
                  "--force", *(["--label", "3"] if "--conditional" in options else [])]
        _run(sample, env)
        result = json.loads((run / "evaluation-test.json").read_text())
        figures = sorted(p.name for p in (run / "figures").glob("*.png"))
        rows.append({"family": name, "title": title, "options": list(options), "seconds": round(seconds, 1),
                     "figures": figures, **{k: result.get(k) for k in
                                            ("n", "elbo", "log_likelihood", "log_likelihood_se", "posterior_gap",
                                             "bits_per_dim", "active_units", "latent_dim", "importance_samples")}})
    print(render(rows, args.epochs, args.importance_samples))
    if args.only is None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({
            "command": "python scripts/model_families.py" + (f" --epochs {args.epochs}" if args.epochs != 50 else ""),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"), "epochs": args.epochs, "importance_samples": args.importance_samples,
            "rows": rows}, indent=2) + "\n")
    return 0


def render(rows: list[dict], epochs: int, k: int) -> str:
    """The README section: one command per family, its figures, and a table of the test numbers."""
    by_name = {f[0]: f for f in FAMILIES}
    lines = [f"Each family is one option of `vaekit train`; every run below is `vaekit train --data digits "
             f"--epochs {epochs}` plus the option shown, and writes `figures/` ({', '.join(rows[0]['figures'])}"
             f") and `report.html`. Printed by `python scripts/model_families.py`; test split (180 digits), "
             f"log p(x) with K = {k} importance samples, nats per example.", ""]
    for row in rows:
        _, title, options, what = by_name[row["family"]]
        extra = sorted(set(row["figures"]) - set(rows[0]["figures"]))
        command = shlex.join(["vaekit", "train", "--data", "digits", *options])
        lines += [f"- **{title}** — `{command}`. {what}"
                  + (f" Extra figures: {', '.join(extra)}." if extra else "")]
    lines += ["", "| family | option | test ELBO | log p(x) | posterior gap | bits/dim | active units | train + test "
              "(s) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        option = shlex.join(row["options"]) or "(defaults)"
        lines.append(f"| {row['family']} | `{option}` | {_fmt(row['elbo'])} | {_fmt(row['log_likelihood'])} ± "
                     f"{_fmt(row['log_likelihood_se'])} | {_fmt(row['posterior_gap'])} | "
                     f"{_fmt(row['bits_per_dim'], 3)} | {row['active_units']} of {row['latent_dim']} | "
                     f"{row['seconds']:.0f} |")
    lines += ["", "The discretized likelihoods give the probability of the 17 levels of these digits, the other rows a "
              "density on dequantised values, so compare them by bits/dim (the same 17 levels for all). The seconds "
              "are whole commands on a 2-core machine that other jobs shared during some of the runs: read them as "
              "indicative only (the throughput benchmark in BENCHMARKS.md measures speed)."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
