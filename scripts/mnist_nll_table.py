"""The time-to-quality table of BENCHMARKS.md (issue 12, part A), read from the committed run directories.

    python scripts/mnist_nll_table.py [--root benchmarks/results/mnist-nll]

Each row is a vaekit run directory under ROOT (config.json, model.safetensors, metrics.jsonl, run.json,
evaluation-test.json) trained by the command in its run.json. For each it prints the test NLL
(−log p̂(x) with the K of its evaluation, ± the standard error over the 10,000 test images), the
training wall time (the sum of the epochs' seconds, validation included), the whole command's time
(training, evaluation and figures, from run.json) and the published anchor it is compared with: a test NLL
on the same protocol (dynamically binarised MNIST, test set binarised once, importance-sampled log p(x)),
named with its source and whether it was read in the paper or quoted by a third party. A statically binarised
or ELBO-only figure is never an anchor here. It also draws ROOT/curves.png: −(validation ELBO) against training
minutes for every row, the final test NLL as a point at the end, and each anchor as a dashed line. Re-evaluate
a row with

    vaekit evaluate ROOT/ROW --data mnist --data-dir ../shared/data/mnist --importance-samples 5000 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: row directory -> (what it is, anchor NLL on dynamic MNIST, where the anchor was read, goal NLL, goal minutes
#: of training). Anchors and goals of issue 27; the VAE row keeps issue 12's goal (it has no row in issue 27).
ROWS = {
    "vae": ("VAE, one stochastic layer, 784-200-200-50", 86.76,
            "Burda et al. 2016, Table 1 (paper)", 86.76, 60),
    "iwae5": ("IWAE k = 5, one layer", 85.54, "Burda et al. 2016, Table 1 (paper)", 85.54, 90),
    "vamp": ("VampPrior, one layer", 82.43,
             "Exemplar VAE paper's re-run (Norouzi et al. 2020), as quoted; Tomczak & Welling's own dynamic row "
             "not read", 82.43, 90),
    "best": ("best vaekit model, any fully connected family", 81.24,
             "hierarchical VampPrior, two layers (Tomczak & Welling 2018), as quoted by a third party", 81.0, 150),
}


def read_row(run: Path) -> dict:
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evaluation = json.loads((run / "evaluation-test.json").read_text())
    info = json.loads((run / "run.json").read_text())
    minutes, curve = 0.0, []
    for m in metrics:
        minutes += m["seconds"] / 60
        curve.append((minutes, -m["val_elbo"]))
    return {"epochs": len(metrics), "train_minutes": minutes,
            "command_minutes": info["sessions"][-1]["duration_s"] / 60,
            "nll": -evaluation["log_likelihood"], "se": evaluation["log_likelihood_se"],
            "k": evaluation["importance_samples"], "n": evaluation["n"], "curve": curve,
            "command": " ".join(info["sessions"][0]["command"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(REPO / "benchmarks" / "results" / "mnist-nll"))
    args = p.parse_args(argv)
    root = Path(args.root)
    rows = {name: read_row(root / name) for name in ROWS if (root / name / "evaluation-test.json").is_file()}
    if not rows:
        p.error(f"--root {root}: no finished row (a ROW/evaluation-test.json) under it")
    print("| row | anchor, dynamic MNIST (source) | NLL here (K, images) | training | whole command | epochs | goal |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        what, anchor, source, goal, minutes = ROWS[name]
        met = r["nll"] <= goal and r["train_minutes"] <= minutes
        print(f"| {what} | {anchor:.2f} ({source}) | {r['nll']:.2f} ± {r['se']:.2f} (K = {r['k']}, {r['n']}) | "
              f"{r['train_minutes']:.1f} min | {r['command_minutes']:.1f} min | {r['epochs']} | "
              f"≤ {goal:.2f} in {minutes} min: {'met' if met else 'not met'} |")
    for name, r in rows.items():
        print(f"\n{name}: {r['command']}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, r) in enumerate(rows.items()):
        color = f"C{i}"
        xs, ys = zip(*r["curve"], strict=True)
        ax.plot(xs, ys, color=color, lw=1, label=f"{name}: −validation ELBO")
        ax.plot([xs[-1]], [r["nll"]], "o", color=color, label=f"{name}: test NLL {r['nll']:.2f} (K = {r['k']})")
        ax.axhline(ROWS[name][1], color=color, ls="--", lw=0.8, label=f"{name}: anchor {ROWS[name][1]:.2f}")
    ax.set_xlabel("training wall time (minutes, 2 threads)")
    ax.set_ylabel("nats per image")
    low = min(min(r["nll"], ROWS[n][1]) for n, r in rows.items())
    ax.set_ylim(low - 2, low + 20)
    ax.legend(fontsize=7)
    ax.set_title("MNIST (dynamically binarised): quality against training time")
    fig.tight_layout()
    out = root / "curves.png"
    fig.savefig(out, dpi=110)
    print(f"\ncurves: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
