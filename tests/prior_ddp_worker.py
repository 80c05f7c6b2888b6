"""tests/ddp_worker.py with a learned prior: the same data-parallel job, its model built with the prior
that ``VAEKIT_TEST_PRIOR`` names (JSON ``{"prior": ..., "prior_args": ...}``), for tests/test_priors.py.

    torchrun --standalone --nproc-per-node R tests/prior_ddp_worker.py OUT_DIR N_TRAIN BATCH EPOCHS VARIANCE [resume]
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

from vaekit.models.vae import VAEConfig

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402


def use_prior(spec: dict) -> None:
    """Make ddp_worker.train_setup build its model with the prior ``spec`` (also the in-process reference)."""
    ddp_worker.VAEConfig = functools.partial(VAEConfig, **spec)  # type: ignore[attr-defined,misc]


if __name__ == "__main__":
    use_prior(json.loads(os.environ["VAEKIT_TEST_PRIOR"]))
    ddp_worker.main(sys.argv[1:])
