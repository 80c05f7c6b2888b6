"""Evaluation speed: the K = 5000 importance-sampled log-likelihood of the MNIST test set, against
the matmul roofline and against pythae's own estimate (``VAE.get_nll``) on an equal model.

    .bench-venv/bin/python benchmarks/speed_evaluation.py --threads 2     # the run in BENCHMARKS.md (with pythae)
    python benchmarks/speed_evaluation.py [--model DIR] [--images N] [--samples K] [--threads T]  # no pythae

The model is that of benchmark 1 (784-200-200-50, tanh, Bernoulli decoder, diagonal Gaussian
encoder): ``--model DIR`` loads a trained one with ``vaekit.store.model_files.load_model`` (a run or model
directory); otherwise a freshly built, untrained one (``build_vae``, seed 0) is used -- the time
does not depend on the weights. The output says which.

Data: the first ``--images`` (default all 10,000) images of the real MNIST test split from
``../shared/data/mnist`` (relative to the repository root), prepared as ``vaekit evaluate`` does:
``fit_preprocessing(dataset, likelihood)`` then ``vaekit.store.runs.eval_tensor(..., seed=0)`` (binarised
once with a fixed seed for a Bernoulli decoder).

Timed (``time.perf_counter``), after a small warm-up call:

* vaekit -- ``vaekit.inference.evaluate.evaluate(model, x, importance_samples=K, batch_size=256)``, i.e.
  exactly what ``vaekit evaluate RUN --importance-samples K`` runs after loading (batch 256 is its
  default): per batch of 256 images the ELBO (one draw), then
  ``vaekit.inference.estimators.estimate_log_likelihood`` with its default chunk size
  (``default_chunk_size``), then the active units over all images (the ELBO and the active units
  add one decoder pass and two encoder passes per image to the estimator's K decoder passes).
* roofline -- the FLOP/s ``torch.mm`` reaches here, in the same run, on the forward GEMMs of the
  decoder's linear layers at the row count the estimator uses (chunk × 256 rows: chunk draws for
  each of 256 images), and of the encoder's at 256 rows (``benchmarks/bench_common.py``). The
  ideal time = decoder FLOPs / decoder roofline + encoder FLOPs / encoder roofline, with
  decoder FLOPs = N (K + 1) × 2 W_dec (K importance draws + the ELBO's one) and encoder FLOPs =
  3 N × 2 W_enc (encoded once by the estimator, once by the ELBO, once for the active units),
  W = the weights of the linear layers (biases, activations, the log-densities and the
  log-sum-exps are not counted: they are the overhead the ratio measured / ideal shows).
* chunk size -- ``estimate_log_likelihood`` on the first 256 images with min(K, 1000) draws, with
  the chunk of the CPU default budget (2^21 decoder outputs per chunk: 10 draws for 256 MNIST
  images) and with that of the large budget (2^24: 83 draws, vaekit's default before and still on
  GPUs), alternating for ``--rounds`` rounds; medians.
* pythae (only where pythae is installed, e.g. ``.bench-venv``) -- ``pythae.models.VAE.get_nll(x,
  n_samples=K, batch_size=100)`` (its default batch size) on an equal pythae model: a pythae
  ``VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=50, reconstruction_loss="bce"))`` with custom
  ``BaseEncoder``/``BaseDecoder`` made of copies of the vaekit model's own layers (Linear + Tanh,
  the two heads with vaekit's soft clamp on the log-variance, decoder output through a Sigmoid),
  so both libraries compute the same model (their estimates are printed side by side as a check).
  pythae processes one image at a time (K/100 batches of 100 copies of it, each encoded again),
  so it runs on a subset: the first M images, M chosen
  from a 2-image calibration so that one pythae measurement takes about ``--pythae-seconds``
  (default 20 s; at most ``--images``). vaekit runs ``evaluate`` on the same M images; the two
  alternate for ``--rounds`` rounds (default 3) and the medians give the like-for-like ratio. The
  pythae time for all N images is extrapolated per image (pythae's cost is linear in the images).

Results: a table on stdout and raw JSON in ``benchmarks/results/speed_evaluation.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_common import (
    display_path,
    forward_gemms,
    gemm_flops,
    gemm_roofline,
    machine_info,
)

from vaekit import VAEConfig, build_vae
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.inference.estimators import (
    CPU_CHUNK_BUDGET,
    DEVICE_CHUNK_BUDGET,
    default_chunk_size,
    estimate_log_likelihood,
)
from vaekit.inference.evaluate import evaluate
from vaekit.models.networks import MLP
from vaekit.prob.bounds import ENCODER_LOG_VAR_MAX, ENCODER_LOG_VAR_MIN, soft_clamp
from vaekit.store.model_files import load_model
from vaekit.store.runs import eval_tensor

BATCH = 256            # vaekit evaluate's default --batch-size
PYTHAE_BATCH = 100     # pythae get_nll's default batch_size
BENCHMARK_1 = VAEConfig((1, 28, 28), latent_dim=50, hidden=(200, 200), activation="tanh", likelihood="bernoulli")


def linear_layers(module: nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every nn.Linear in ``module``, in order."""
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def time_vaekit(model, x: torch.Tensor, samples: int, seed: int) -> dict:
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    result = evaluate(model, x, importance_samples=samples, batch_size=BATCH)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "images": int(x.shape[0]), "ms_per_image": 1e3 * seconds / x.shape[0],
            "log_likelihood": result.log_likelihood, "elbo": result.elbo}


def chunk_budgets(model, x: torch.Tensor, samples: int, rounds: int) -> dict:
    """``estimate_log_likelihood`` on one batch with the chunk of the CPU budget (the default here) and
    with that of the large budget (the default before, and on other devices), alternating; medians."""
    xb = x[:BATCH]
    d = math.prod(xb.shape[1:])
    budgets = {"cpu_budget": CPU_CHUNK_BUDGET, "large_budget": DEVICE_CHUNK_BUDGET}
    chunks = {name: min(samples, default_chunk_size(xb.shape[0], d, budget)) for name, budget in budgets.items()}
    times: dict[str, list[float]] = {name: [] for name in budgets}
    estimate_log_likelihood(model, xb[:2], n_samples=4)                                    # warm-up
    for r in range(rounds):
        for name in budgets:
            torch.manual_seed(r)
            t0 = time.perf_counter()
            estimate_log_likelihood(model, xb, n_samples=samples, chunk_size=chunks[name])
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {"images": int(xb.shape[0]), "samples": samples, "budgets": budgets, "chunk_sizes": chunks,
            "seconds": times, "median_seconds": med,
            "large_over_cpu_budget_time": med["large_budget"] / med["cpu_budget"]}


def pythae_twin(model):
    """A pythae VAE computing the same model as the vaekit ``model`` (copies of its layers), or None
    with the reason when the model is not an MLP/diagonal/Bernoulli one."""
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig as PythaeVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    enc = model.encoder
    if not (model.config is not None and model.config.likelihood == "bernoulli"
            and isinstance(getattr(enc, "trunk", None), MLP)
            and isinstance(model.decoder.f, MLP) and getattr(enc, "covariance", None) == "diagonal"):
        return None, "pythae twin needs an MLP model with a diagonal encoder and a Bernoulli decoder"

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            self.layers = copy.deepcopy(enc.trunk.layers)
            self.embedding = copy.deepcopy(enc.mean)
            self.log_var = copy.deepcopy(enc.log_var)

        def forward(self, x):
            h = self.layers(x.reshape(x.shape[0], -1))
            log_var = soft_clamp(self.log_var(h), ENCODER_LOG_VAR_MIN, ENCODER_LOG_VAR_MAX)
            return ModelOutput(embedding=self.embedding(h), log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            self.layers = nn.Sequential(copy.deepcopy(model.decoder.f.layers), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.layers(z).reshape(z.shape[0], *model.data_shape))

    config = PythaeVAEConfig(input_dim=tuple(model.data_shape), latent_dim=model.latent_dim, reconstruction_loss="bce")
    twin = PythaeVAE(config, encoder=Encoder(), decoder=Decoder())
    return twin.eval(), None


def time_pythae(twin, x: torch.Tensor, samples: int, seed: int) -> dict:
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        nll = twin.get_nll(x, n_samples=samples, batch_size=PYTHAE_BATCH)
    seconds = time.perf_counter() - t0
    # pythae's get_nll returns mean_i log p̂(x_i) (despite its name: the log-likelihood, not its negative)
    return {"seconds": seconds, "images": int(x.shape[0]), "ms_per_image": 1e3 * seconds / x.shape[0],
            "get_nll_value": float(nll)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a vaekit run or model directory (default: a fresh model)")
    p.add_argument("--images", type=int, default=10000, help="test images (default 10000)")
    p.add_argument("--samples", type=int, default=5000, help="importance samples K (default 5000)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds of the pythae comparison (default 3)")
    p.add_argument("--pythae-seconds", type=float, default=20.0,
                   help="target seconds of one pythae measurement, which sets its subset (default 20)")
    p.add_argument("--no-pythae", action="store_true", help="skip the pythae comparison")
    p.add_argument("--roofline-seconds", type=float, default=0.5,
                   help="seconds of each of the 5 timed roofline repeats (default 0.5)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "speed_evaluation.json"))
    args = p.parse_args(argv)
    if args.images < 2 or args.samples < 1 or args.rounds < 1:
        p.error("--images must be >= 2, --samples and --rounds >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.model is not None:
        model = load_model(args.model)
        model_desc = f"trained model loaded from {args.model}"
    else:
        torch.manual_seed(0)
        model = build_vae(BENCHMARK_1)
        model_desc = "freshly built untrained model (build_vae, seed 0); the time does not depend on the weights"
    model.eval()
    config = model.config
    likelihood = "bernoulli" if model.config is not None and model.config.likelihood == "bernoulli" else "gaussian"
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    prep = fit_preprocessing(dataset, likelihood)
    x = eval_tensor(prep, dataset.test[:args.images], seed=0)
    n, d = x.shape[0], math.prod(x.shape[1:])
    dtype = next(model.parameters()).dtype
    x = x.to(dtype)
    arch = (f"{d}-" + "-".join(str(h) for h in config.arch_args["hidden"])
            + f"-{config.latent_dim} {config.arch_args['activation']}, "
            f"{config.likelihood}, {config.posterior} posterior") if config is not None else type(model).__name__
    print(f"model: {arch}; {model_desc}", flush=True)
    print(f"data: {n} MNIST test images from {args.data_dir}; K = {args.samples}; threads {torch.get_num_threads()}; "
          f"torch {torch.__version__}", flush=True)

    # --- the roofline, at the shapes the estimator uses
    chunk = min(default_chunk_size(min(BATCH, n), d), args.samples)     # draws per chunk, as the estimator
    dec_layers, enc_layers = linear_layers(model.decoder), linear_layers(model.encoder)
    dec_gemms, enc_gemms = forward_gemms(dec_layers, chunk * min(BATCH, n)), forward_gemms(enc_layers, min(BATCH, n))
    roof_dec = gemm_roofline(dec_gemms, min_seconds=args.roofline_seconds)
    roof_enc = gemm_roofline(enc_gemms, min_seconds=args.roofline_seconds)
    dec_fpe = gemm_flops(forward_gemms(dec_layers, 1))       # 2 W_dec: one decoder pass for one draw
    enc_fpe = gemm_flops(forward_gemms(enc_layers, 1))
    dec_flops = n * (args.samples + 1) * dec_fpe
    enc_flops = 3 * n * enc_fpe
    ideal = dec_flops / roof_dec["flops_per_second"] + enc_flops / roof_enc["flops_per_second"]
    print(f"roofline (torch.mm): decoder GEMMs at {chunk} draws x {min(BATCH, n)} images = {chunk * min(BATCH, n)} "
          f"rows: {roof_dec['flops_per_second'] / 1e9:.1f} GFLOP/s; encoder GEMMs at {min(BATCH, n)} rows: "
          f"{roof_enc['flops_per_second'] / 1e9:.1f} GFLOP/s", flush=True)

    # --- vaekit on all images
    evaluate(model, x[:2], importance_samples=min(args.samples, 16), batch_size=BATCH)   # warm-up
    full = time_vaekit(model, x, args.samples, seed=0)
    achieved = (dec_flops + enc_flops) / full["seconds"]
    print(f"vaekit evaluate: {full['seconds']:.2f} s for {n} images ({full['ms_per_image']:.3f} ms/image, "
          f"{n / full['seconds']:.1f} images/s); log p(x) {full['log_likelihood']:.3f} nats", flush=True)
    print(f"ideal (GEMM FLOPs / roofline): {ideal:.2f} s; measured / ideal = {full['seconds'] / ideal:.3f}; "
          f"achieved {achieved / 1e9:.1f} GFLOP/s", flush=True)

    # --- the estimator's chunk size: the CPU budget against the large one
    cb_samples = min(args.samples, 1000)
    cb = chunk_budgets(model, x, cb_samples, args.rounds)
    print(f"chunk size, estimate_log_likelihood on {cb['images']} images x {cb_samples} draws (medians of "
          f"{args.rounds}): {cb['chunk_sizes']['cpu_budget']} draws/chunk (budget 2^21, the CPU default) "
          f"{cb['median_seconds']['cpu_budget']:.3f} s; {cb['chunk_sizes']['large_budget']} draws/chunk (budget "
          f"2^24) {cb['median_seconds']['large_budget']:.3f} s: x{cb['large_over_cpu_budget_time']:.2f}", flush=True)

    # --- pythae on a subset, alternating with vaekit on the same subset
    peer: dict = {"status": "skipped"}
    twin = None
    if args.no_pythae:
        peer["reason"] = "--no-pythae"
    else:
        try:
            import pythae  # noqa: F401
        except ImportError:
            peer["reason"] = "pythae not installed (run benchmarks/setup_peers.sh and use .bench-venv/bin/python)"
        else:
            twin, reason = pythae_twin(model)
            if twin is None:
                peer["reason"] = reason
    if twin is None:
        print(f"pythae comparison skipped: {peer['reason']}", flush=True)
    else:
        from importlib.metadata import version
        calib_n = min(2, n)
        time_pythae(twin, x[:1], min(args.samples, PYTHAE_BATCH), seed=0)             # warm-up
        calib = time_pythae(twin, x[:calib_n], args.samples, seed=0)
        per_image = calib["seconds"] / calib_n
        m = max(calib_n, min(n, int(args.pythae_seconds / per_image)))
        print(f"pythae {version('pythae')} get_nll: {1e3 * per_image:.1f} ms/image in a {calib_n}-image calibration; "
              f"subset of the first {m} images, {args.rounds} alternating rounds", flush=True)
        xs = x[:m]
        rounds = []
        for r in range(args.rounds):
            a = time_pythae(twin, xs, args.samples, seed=r)
            b = time_vaekit(model, xs, args.samples, seed=r)
            print(f"round {r + 1}: pythae {a['seconds']:.2f} s ({a['ms_per_image']:.2f} ms/image, log p(x) "
                  f"{a['get_nll_value']:.3f}) | vaekit {b['seconds']:.3f} s ({b['ms_per_image']:.3f} ms/image, "
                  f"log p(x) {b['log_likelihood']:.3f})", flush=True)
            rounds.append({"round": r + 1, "pythae": a, "vaekit": b})
        mp = statistics.median(r["pythae"]["ms_per_image"] for r in rounds)
        mv = statistics.median(r["vaekit"]["ms_per_image"] for r in rounds)
        peer = {"status": "ran", "pythae_version": version("pythae"), "subset_images": m,
                "calibration": calib, "rounds": rounds,
                "median_ms_per_image": {"pythae": mp, "vaekit": mv},
                "pythae_over_vaekit_time": mp / mv,
                "pythae_extrapolated_seconds_all_images": mp * n / 1e3,
                "note": "pythae's time for all images is extrapolated from the subset, per image"}

    print()
    print(f"{'':38s} {'seconds':>10s} {'ms/image':>10s} {'x ideal':>9s}")
    print(f"{'ideal (GEMMs at torch.mm roofline)':38s} {ideal:10.2f} {1e3 * ideal / n:10.3f} {1.0:9.2f}")
    print(f"{'vaekit evaluate':38s} {full['seconds']:10.2f} {full['ms_per_image']:10.3f} "
          f"{full['seconds'] / ideal:9.2f}")
    if peer["status"] == "ran":
        ext = peer["pythae_extrapolated_seconds_all_images"]
        print(f"{'pythae get_nll (extrapolated)':38s} {ext:10.1f} {peer['median_ms_per_image']['pythae']:10.2f} "
              f"{ext / ideal:9.1f}")
        print(f"like for like on the first {peer['subset_images']} images (medians of {args.rounds} rounds): "
              f"pythae {peer['median_ms_per_image']['pythae']:.2f} ms/image, vaekit "
              f"{peer['median_ms_per_image']['vaekit']:.3f} ms/image: vaekit is "
              f"{peer['pythae_over_vaekit_time']:.1f}x faster")

    out = {
        **machine_info(),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
        "model": {"source": args.model or "fresh", "description": model_desc, "architecture": arch,
                  "decoder_linear_layers": dec_layers, "encoder_linear_layers": enc_layers},
        "images": n, "samples": args.samples, "batch_size": BATCH, "chunk_size": chunk,
        "data": {"dir": args.data_dir, "split": "test", "preparation": "fit_preprocessing + eval_tensor(seed=0)"},
        "method": {
            "vaekit": "vaekit.inference.evaluate.evaluate(model, x, importance_samples=K, batch_size=256), "
                      "as `vaekit evaluate`; wall time after a warm-up call",
            "roofline": "torch.mm on the decoder's forward GEMMs at chunk*256 rows and the encoder's at 256 rows, "
                        "best of repeats, same run",
            "ideal": "N(K+1)*2*W_dec / decoder roofline + 3N*2*W_enc / encoder roofline",
            "pythae": "VAE.get_nll(x, n_samples=K, batch_size=100) on an equal model (copies of vaekit's layers), "
                      "on a subset; alternating with vaekit evaluate on the same subset; medians",
        },
        "flops": {"decoder_per_draw": dec_fpe, "encoder_per_image": enc_fpe, "decoder_total": dec_flops,
                  "encoder_total": enc_flops},
        "roofline": {"decoder": roof_dec, "encoder": roof_enc},
        "vaekit": full,
        "chunk_budgets": cb,
        "ideal_seconds": ideal,
        "measured_over_ideal": full["seconds"] / ideal,
        "achieved_flops_per_second": achieved,
        "pythae": peer,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, allow_nan=False) + "\n")
    print(f"raw results: {display_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
