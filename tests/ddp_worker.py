"""A data-parallel training job for tests/test_distributed.py, started by ``torchrun``.

    torchrun --standalone --nproc-per-node R tests/ddp_worker.py OUT_DIR N_TRAIN BATCH EPOCHS VARIANCE [resume]

Each rank trains the float64 digits model of ``train_setup`` on the first N_TRAIN training
examples with ``vaekit.training.loop.fit`` (run directory OUT_DIR/run, written by rank 0) and writes
OUT_DIR/rank{r}.json with the local batch sizes it was handed and the epoch metrics; with
``resume`` it continues the run in OUT_DIR/run from its checkpoint. Rank 0 also writes the final
parameters to OUT_DIR/params.safetensors. Run with R = 1 (or in-process, via ``train_setup``)
it is the single-process reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import vaekit.training as train_mod
import vaekit.training.step as step_mod
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.models.vae import VAEConfig, build_vae
from vaekit.training import distributed


def train_setup(n_train: int, batch: int, epochs: int, variance: str):
    """(model, train_x, val_x, config, preprocessing), identical on every rank."""
    dataset = load_dataset("digits")
    pp = fit_preprocessing(dataset, "gaussian")
    train_x = pp.prepare(dataset.train[:n_train]).double()
    val_x = pp.prepare(dataset.val).double()
    torch.manual_seed(3)
    model = build_vae(VAEConfig(data_shape=(1, 8, 8), latent_dim=4, hidden=(32,),
                                decoder_variance=float(variance) if variance[0].isdigit() else variance)).double()
    config = train_mod.TrainConfig(epochs=epochs, batch_size=batch, lr=3e-3, seed=11, device="cpu")
    return model, train_x, val_x, config, pp


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    n_train, batch, epochs, variance = int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    rank = distributed.rank()
    sizes: list[int] = []
    real = step_mod.batch_loss

    def recording(model, objective, x, beta, eps, scale, *args, **kwargs):
        sizes.append(int(x.shape[0]) if scale != 0 else 0)        # scale 0: a weight-0 stand-in
        return real(model, objective, x, beta, eps, scale, *args, **kwargs)

    step_mod.batch_loss = recording
    model, train_x, val_x, config, pp = train_setup(n_train, batch, epochs, variance)
    result = train_mod.fit(model, train_x, val_x, config, preprocessing=pp, run_dir=out / "run",
                           resume=argv[5:6] == ["resume"])
    (out / f"rank{rank}.json").write_text(json.dumps({"sizes": sizes, "world": distributed.world_size(),
                                                      "val_elbo": [m.val_elbo for m in result.history],
                                                      "history": [m.to_dict() for m in result.history]}))
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "params.safetensors"))
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
