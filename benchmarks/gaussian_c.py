"""The seed's Gaussian decoder p(x|z) = N(f(z), cI) and its constant c, on continuous MNIST.

    taskset -c 0 python benchmarks/gaussian_c.py --threads 1

(the recorded run; every option has a default, see ``--help``). One command trains the same
VAE seven times, changing only how the decoder variance c is chosen:

* fixed c in {1, 0.1, 0.01, 0.001} (``VAEConfig.decoder_variance`` = the number c itself),
* ``learned``          -- one shared c, a parameter (stored as log c, initial c = 1),
* ``learned-per-dim``  -- one c per pixel (784 parameters, initial c = 1),
* ``optimal``          -- c profiled out: each training batch uses c* = its mean squared error
  (σ-VAE); a running average of c* is used for evaluation and sampling.

Data: real MNIST from ``../shared/data/mnist`` (``vaekit.data.load_dataset``: 54,000 train /
6,000 validation / 10,000 test). ``fit_preprocessing(dataset, 'gaussian')`` scales grey levels
k in {0..255} to k/255 and dequantises every training batch uniformly, y = (k + u)/256 with
u ~ U[0, 1); the test images are dequantised once with a fixed seed (0), and the first
``--test-n`` of them are evaluated.

Model and schedule (identical for all seven settings, same seed, hence identical initial
networks): MLP encoder 784-512-256 -> (g, log h) of latent dimension 20, decoder f 20-256-512-784,
ReLU, diagonal Gaussian q_x(z); Adam lr 1e-3, batch 128, constant schedule, plain ELBO (β = 1, no
warm-up, no free bits), ``--epochs`` epochs on the training split by ``vaekit.training.loop.fit``; the
weights of the last epoch are evaluated.

Evaluation (``vaekit.inference.evaluate.evaluate``, nats per example, means over the test images): ELBO
(closed-form KL, one draw for the reconstruction term), log p(x) importance-sampled with K =
``--importance-samples`` draws from q_x(z) (± its standard error, which is dominated by the spread
of log p(x) across images), the posterior gap KL(q_x(z) || p(z|x)) = log p(x) - ELBO estimated from
the same K draws, active units (Cov_x E_q[z_u] > 0.01), mean KL(q_x(z) || p(z)), the reconstruction
term E_q[log p(x|z)], and bits per dimension of the discrete images,
bits/dim = -(log p(y) - 784 log 256) / (784 log 2) (8 bits/dim = the uniform density on [0, 1)).

Output: a table on stdout; raw JSON (settings, per-epoch training history and c, evaluations,
machine, torch version, date, command) in ``benchmarks/results/gaussian_c.json``; one PNG per
setting of prior samples shown as decoder means f(z), z ~ N(0, I) (the same z for every setting),
and one combined PNG (samples and test reconstructions f(g(x)) of every setting side by side) in
``benchmarks/results/gaussian_c/``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import write_results
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vaekit import VAEConfig, build_vae
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.inference.evaluate import evaluate
from vaekit.models.variance import FixedVariance, LearnedVariance, OptimalVariance
from vaekit.training import TrainConfig, fit
from vaekit.viz.figures import to_display
from vaekit.viz.plots import image_grid

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: (name shown in tables, VAEConfig.decoder_variance)
SETTINGS: tuple[tuple[str, float | str], ...] = (
    ("fixed c=1", 1.0),
    ("fixed c=0.1", 0.1),
    ("fixed c=0.01", 0.01),
    ("fixed c=0.001", 0.001),
    ("learned shared c", "learned"),
    ("learned per-pixel c", "learned-per-dim"),
    ("optimal c (c*=MSE)", "optimal"),
)


def _slug(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in name.split(" (")[0])
    return "_".join(part for part in keep.split("_") if part)


def c_summary(model) -> dict:
    """The decoder variance c at this moment: its value for a scalar, mean/median/min/max per pixel."""
    variance = model.decoder.variance
    c = variance().detach().double().flatten()
    kind = {FixedVariance: "fixed", LearnedVariance: "learned", OptimalVariance: "optimal"}[type(variance)]
    out = {"kind": kind, "size": int(c.numel()), "mean": float(c.mean()), "median": float(c.median()),
           "min": float(c.min()), "max": float(c.max()), "mean_log_c": float(c.log().mean())}
    return out


def _c_text(s: dict) -> str:
    if s["size"] == 1:
        return f"{s['mean']:.3g}"
    return f"{s['mean']:.3g}/{s['median']:.3g}"


def sample_panel(model, n: int, seed: int) -> np.ndarray:
    """Decoder means f(z) of n prior draws z ~ N(0, I) (the same z for every model of one latent size)."""
    model.eval()
    z_gen = torch.Generator().manual_seed(seed)
    return to_display(model.sample(n, generator=z_gen, mean=True), model.data_shape)   # (n, 1, 28, 28)


def mosaic(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] -> one grey (rows*(H+pad)+pad, cols*(W+pad)+pad) array, 0.5 between tiles."""
    n, _, h, w = images.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 0.5, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[i, 0]
    return out


def combined_figure(panels: list[dict], originals: np.ndarray, cols: int, path: Path) -> Path:
    """Row 1: prior samples of every setting; row 2: reconstructions of the same test images (and the
    originals in an extra first column)."""
    n_set = len(panels)
    fig = Figure(figsize=(2.0 * (n_set + 1), 5.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n_set + 1)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].text(0.5, 0.5, "prior samples\nf(z), z ~ N(0, I)\n(same z in\nevery column)", ha="center",
                    va="center", fontsize=9, transform=axes[0, 0].transAxes)
    axes[1, 0].imshow(mosaic(originals, cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1, 0].set_title("test images x", fontsize=9)
    axes[1, 0].set_xlabel("reconstructions\nf(g(x)) →", fontsize=9)
    for j, p in enumerate(panels, start=1):
        axes[0, j].imshow(mosaic(p["samples"], cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, j].set_title(f"{p['name']}\nc = {p['c']}", fontsize=9)
        axes[1, j].imshow(mosaic(p["reconstructions"], cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, j].set_xlabel(f"{p['bpd']:.2f} bits/dim\nKL {p['kl']:.1f}, AU {p['au']}", fontsize=9)
    fig.suptitle("MNIST, decoder p(x|z) = N(f(z), cI): the constant c sets the balance between reconstruction "
                 "and KL", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=25, help="training epochs per setting (default 25)")
    p.add_argument("--train-n", type=int, default=None, help="use only the first N training examples (default all)")
    p.add_argument("--val-n", type=int, default=2000, help="validation examples evaluated each epoch (default 2000)")
    p.add_argument("--test-n", type=int, default=1000, help="test images evaluated (default 1000)")
    p.add_argument("--importance-samples", type=int, default=1000, help="K for log p(x) (default 1000)")
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", default="512,256", help="encoder widths; the decoder reverses them")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=64, help="prior samples per grid (default 64, an 8x8 grid)")
    p.add_argument("--settings", default=None,
                   help="comma-separated subset of the setting numbers 1-7 (default all)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "gaussian_c.json"))
    p.add_argument("--fig-dir", default=str(HERE / "results" / "gaussian_c"))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    chosen = SETTINGS if args.settings is None else tuple(SETTINGS[int(i) - 1] for i in args.settings.split(","))
    fig_dir = Path(args.fig_dir)
    t_start = time.perf_counter()

    dataset = load_dataset("mnist", data_dir=args.data_dir)
    prep = fit_preprocessing(dataset, "gaussian")            # x/255, then y = (k + u)/256 per batch
    train_raw = dataset.train if args.train_n is None else dataset.train[:args.train_n]
    x_train = prep.prepare(train_raw)                         # (N, 1, 28, 28) float32, k/255
    x_val = prep.prepare(dataset.val[:args.val_n])
    x_test = prep.augment(prep.prepare(dataset.test), torch.Generator().manual_seed(0))[:args.test_n]
    print(f"MNIST from {args.data_dir}: train {x_train.shape[0]}, val {x_val.shape[0]}, test evaluated "
          f"{x_test.shape[0]} of {len(dataset.test)}; levels {prep.levels}; MLP 784-{args.hidden}-{args.latent_dim}, "
          f"ReLU; Adam {args.lr:g}, batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}; "
          f"K = {args.importance_samples} importance samples; threads {torch.get_num_threads()}; "
          f"torch {torch.__version__}", flush=True)

    n_recon = min(16, x_test.shape[0])
    cols = 8 if args.samples >= 16 else max(1, int(math.sqrt(args.samples)))
    results, panels = [], []
    for name, variance in chosen:
        torch.manual_seed(args.seed)
        config = VAEConfig((1, 28, 28), latent_dim=args.latent_dim, hidden=hidden, activation="relu",
                           likelihood="gaussian", decoder_variance=variance)
        model = build_vae(config)
        c_history: list[dict] = []

        def record_c(m, model=model, c_history=c_history) -> None:
            c_history.append({"epoch": m.epoch, **c_summary(model)})

        train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                   device="cpu")
        t0 = time.perf_counter()
        fit_result = fit(model, x_train, x_val, train_config, preprocessing=prep, callbacks=[record_c],
                         restore_best=False)                # the published protocol: the last epoch's weights
        train_s = time.perf_counter() - t0
        model.eval()
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        ev = evaluate(model, x_test, importance_samples=args.importance_samples, levels=prep.levels)
        eval_s = time.perf_counter() - t0
        c_end = c_summary(model)
        last = fit_result.history[-1]
        print(f"{name:22s} trained {train_s:6.1f} s (last epoch: train ELBO {last.train_elbo:9.2f}, val ELBO "
              f"{last.val_elbo:9.2f}, skipped steps {sum(m.skipped_steps for m in fit_result.history)}), "
              f"evaluated {eval_s:5.1f} s: c {_c_text(c_end)}, ELBO {ev.elbo:.2f}, log p(x) {ev.log_likelihood:.2f}, "
              f"{ev.bits_per_dim:.3f} bits/dim", flush=True)

        samples = sample_panel(model, args.samples, seed=args.seed)
        png = image_grid(samples, fig_dir / f"samples_{_slug(name)}.png", nrow=cols,
                         title=f"{name}: f(z), z ~ N(0, I)")
        with torch.no_grad():
            recon = to_display(model.reconstruct(x_test[:n_recon]), model.data_shape)
        panels.append({"name": name, "c": _c_text(c_end), "samples": samples[:16],
                       "reconstructions": recon, "bpd": ev.bits_per_dim, "kl": ev.kl, "au": ev.active_units})
        results.append({
            "setting": name, "decoder_variance": variance, "c_end": c_end, "c_history": c_history,
            "evaluation": ev.to_dict(), "train_seconds": train_s, "eval_seconds": eval_s,
            "skipped_steps": sum(m.skipped_steps for m in fit_result.history),
            "history": [m.to_dict() for m in fit_result.history],
            "samples_png": png.relative_to(REPO).as_posix() if png.is_relative_to(REPO) else str(png),
            "samples_mean_pixel": float(samples.mean()),
        })

    originals = to_display(x_test[:n_recon], (1, 28, 28))
    combined = combined_figure(panels, originals, 4, fig_dir / "all_settings.png")

    header = (f"{'setting':22s} {'c (end)':>15s} {'ELBO':>9s} {'log p(x) ± se':>18s} {'bits/dim':>9s} "
              f"{'gap':>7s} {'AU':>5s} {'KL':>7s} {'recon':>9s}")
    print()
    print(f"test: first {x_test.shape[0]} MNIST test images (dequantised, seed 0); nats per image; "
          f"log p(x) with K = {args.importance_samples}; c (end): value, or mean/median for per-pixel c; "
          f"AU = active units of {args.latent_dim}")
    print(header)
    for r in results:
        e = r["evaluation"]
        ll = f"{e['log_likelihood']:.2f} ± {e['log_likelihood_se']:.2f}"
        print(f"{r['setting']:22s} {_c_text(r['c_end']):>15s} {e['elbo']:9.2f} {ll:>18s} {e['bits_per_dim']:9.3f} "
              f"{e['posterior_gap']:7.2f} {e['active_units']:>5d} {e['kl']:7.2f} {e['reconstruction']:9.2f}")
    total_s = time.perf_counter() - t_start
    print(f"total {total_s:.0f} s (train {sum(r['train_seconds'] for r in results):.0f} s, evaluate "
          f"{sum(r['eval_seconds'] for r in results):.0f} s)")

    out = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": platform.python_version(),
                    "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
        "data": {"dir": args.data_dir, "train_examples": int(x_train.shape[0]), "val_examples": int(x_val.shape[0]),
                 "test_examples": int(x_test.shape[0]), "test_total": len(dataset.test), "levels": prep.levels,
                 "preprocessing": prep.to_dict(), "test_dequantisation_seed": 0},
        "model": {"data_shape": [1, 28, 28], "latent_dim": args.latent_dim, "hidden": list(hidden),
                  "activation": "relu", "posterior": "diagonal", "initial_variance_learned": 1.0},
        "train": TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed).to_dict(),
        "importance_samples": args.importance_samples,
        "bits_per_dim": "-(log p(y) - D log L) / (D log 2), D = 784, L = 256",
        "figures": {"per_setting": [r["samples_png"] for r in results],
                    "combined": combined.relative_to(REPO).as_posix() if combined.is_relative_to(REPO)
                    else str(combined)},
        "total_seconds": total_s,
        "median_eval_seconds": statistics.median(r["eval_seconds"] for r in results),
        "results": results,
    }
    print(f"raw results: {write_results(args.out, out)}; figures: {fig_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
