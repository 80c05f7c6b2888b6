"""Training speed against pythae 0.1.2, side by side in one run, and the matmul roofline.

    bash benchmarks/setup_peers.sh                 # once: .bench-venv with torch 2.13.0 (CPU), pythae 0.1.2, vaekit
    .bench-venv/bin/python benchmarks/speed_peers.py --threads 2          # the run in BENCHMARKS.md
    .bench-venv/bin/python benchmarks/speed_peers.py [--epochs E] [--rounds R] [--subset N] [--losses mse,bce]

Same data, same network, same batch size, same optimiser, one process, CPU:

* data: real MNIST from ``../shared/data/mnist`` (relative to the repository root), loaded with
  ``vaekit.data.load_dataset``; the 54,000-image training split (``--subset`` to shrink), grey
  levels scaled to [0, 1] by ``fit_preprocessing(...).prepare``. Validation: 2 images for both
  libraries (each validates every epoch; 2 images make it negligible for both).
* network: pythae's default MLP for ``VAEConfig(input_dim=(1, 28, 28), latent_dim=z)``
  (``pythae.models.nn.default_architectures``): ``Encoder_VAE_MLP`` = Linear(784, 512) + ReLU, then
  two heads Linear(512, z) (mean, log-variance); ``Decoder_AE_MLP`` = Linear(z, 512) + ReLU,
  Linear(512, 784) + Sigmoid. z = ``--latent-dim`` (default 16).
* loss ("likelihood"), ``--losses``:
  - ``mse`` -- pythae's DEFAULT (``reconstruction_loss="mse"``): 0.5·Σ_d (x_d - sigmoid(f(z))_d)²
    + KL, i.e. a Gaussian decoder with mean sigmoid(f(z)) and fixed variance c = 1 (up to a
    constant). vaekit: the same networks built from vaekit parts -- ``GaussianEncoder(MLP(784,
    (512,), relu), 512, z)`` and ``GaussianDecoder(Sequential(MLP(z, (512,), 784, relu), Sigmoid()),
    FixedVariance(1.0))`` -- with ``fit_preprocessing(..., "gaussian")``, which dequantises every
    batch uniformly (y = (k + u)/256: an extra ``torch.rand`` per step that pythae does not do);
  - ``bce`` -- ``reconstruction_loss="bce"``: binary cross-entropy of sigmoid(f(z)) against x in
    [0, 1] (pythae is given the grey levels, as its MNIST examples do). vaekit:
    ``build_vae(VAEConfig((1,28,28), z, hidden=(512,), activation="relu", likelihood="bernoulli"))``,
    the same 784-512-z / z-512-784 MLP with the sigmoid folded into a Bernoulli-logits
    likelihood (mathematically the same loss), with ``fit_preprocessing(..., "bernoulli")``, which
    binarises every batch dynamically (an extra ``torch.bernoulli`` per step).
* optimiser: Adam, lr 1e-3, batch 100 (pythae: ``BaseTrainerConfig(per_device_train_batch_size=100,
  learning_rate=1e-3)``, Adam being its default; vaekit: ``TrainConfig(batch_size=100, lr=1e-3)``).

What is timed (wall clock, ``time.perf_counter``), per measurement, on a freshly built model:

* pythae -- its own training loop, ``pythae.trainers.BaseTrainer(model, train, eval,
  training_config).train()`` with 1 + ``--epochs`` epochs; its data are ``pythae.data.datasets.
  BaseDataset`` objects (what ``TrainingPipeline`` builds from arrays) served by its DataLoader
  (shuffle, batch 100). A ``TrainingCallback`` records the time from ``on_epoch_begin`` to
  ``on_epoch_end`` of every epoch: the training steps (data loading, forward, loss, backward,
  Adam, the ``loss.item()`` pythae does every step, its tqdm progress bar -- built in, as every
  user has it), the evaluation pass over the 2 validation images and the ``deepcopy`` of the best
  model. Not timed: the trainer's one-off setup (dataloaders, sanity-check forward pass, output
  folder), the per-epoch console log after ``on_epoch_end`` and the final ``save_model``. The
  first epoch is a warm-up and is not counted. No checkpoints (``steps_saving=None``, its
  default); the output folder is a temporary directory; pythae's console logger is set to WARNING
  (its one-off messages only). The pure training-loop time (``on_train_step_begin`` to
  ``on_eval_step_begin``) is recorded in the JSON too.
* vaekit -- ``vaekit.training.loop.fit`` (no run directory: nothing written), 1 + ``--epochs`` epochs;
  the time is ``EpochMetrics.seconds`` of the timed epochs (steps and validation of the 2 images;
  the first epoch is a warm-up), as in ``benchmarks/speed_training.py``.

Examples/s = training examples per timed epoch × timed epochs / timed seconds. The two are run
alternately, pythae then vaekit, for every loss, ``--rounds`` times; medians are reported.

Roofline: the FLOP/s ``torch.mm`` reaches here on exactly the GEMMs of one training step of this
network at batch 100 (forward X·Wᵀ, input gradient dY·W and weight gradient dYᵀ·X of each of the
5 linear layers), measured in the same run (``benchmarks/bench_common.py``). FLOPs/example =
3 × 2 × W, W = 784·512 + 2·512·z + z·512 + 512·784 weights (biases, activations, loss, Adam
ignored; the first layer's input gradient, never computed, is counted). Ratios: vaekit / pythae
and achieved FLOP/s / roofline.

Results: a table on stdout and raw JSON in ``benchmarks/results/speed_peers.json``.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_common import gemm_roofline, machine_info, training_gemms, write_results

from vaekit import VAE, VAEConfig, build_vae
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.models.decoders import GaussianDecoder
from vaekit.models.encoders import GaussianEncoder
from vaekit.models.networks import MLP
from vaekit.models.variance import FixedVariance
from vaekit.training import TrainConfig, fit

BATCH = 100
HIDDEN = 512
LR = 1e-3
SHAPE = (1, 28, 28)
D = 784
LOSSES = ("mse", "bce")


def layers(z: int) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of pythae's default MLP VAE."""
    return [(D, HIDDEN), (HIDDEN, z), (HIDDEN, z), (z, HIDDEN), (HIDDEN, D)]


def vaekit_model(loss: str, z: int) -> nn.Module:
    """vaekit's model with exactly pythae's default networks (see the module docstring)."""
    if loss == "bce":
        return build_vae(VAEConfig(SHAPE, latent_dim=z, hidden=(HIDDEN,), activation="relu",
                                   likelihood="bernoulli"))
    encoder = GaussianEncoder(MLP(SHAPE, (HIDDEN,), None, "relu"), HIDDEN, z, SHAPE)
    f = nn.Sequential(MLP(z, (HIDDEN,), D, "relu"), nn.Sigmoid())
    decoder = GaussianDecoder(f, z, SHAPE, FixedVariance(1.0))
    return VAE(encoder, decoder, z, SHAPE)


def vaekit_speed(loss: str, z: int, x: torch.Tensor, x_val: torch.Tensor, prep: dict, epochs: int,
                 seed: int) -> dict:
    """1 warm-up epoch + ``epochs`` timed epochs of vaekit.training.loop.fit on x."""
    torch.manual_seed(seed)
    model = vaekit_model(loss, z)
    config = TrainConfig(epochs=1 + epochs, batch_size=BATCH, lr=LR, seed=seed, device="cpu")
    t0 = time.perf_counter()
    result = fit(model, x, x_val, config, preprocessing=prep[loss])
    wall = time.perf_counter() - t0
    timed = result.history[1:]
    seconds = sum(m.seconds for m in timed)
    return {"examples_per_second": x.shape[0] * len(timed) / seconds, "timed_epochs": len(timed),
            "timed_seconds": seconds, "epoch_seconds": [m.seconds for m in result.history],
            "fit_wall_seconds": wall, "final_train_elbo": timed[-1].train_elbo}


def pythae_speed(loss: str, z: int, x: torch.Tensor, x_val: torch.Tensor, epochs: int, seed: int) -> dict:
    """1 warm-up epoch + ``epochs`` timed epochs of pythae's BaseTrainer on x."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig as PythaeVAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class EpochTimer(TrainingCallback):
        def __init__(self) -> None:
            self.epoch, self.train = [], []
            self._t0 = self._t1 = 0.0

        def on_epoch_begin(self, training_config, **kwargs):
            self._t0 = time.perf_counter()

        def on_train_step_begin(self, training_config, **kwargs):
            self._t1 = time.perf_counter()

        def on_eval_step_begin(self, training_config, **kwargs):
            self.train.append(time.perf_counter() - self._t1)

        def on_epoch_end(self, training_config, **kwargs):
            self.epoch.append(time.perf_counter() - self._t0)

    torch.manual_seed(seed)
    model = PythaeVAE(PythaeVAEConfig(input_dim=SHAPE, latent_dim=z, reconstruction_loss=loss))
    timer = EpochTimer()
    with tempfile.TemporaryDirectory(prefix="pythae-bench-") as tmp:
        config = BaseTrainerConfig(output_dir=tmp, per_device_train_batch_size=BATCH,
                                   per_device_eval_batch_size=BATCH, learning_rate=LR, num_epochs=1 + epochs,
                                   seed=seed)
        t0 = time.perf_counter()
        trainer = BaseTrainer(model, BaseDataset(x, torch.zeros(x.shape[0])),
                              BaseDataset(x_val, torch.zeros(x_val.shape[0])), training_config=config,
                              callbacks=[timer])
        trainer.train()
        wall = time.perf_counter() - t0
    seconds = sum(timer.epoch[1:])
    return {"examples_per_second": x.shape[0] * epochs / seconds, "timed_epochs": epochs,
            "timed_seconds": seconds, "epoch_seconds": timer.epoch,
            "train_loop_seconds": timer.train,
            "train_loop_examples_per_second": x.shape[0] * epochs / sum(timer.train[1:]),
            "trainer_wall_seconds": wall}


def check_pythae_network(z: int) -> dict:
    """What pythae's default networks actually are (printed and stored, so a reader can check)."""
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig as PythaeVAEConfig

    cfg = PythaeVAEConfig(input_dim=SHAPE, latent_dim=z)
    m = PythaeVAE(cfg)
    lin = [(int(mod.in_features), int(mod.out_features)) for mod in m.modules() if isinstance(mod, nn.Linear)]
    if sorted(lin) != sorted(layers(z)):
        raise SystemExit(f"pythae's default MLP is not 784-512-{z}: linear layers {lin}")
    def leaves(module: nn.Module) -> list[str]:
        return [type(mod).__name__ for mod in module.modules() if not list(mod.children())]

    return {"default_reconstruction_loss": cfg.reconstruction_loss,
            "encoder_modules": leaves(m.encoder), "decoder_modules": leaves(m.decoder),
            "encoder": repr(m.encoder.layers) + f" + heads embedding {tuple(m.encoder.embedding.weight.shape[::-1])}, "
                       f"log_var {tuple(m.encoder.log_var.weight.shape[::-1])}",
            "decoder": repr(m.decoder.layers), "linear_layers_in_out": lin}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--latent-dim", type=int, default=16, help="z (default 16)")
    p.add_argument("--losses", default="mse,bce",
                   help="comma-separated: mse (pythae's default, Gaussian c=1) and/or bce (Bernoulli)")
    p.add_argument("--roofline-seconds", type=float, default=0.5,
                   help="seconds of each of the 5 timed roofline repeats (default 0.5)")
    p.add_argument("--subset", type=int, default=None, help="training images (default: all 54,000)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "speed_peers.json"))
    args = p.parse_args(argv)
    losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    if not losses or any(s not in LOSSES for s in losses):
        p.error(f"--losses: choose from {LOSSES}, got {args.losses!r}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        import pythae
        import pythae.trainers  # its module sets its logger's level on import: import it first
    except ImportError:
        print("pythae is not installed in this environment: run `bash benchmarks/setup_peers.sh` and use "
              ".bench-venv/bin/python", file=sys.stderr)
        return 2
    logging.getLogger("pythae.trainers.base_trainer.base_trainer").setLevel(logging.WARNING)
    z = args.latent_dim

    t_load = time.perf_counter()
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    prep = {"mse": fit_preprocessing(dataset, "gaussian"), "bce": fit_preprocessing(dataset, "bernoulli")}
    x = prep["bce"].prepare(dataset.train)                # grey levels / 255, (N, 1, 28, 28) float32
    if args.subset is not None:
        x = x[:args.subset].contiguous()
    x_val = prep["bce"].prepare(dataset.val[:2])
    n = x.shape[0]
    pythae_version = getattr(pythae, "__version__", None)
    if pythae_version is None:
        from importlib.metadata import version
        pythae_version = version("pythae")
    net = check_pythae_network(z)
    print(f"MNIST from {args.data_dir} ({time.perf_counter() - t_load:.1f} s): {n} training images, "
          f"{math.ceil(n / BATCH)} steps/epoch; threads {torch.get_num_threads()}; torch {torch.__version__}; "
          f"pythae {pythae_version}", flush=True)
    print(f"pythae default network: linear layers (in, out) {net['linear_layers_in_out']}; encoder "
          f"{net['encoder_modules']}; decoder {net['decoder_modules']}; "
          f"default reconstruction_loss={net['default_reconstruction_loss']!r}", flush=True)

    lin = layers(z)
    weights = sum(i * o for i, o in lin)
    flops_per_example = 3 * 2 * weights
    roof = gemm_roofline(training_gemms(lin, BATCH), min_seconds=args.roofline_seconds)
    roof_f = roof["flops_per_second"]
    print(f"roofline (torch.mm, training-step GEMMs at batch {BATCH}): {roof_f / 1e9:.2f} GFLOP/s", flush=True)

    rounds = []
    for r in range(args.rounds):
        row = {"round": r + 1}
        for loss in losses:
            a = pythae_speed(loss, z, x, x_val, args.epochs, seed=r)
            print(f"round {r + 1} {loss}: pythae {a['examples_per_second']:8.0f} ex/s "
                  f"({a['timed_seconds']:.1f} s timed)", end="", flush=True)
            b = vaekit_speed(loss, z, x, x_val, prep, args.epochs, seed=r)
            print(f" | vaekit {b['examples_per_second']:8.0f} ex/s ({b['timed_seconds']:.1f} s timed)", flush=True)
            row[loss] = {"pythae": a, "vaekit": b}
        rounds.append(row)

    print()
    print(f"median of {args.rounds} rounds, batch {BATCH}, 784-{HIDDEN}-{z} ReLU, {args.epochs} timed epochs of "
          f"{n} images, {torch.get_num_threads()} threads; FLOPs/example = 3*2*{weights} = "
          f"{flops_per_example / 1e6:.2f} M; roofline {roof_f / 1e9:.1f} GFLOP/s = "
          f"{roof_f / flops_per_example:.0f} ex/s")
    print(f"{'loss':5s} {'pythae ex/s':>12s} {'vaekit ex/s':>12s} {'vaekit/pythae':>14s} {'pythae/roof':>12s} "
          f"{'vaekit/roof':>12s} {'roof/pythae':>12s}")
    median = {}
    for loss in losses:
        mp = statistics.median(r[loss]["pythae"]["examples_per_second"] for r in rounds)
        mv = statistics.median(r[loss]["vaekit"]["examples_per_second"] for r in rounds)
        median[loss] = {"pythae_examples_per_second": mp, "vaekit_examples_per_second": mv,
                        "vaekit_over_pythae": mv / mp,
                        "pythae_over_roofline": mp * flops_per_example / roof_f,
                        "vaekit_over_roofline": mv * flops_per_example / roof_f,
                        "roofline_over_pythae": roof_f / (mp * flops_per_example),
                        "pythae_train_loop_examples_per_second": statistics.median(
                            r[loss]["pythae"]["train_loop_examples_per_second"] for r in rounds)}
        m = median[loss]
        print(f"{loss:5s} {mp:12.0f} {mv:12.0f} {m['vaekit_over_pythae']:14.2f} "
              f"{m['pythae_over_roofline']:12.3f} {m['vaekit_over_roofline']:12.3f} {m['roofline_over_pythae']:12.2f}")
    print("roof/pythae: the largest vaekit/pythae any loop could reach here (one running at the matmul roofline)")

    out = {
        **machine_info(),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
        "pythae_version": pythae_version,
        "pythae_default_network": net,
        "epochs_timed": args.epochs, "rounds_count": args.rounds, "batch_size": BATCH, "latent_dim": z,
        "learning_rate": LR, "losses": losses,
        "data": {"dir": args.data_dir, "train_examples": n, "val_examples": int(x_val.shape[0])},
        "method": {
            "pythae": "BaseTrainer(...).train(), 1 warm-up + `epochs` timed epochs; time per epoch from "
                      "on_epoch_begin to on_epoch_end (steps incl. DataLoader/BaseDataset, loss.item(), tqdm bar; "
                      "eval of 2 images; deepcopy of the best model); setup, console log and final save excluded",
            "vaekit": "vaekit.training.loop.fit without run directory, 1 warm-up + `epochs` timed epochs; "
                      "sum of EpochMetrics.seconds (steps + validation of 2 images); dynamic binarisation (bce) or "
                      "dequantisation (mse) of every batch",
            "mse": "pythae reconstruction_loss='mse' (its default) = Gaussian N(sigmoid(f(z)), 1); vaekit "
                   "GaussianDecoder(Sequential(MLP, Sigmoid), FixedVariance(1.0))",
            "bce": "pythae reconstruction_loss='bce' on grey levels; vaekit BernoulliDecoder (logits) on dynamically "
                   "binarised batches",
            "roofline": "torch.mm over forward, input-gradient and weight-gradient GEMMs of the 5 linear layers at "
                        "batch 100, best of repeats",
            "flops_per_example": "3 * 2 * linear weights",
        },
        "linear_weights": weights, "flops_per_example": flops_per_example,
        "roofline": roof,
        "rounds": rounds,
        "median": median,
    }
    print(f"raw results: {write_results(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
