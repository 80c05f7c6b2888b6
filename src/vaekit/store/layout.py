"""The run directory's one owner: every file name ``vaekit train`` writes and every command reads.

Layout of a run directory::

    config.json              model configuration + "extra": {"preprocessing", "data", "train"} (JSON)
    model.safetensors        the best weights (highest validation ELBO)
    checkpoints/last.*       last.safetensors + last.json: the full training state for --resume
    metrics.jsonl            one JSON object per epoch (also metrics.csv)
    evaluation-SPLIT.json    ``vaekit evaluate`` / the end of ``vaekit train``
    run.json                 provenance: each training command, its date, duration and versions; split sizes
    figures/*.png            pictures of what the model learned;  report.html shows them
    figures/captions.json    the figures' captions, in order, for the reports
    tensorboard/             TensorBoard event files (when tensorboard is installed)
    mlflow.json              the MLflow run this run logs to (``vaekit train --mlflow``): tracking URI, run id
    .lock                    held (flock) by the process writing the run: see vaekit.store.lock
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLayout", "CONFIG_FILE", "WEIGHTS_FILE", "LOCK_FILE"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run (or model) directory."""

    root: Path

    @classmethod
    def of(cls, directory: str | os.PathLike[str]) -> RunLayout:
        return cls(Path(directory))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS_FILE

    @property
    def checkpoint(self) -> Path:
        """The stem of the training checkpoint pair (``.safetensors`` + ``.json``)."""
        return self.root / "checkpoints" / "last"

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    def evaluation(self, split: str) -> Path:
        return self.root / f"evaluation-{split}.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def figure(self, name: str) -> Path:
        """``figures/NAME.png``."""
        return self.figures / f"{name}.png"

    @property
    def figure_captions(self) -> Path:
        """``figures/captions.json``: the figures' file names and captions, written with the report."""
        return self.figures / "captions.json"

    @property
    def run_info(self) -> Path:
        """``run.json``: the run's provenance (:mod:`vaekit.store.run_info`)."""
        return self.root / "run.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def mlflow_link(self) -> Path:
        """``mlflow.json``: the MLflow run this run logs to (:mod:`vaekit.cli.mlflow_tracking`)."""
        return self.root / "mlflow.json"

    @property
    def lock(self) -> Path:
        """The file whose ``flock`` marks the run's one writer (:mod:`vaekit.store.lock`); it stays
        in the directory after the run."""
        return self.root / LOCK_FILE
