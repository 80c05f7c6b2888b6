#!/usr/bin/env bash
# Create .bench-venv (repo root, gitignored): the separate environment for the peer benchmarks
# (benchmarks/speed_peers.py, the pythae part of benchmarks/speed_evaluation.py).
# pythae is NOT a vaekit dependency; it is installed only here.
#
#     bash benchmarks/setup_peers.sh            # then: .bench-venv/bin/python benchmarks/speed_peers.py
#
# Order matters: torch==2.13.0 (the CPU build) goes in FIRST, and every later install runs under a
# constraints file pinning it, so pythae's "torch>=1.10.1" can never pull another (multi-GB CUDA)
# torch. pythae 0.1.2 (Sept 2023) needs pydantic>=2 and works as is with today's numpy 2 / pydantic 2
# (checked by the import-and-train smoke test at the end); no other pin was needed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.bench-venv"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --upgrade pip >/dev/null

"${PIP[@]}" install torch==2.13.0
CONSTRAINTS="$VENV/peer-constraints.txt"
echo "torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')" > "$CONSTRAINTS"
# Any other torch version here (a CUDA build pulled in by a dependency) fails the resolve instead.
export PIP_CONSTRAINT="$CONSTRAINTS"

"${PIP[@]}" install pythae==0.1.2
"${PIP[@]}" install -e "$REPO[test]"      # vaekit, and pytest to run tests/test_benchmark_speed_scripts.py here

"$VENV/bin/python" - <<'PY'
import torch
import pythae
from pythae.models import VAE, VAEConfig
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from pythae.data.datasets import BaseDataset
import tempfile
import vaekit

assert torch.__version__.startswith("2.13.0"), torch.__version__
model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=4))
x = torch.rand(16, 1, 28, 28)
with tempfile.TemporaryDirectory() as d:
    cfg = BaseTrainerConfig(output_dir=d, per_device_train_batch_size=8, num_epochs=1, learning_rate=1e-3)
    BaseTrainer(model, BaseDataset(x, torch.zeros(16)), training_config=cfg).train()
print(f"OK: torch {torch.__version__}, pythae {getattr(pythae, '__version__', '0.1.2')}, "
      f"vaekit from {vaekit.__file__}; NLL smoke {model.get_nll(x[:2], n_samples=10, batch_size=10):.1f}")
PY
