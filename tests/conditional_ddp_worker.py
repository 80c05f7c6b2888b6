"""A data-parallel job with a conditional VAE, for tests/test_conditional.py, started by ``torchrun``.

    torchrun --standalone --nproc-per-node R tests/conditional_ddp_worker.py OUT_DIR N_TRAIN BATCH EPOCHS

Each rank trains the float64 conditional digits model of :func:`setup` (the first N_TRAIN training examples
with their labels) with ``vaekit.training.fit``; rank 0 writes OUT_DIR/rank0.json (the validation ELBO per
epoch) and the final parameters to OUT_DIR/params.safetensors. In-process, :func:`setup` is the reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from vaekit.data import fit_preprocessing, load_dataset
from vaekit.models.vae import VAEConfig, build_vae
from vaekit.training import TrainConfig, distributed, fit


def setup(n_train: int, batch: int, epochs: int):
    """(model, train_x, val_x, train_y, val_y, config, preprocessing), identical on every rank."""
    dataset = load_dataset("digits")
    pp = fit_preprocessing(dataset, "gaussian")
    train_x = pp.prepare(dataset.train[:n_train]).double()
    val_x = pp.prepare(dataset.val).double()
    torch.manual_seed(3)
    model = build_vae(VAEConfig(data_shape=(1, 8, 8), latent_dim=4, hidden=(32,), num_classes=10)).double()
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=3e-3, seed=11, device="cpu")
    assert dataset.train_labels is not None
    return model, train_x, val_x, dataset.train_labels[:n_train], dataset.val_labels, config, pp


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    model, train_x, val_x, train_y, val_y, config, pp = setup(int(argv[1]), int(argv[2]), int(argv[3]))
    result = fit(model, train_x, val_x, config, preprocessing=pp, train_y=train_y, val_y=val_y)
    if distributed.rank() == 0:
        (out / "rank0.json").write_text(json.dumps({"val_elbo": [m.val_elbo for m in result.history]}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "params.safetensors"))
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
