"""Run directories: what ``vaekit train`` leaves behind and every other subcommand reads.

The file names of a run directory belong to :class:`vaekit.store.layout.RunLayout` (config.json,
model.safetensors, checkpoints/last.*, metrics.jsonl/csv, evaluation-SPLIT.json, figures/,
report.html, tensorboard/). config.json's ``extra["data"]`` records how the data were loaded
(spec, data_dir, seed, fractions, image_size), so evaluation reproduces the same splits;
``extra["preprocessing"]`` is a :class:`vaekit.data.Preprocessing` dict; ``extra["train"]`` the
training options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.data import Dataset, Preprocessing, load_dataset
from vaekit.errors import CheckpointError, ConfigError
from vaekit.models.config import VAEConfig
from vaekit.models.vae import VAE
from vaekit.store.layout import RunLayout
from vaekit.store.model_files import load_model, read_config

__all__ = ["DataSpec", "Run", "load_run", "eval_tensor", "split_of"]


@dataclass(frozen=True)
class DataSpec:
    """How a dataset was loaded: the arguments of :func:`vaekit.data.load_dataset`."""

    spec: str = "digits"
    data_dir: str | None = None
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    image_size: tuple[int, int] | None = None
    stream: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "data_dir": self.data_dir, "seed": self.seed, "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction, "image_size": list(self.image_size) if self.image_size else None,
                "stream": self.stream}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        d = dict(d)
        if d.get("image_size") is not None:
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)

    def load(self, *, download: bool = False, progress: bool = False) -> Dataset:
        return load_dataset(self.spec, data_dir=self.data_dir, download=download, val_fraction=self.val_fraction,
                            test_fraction=self.test_fraction, seed=self.seed, image_size=self.image_size,
                            progress=progress, stream=self.stream)


@dataclass(frozen=True)
class Run:
    """A loaded run directory."""

    directory: Path
    model: VAE
    config: VAEConfig
    preprocessing: Preprocessing
    data: DataSpec
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> RunLayout:
        """The run directory's file names."""
        return RunLayout.of(self.directory)


def load_run(run_dir: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
             trust_code: bool = False) -> Run:
    """Load the model (best weights) and what is needed to reproduce its data from ``run_dir``.

    A run whose model names the user's own networks (``MODULE:FUNCTION``) imports that code only
    with ``trust_code=True``; otherwise :class:`~vaekit.errors.UntrustedCodeError`, importing nothing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    config, extra = read_config(run_dir)
    try:
        preprocessing = Preprocessing.from_dict(extra["preprocessing"])
        data = DataSpec.from_dict(extra.get("data", {}))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{RunLayout.of(run_dir).config}: not a vaekit run (missing or bad {exc})") from None
    model = load_model(run_dir, map_location=map_location, trust_code=trust_code)
    return Run(run_dir, model, config, preprocessing, data, dict(extra.get("train", {})))


def split_of(dataset: Dataset, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The raw array and labels of ``split`` ("train", "val" or "test"), its first ``limit``
    examples if given (a streamed training split is read only that far)."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split: unknown {split!r}; choose train, val or test")
    x = getattr(dataset, split)
    if x is None or len(x) == 0:
        raise ConfigError(f"--split {split}: dataset {dataset.name!r} has no {split} examples")
    labels = getattr(dataset, f"{split}_labels")
    count = len(x) if limit is None else min(limit, len(x))
    if hasattr(x, "read"):                                 # a vaekit.data.stream.NpyStream
        return x.read(np.arange(count)), None
    return x[:count], None if labels is None else labels[:count]


def eval_tensor(preprocessing: Preprocessing, x: np.ndarray, *, seed: int = 0,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Evaluation data: ``prepare`` then ``augment`` once with a fixed seed (a test set binarised or
    dequantised once, so every evaluation sees the same numbers)."""
    prepared = preprocessing.prepare(x).to(device)
    generator = torch.Generator(device=prepared.device).manual_seed(seed)
    return preprocessing.augment(prepared, generator)
