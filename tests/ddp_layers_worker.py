"""tests/ddp_worker.py with a model of two stochastic layers (for tests/test_layers_cli.py):

    torchrun --standalone --nproc-per-node R tests/ddp_layers_worker.py OUT_DIR N_TRAIN BATCH EPOCHS VARIANCE [resume]

The same float64 digits job, ``train_setup`` building ``layers=2`` (z_1 of 4 dims, z_2 of 2, widths 32
and 16) instead of one layer."""

from __future__ import annotations

import sys

import torch

import ddp_worker
from vaekit.models.vae import VAEConfig, build_vae


def train_setup(n_train: int, batch: int, epochs: int, variance: str):
    """(model, train_x, val_x, config, preprocessing), identical on every rank."""
    model, train_x, val_x, config, pp = _one_layer(n_train, batch, epochs, variance)
    torch.manual_seed(3)
    model = build_vae(VAEConfig(data_shape=(1, 8, 8), latent_dim=4, hidden=(32,), layers=2,
                                decoder_variance=float(variance) if variance[0].isdigit() else variance)).double()
    return model, train_x, val_x, config, pp


_one_layer = ddp_worker.train_setup

if __name__ == "__main__":
    ddp_worker.train_setup = train_setup      # only in the worker process: importing this module changes nothing
    ddp_worker.main(sys.argv[1:])
