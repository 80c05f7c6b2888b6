"""tests/ddp_worker.py with an IAF posterior (``--posterior iaf``), for tests/test_iaf.py:

    torchrun --standalone --nproc-per-node R tests/iaf_ddp_worker.py OUT_DIR N_TRAIN BATCH EPOCHS VARIANCE [resume]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402
import vaekit.training as train_mod  # noqa: E402
from vaekit.data import fit_preprocessing, load_dataset  # noqa: E402
from vaekit.models.vae import VAEConfig, build_vae  # noqa: E402

POSTERIOR_ARGS = {"steps": 2, "hidden": [16], "context": 4}


def train_setup(n_train: int, batch: int, epochs: int, variance: str):
    """ddp_worker.train_setup's float64 digits model and data, with an IAF posterior."""
    dataset = load_dataset("digits")
    pp = fit_preprocessing(dataset, "gaussian")
    train_x = pp.prepare(dataset.train[:n_train]).double()
    val_x = pp.prepare(dataset.val).double()
    torch.manual_seed(3)
    model = build_vae(VAEConfig(data_shape=(1, 8, 8), latent_dim=4, hidden=(32,), posterior="iaf",
                                posterior_args=POSTERIOR_ARGS,
                                decoder_variance=float(variance) if variance[0].isdigit() else variance)).double()
    config = train_mod.TrainConfig(epochs=epochs, batch_size=batch, lr=3e-3, seed=11, device="cpu")
    return model, train_x, val_x, config, pp


if __name__ == "__main__":
    ddp_worker.train_setup = train_setup
    ddp_worker.main(sys.argv[1:])
