"""Run directories: what ``vaekit train`` leaves behind and every other subcommand reads.

The file names of a run directory belong to :class:`vaekit.store.layout.RunLayout` (config.json,
model.safetensors, checkpoints/last.*, metrics.jsonl/csv, evaluation-SPLIT.json, figures/,
report.html, tensorboard/). config.json's ``extra["data"]`` records how the data were loaded
(spec, data_dir, seed, fractions, image_size, and the separate test file of ``--test-data``), so
evaluation reproduces the same splits;
``extra["preprocessing"]`` is a :class:`vaekit.data.Preprocessing` dict; ``extra["train"]`` the
training options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.data import Dataset, Preprocessing, load_dataset
from vaekit.errors import CheckpointError, ConfigError, DataError, ShapeError
from vaekit.models.config import VAEConfig
from vaekit.models.vae import VAE
from vaekit.store.layout import RunLayout
from vaekit.store.model_files import load_model, read_config

__all__ = ["DataSpec", "Run", "load_run", "eval_tensor", "split_of", "load_test_data", "align_labels"]


@dataclass(frozen=True)
class DataSpec:
    """How a dataset was loaded: the arguments of :func:`vaekit.data.load_dataset`.

    ``test_data`` (``vaekit train --test-data``): a separate source whose every example is the
    test split (:meth:`test_spec`); the source ``spec`` is then split into training and validation
    only (``test_fraction`` 0).
    """

    spec: str = "digits"
    data_dir: str | None = None
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    image_size: tuple[int, int] | None = None
    stream: bool = False
    test_data: str | None = None
    label_column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``label_column`` only when set."""
        d = {"spec": self.spec, "data_dir": self.data_dir, "seed": self.seed, "val_fraction": self.val_fraction,
             "test_fraction": self.test_fraction, "image_size": list(self.image_size) if self.image_size else None,
             "stream": self.stream, "test_data": self.test_data}
        return d if self.label_column is None else {**d, "label_column": self.label_column}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        d = dict(d)
        if d.get("image_size") is not None:
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)

    def load(self, *, download: bool = False, progress: bool = False) -> Dataset:
        return load_dataset(self.spec, data_dir=self.data_dir, download=download, val_fraction=self.val_fraction,
                            test_fraction=self.test_fraction, seed=self.seed, image_size=self.image_size,
                            progress=progress, stream=self.stream, label_column=self.csv_label_column())

    def csv_label_column(self, spec: str | None = None) -> str | None:
        """``label_column`` where it applies: to a .csv file ``spec`` (default: this source)."""
        name = self.spec if spec is None else spec
        return self.label_column if Path(name).suffix.lower() == ".csv" else None

    def column_names(self) -> list[str] | None:
        """The feature names of a .csv source with a header row (the label column removed), else None."""
        from vaekit.data.csv_files import read_column_names

        if Path(self.spec).suffix.lower() != ".csv":
            return None
        return read_column_names(self.spec, self.label_column)

    def whole(self, spec: str | None = None) -> DataSpec:
        """The spec of every example of ``spec`` (default: this source), unsplit (both fractions 0,
        in memory), with this spec's data_dir and image_size: :meth:`Dataset.every_example` of its
        :meth:`load` is the whole file, in its own order."""
        return DataSpec(spec=self.spec if spec is None else spec, data_dir=self.data_dir, seed=self.seed,
                        val_fraction=0.0, test_fraction=0.0, image_size=self.image_size,
                        label_column=self.csv_label_column(spec))

    def test_spec(self) -> DataSpec | None:
        """The separate test source (``--test-data``), every example of it, or None."""
        return None if self.test_data is None else self.whole(self.test_data)


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
    """The raw array and labels of ``split`` ("train", "val", "test", or "all": every example,
    :meth:`Dataset.every_example`), its first ``limit`` examples if given (a streamed training split
    is read only that far)."""
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"--split: unknown {split!r}; choose train, val, test or all")
    if split == "all":
        x, labels = dataset.every_example()
    else:
        x, labels = getattr(dataset, split), getattr(dataset, f"{split}_labels")
    if x is None or len(x) == 0:
        hint = "" if split == "all" else "; --split all uses every example of --data"
        raise ConfigError(f"--split {split}: dataset {dataset.name!r} has no {split} examples{hint}")
    count = len(x) if limit is None else min(limit, len(x))
    if hasattr(x, "read"):                                 # a vaekit.data.stream.NpyStream
        return x.read(np.arange(count)), None
    return x[:count], None if labels is None else labels[:count]


def align_labels(labels: np.ndarray | None, classes: tuple[str, ...] | None, model_classes: tuple[str, ...],
                 what: str) -> np.ndarray | None:
    """``labels`` (indices into the data's ``classes``, e.g. a folder's class sub-folders) as indices into
    the model's ``model_classes``, matched by name; unchanged when either side has no names. A class the
    model does not know is a DataError naming ``what``."""
    if labels is None or not classes or not model_classes or tuple(classes) == tuple(model_classes):
        return labels
    unknown = sorted(set(classes) - set(model_classes))
    if unknown:
        raise DataError(f"{what}: classes {unknown} are not among the model's ({', '.join(model_classes)})")
    index = np.asarray([list(model_classes).index(name) for name in classes], dtype=np.int64)
    return index[labels]


def load_test_data(spec: DataSpec, preprocessing: Preprocessing, data_shape: tuple[int, ...], *,
                   download: bool = False, progress: bool = False,
                   classes: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Every example of the separate test data ``spec.test_data`` (``vaekit train --test-data``) and
    their labels, or None without test data. Checked up front, before anything is trained or
    written: the examples must have the model's ``data_shape`` (:class:`ShapeError`) and be accepted
    by the training ``preprocessing`` (:class:`DataError`), each message naming --test-data. A
    folder of images is resized to the model's image size. ``classes``: the model's class names, which
    the labels of a folder of class folders are matched to (:func:`align_labels`)."""
    test = spec.test_spec()
    if test is None:
        return None
    if test.image_size is None and len(data_shape) == 3 and Path(test.spec).is_dir():
        test = replace(test, image_size=(data_shape[-2], data_shape[-1]))
    dataset = test.load(download=download, progress=progress)       # its errors name the file
    if tuple(dataset.shape) != tuple(data_shape):
        raise ShapeError(f"--test-data {test.spec}: examples of shape {tuple(dataset.shape)} do not match the "
                         f"training data's {tuple(data_shape)}")
    x, labels = dataset.every_example()
    labels = align_labels(labels, dataset.classes, classes, f"--test-data {test.spec}")
    if len(x) < 2:
        raise DataError(f"--test-data {test.spec}: holds {len(x)} example(s); the evaluation needs at least 2")
    try:
        preprocessing.prepare(x)
    except DataError as exc:
        raise DataError(f"--test-data {test.spec}: {exc}") from None
    return x, labels


def eval_tensor(preprocessing: Preprocessing, x: np.ndarray, *, seed: int = 0,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Evaluation data: ``prepare`` then ``augment`` once with a fixed seed (a test set binarised or
    dequantised once, so every evaluation sees the same numbers)."""
    prepared = preprocessing.prepare(x).to(device)
    generator = torch.Generator(device=prepared.device).manual_seed(seed)
    return preprocessing.augment(prepared, generator)
