"""tests/ddp_worker.py with a ``conv`` model in place of the mlp (float64 digits, width 4, 2 stages): the
data-parallel job of tests/test_conv_arch_runs.py, started by ``torchrun`` with ddp_worker's arguments.

    torchrun --standalone --nproc-per-node R tests/conv_ddp_worker.py OUT_DIR N_TRAIN BATCH EPOCHS VARIANCE [resume]
"""

from __future__ import annotations

import sys

import torch

import ddp_worker
import vaekit.training as train_mod
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.models.vae import VAEConfig, build_vae


def conv_setup(n_train: int, batch: int, epochs: int, variance: str):
    """(model, train_x, val_x, config, preprocessing) as ddp_worker.train_setup, with a conv model."""
    dataset = load_dataset("digits")
    pp = fit_preprocessing(dataset, "gaussian")
    train_x = pp.prepare(dataset.train[:n_train]).double()
    val_x = pp.prepare(dataset.val).double()
    torch.manual_seed(3)
    model = build_vae(VAEConfig(data_shape=(1, 8, 8), latent_dim=4, arch="conv", arch_args={"width": 4},
                                decoder_variance=float(variance) if variance[0].isdigit() else variance)).double()
    config = train_mod.TrainConfig(epochs=epochs, batch_size=batch, lr=3e-3, seed=11, device="cpu")
    return model, train_x, val_x, config, pp


if __name__ == "__main__":
    ddp_worker.train_setup = conv_setup               # main() looks it up in its module when it runs
    ddp_worker.main(sys.argv[1:])
