"""What the subcommands that read a run directory share: their common options (RUN_DIR, ``--device``,
``--trust-code``, the data and output options), loading the run, and preparing its examples.

A run is loaded with :func:`vaekit.store.runs.load_run`; a run whose model names the user's own
networks (``MODULE:FUNCTION``) loads only with ``--trust-code`` (otherwise exit 2, one line, nothing
imported). Examples come from the run's own data (the stored DataSpec: same source, seed and
splits; the test split of a run trained with ``--test-data`` is every example of that file) unless
``--data`` names other data, which get the run's stored preprocessing (never refitted): split with
the run's seed and fractions, or, with ``--split all``, every example of the file. They are
prepared as for evaluation (:func:`vaekit.store.runs.eval_tensor`: binarised or dequantised once
with seed :data:`EVAL_DATA_SEED`), so every command sees the same numbers.

A conditional run (``vaekit train --conditional``) is given the examples' labels (:func:`labelled`):
labels the data must have (a ``.csv`` file's are in the run's ``--label-column``), class sub-folders
matched to the run's classes by name, and each label one of the model's classes.
"""

from __future__ import annotations

import argparse
import io
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.errors import ConfigError, DataError, ShapeError

if TYPE_CHECKING:                     # imported where used: building the parsers imports no torch
    import numpy as np
    import torch
    from torch import Tensor

    from vaekit.store.runs import DataSpec, Run

__all__ = ["EVAL_DATA_SEED", "SPLITS", "positive_int", "non_negative_int", "add_parser", "add_data_options",
           "add_out_option", "out_path", "write_npy", "load", "examples", "model_dtype", "save_images",
           "scatter_examples", "training_scatter", "labels_for", "labelled"]

#: Seed of the one-off binarisation / dequantisation of the examples every command uses.
EVAL_DATA_SEED = 0
SPLITS = ("test", "val", "train", "all")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def add_parser(subparsers: Any, name: str, help_text: str, description: str,
               example: str) -> argparse.ArgumentParser:
    """A subcommand's parser with RUN_DIR, ``--device`` and ``--trust-code``."""
    text = f"{textwrap.fill(description, 88, break_on_hyphens=False)}\n\nexample:\n  {example}"
    p = subparsers.add_parser(name, help=help_text, description=text,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory written by 'vaekit train'")
    p.add_argument("--device", default="auto",
                   help="torch device, e.g. cpu, cuda, cuda:1 (default: auto = cuda when available, else cpu)")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a run trained with --arch MODULE:FUNCTION to import and run that code")
    return p


def add_data_options(p: argparse.ArgumentParser, *, limit: bool = True) -> None:
    """``--data``, ``--data-dir``, ``--split`` and (``limit``) ``--limit``."""
    p.add_argument("--data", metavar="SPEC", default=None,
                   help="other data to use (a dataset name or a .npy/.npz/.csv/IDX file or image folder); "
                        "default: the run's own data. The run's preprocessing is applied")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where mnist / fashion-mnist files are (default: as stored with the run)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="which split to use (default: test); all: every example of the --data file, unsplit")
    if limit:
        p.add_argument("--limit", metavar="N", type=positive_int, default=None,
                       help="use only the first N examples of the split")


def add_out_option(p: argparse.ArgumentParser, exts: tuple[str, ...], default: str | None) -> None:
    """``--out FILE`` (with the extensions ``exts``; ``default`` inside RUN_DIR, else required) and ``--force``."""
    where = f" (default: RUN_DIR/{default})" if default else " (required)"
    p.add_argument("--out", metavar="FILE", type=Path, default=None, required=default is None,
                   help=f"output file, {' or '.join(exts)}{where}")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def out_path(args: argparse.Namespace, exts: tuple[str, ...], default: str | None) -> Path:
    """``--out`` (or RUN_DIR/default), checked: a known extension, and no existing file unless --force."""
    path: Path = args.out if args.out is not None else args.run_dir / str(default)
    ext = path.suffix.lower()
    if ext not in exts:
        raise ConfigError(f"--out {path}: unknown extension {ext or '(none)'!r}; use {' or '.join(exts)}")
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a directory")
    if path.exists() and not args.force:
        raise ConfigError(f"--out {path}: file exists; pass --force to overwrite it")
    return path


def write_npy(path: Path, array: np.ndarray) -> Path:
    """``array`` as a .npy file (no pickle), written atomically."""
    import numpy as np

    from vaekit.store.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def load(args: argparse.Namespace) -> tuple[Run, torch.device]:
    """The run in ``args.run_dir`` on ``--device``, in eval mode (user code only with ``--trust-code``)."""
    from vaekit.devices import resolve_device
    from vaekit.store.runs import load_run

    device = resolve_device(args.device, option="--device")
    run = load_run(args.run_dir, map_location=device, trust_code=args.trust_code)
    run.model.eval()
    return run, device


def _image_size(run: Run, data: str) -> tuple[int, int] | None:
    """A folder of images is resized to the run's image size (the stored one, else the model's HxW)."""
    if not Path(data).is_dir():
        return None
    shape = run.config.data_shape
    return run.data.image_size or ((shape[-2], shape[-1]) if len(shape) == 3 else None)


def _data_spec(run: Run, args: argparse.Namespace) -> tuple[DataSpec, str]:
    """The data to load and the split of them to use."""
    from vaekit.store.runs import DataSpec

    spec = run.data
    if args.split == "all":
        if args.data is None:
            raise ConfigError("--split all: needs --data SPEC, the data to use every example of (the run's own "
                              "data are split into train, val and test)")
        return DataSpec(spec=args.data, data_dir=args.data_dir, seed=spec.seed, val_fraction=0.0, test_fraction=0.0,
                        image_size=_image_size(run, args.data), label_column=spec.csv_label_column(args.data)), "all"
    if args.data is not None:
        return DataSpec(spec=args.data, data_dir=args.data_dir, seed=spec.seed, val_fraction=spec.val_fraction,
                        test_fraction=spec.test_fraction, image_size=_image_size(run, args.data),
                        stream=spec.stream and Path(args.data).suffix.lower() == ".npy",
                        label_column=spec.csv_label_column(args.data)), args.split
    if args.data_dir is not None:
        spec = replace(spec, data_dir=args.data_dir)
    test = spec.test_spec()
    if test is not None and args.split == "test":           # trained with --test-data: every example of that file
        return test, "all"
    return spec, args.split


def examples(run: Run, args: argparse.Namespace, device: torch.device,
             limit: int | None = None) -> tuple[Tensor, np.ndarray | None, DataSpec]:
    """The chosen split's first ``limit`` examples, prepared for the model, with their labels (a
    folder's classes matched to the run's by name)."""
    from vaekit.store.runs import align_labels, eval_tensor, split_of

    spec, split = _data_spec(run, args)
    dataset = spec.load()
    model_shape = tuple(run.config.data_shape)
    if tuple(dataset.shape) != model_shape:
        raise ShapeError(f"--data {spec.spec}: examples of shape {tuple(dataset.shape)} do not match the "
                         f"model's data shape {model_shape}")
    x, labels = split_of(dataset, split, limit)
    labels = align_labels(labels, dataset.classes, run.config.class_names, f"--data {spec.spec}")
    try:
        tensor = eval_tensor(run.preprocessing, x, seed=EVAL_DATA_SEED, device=device)
    except DataError as exc:
        raise DataError(f"--data {spec.spec}: {exc}") from None
    return tensor.to(model_dtype(run)), labels, spec


def scatter_examples(raw: Any, labels: np.ndarray | None, preprocessing: Any,
                     device: str | torch.device) -> tuple[Tensor, np.ndarray | None]:
    """The latent scatter's training subsample (:func:`vaekit.viz.figures.scatter_indices`, seed 0) of
    the raw training examples ``raw`` (an array, or a streamed .npy file) and their labels, prepared
    like every command's examples."""
    from vaekit.store.runs import eval_tensor
    from vaekit.viz.figures import scatter_indices

    index = scatter_indices(len(raw))
    rows = raw.read(index) if hasattr(raw, "read") else raw[index]       # a vaekit.data.stream.NpyStream reads rows
    lab = None if labels is None or hasattr(raw, "read") else labels[index]
    return eval_tensor(preprocessing, rows, seed=EVAL_DATA_SEED, device=device), lab


def training_scatter(run: Run, args: argparse.Namespace,
                     device: torch.device) -> tuple[Tensor, np.ndarray | None] | None:
    """:func:`scatter_examples` of the training split of the data the command uses (the run's own,
    or ``--data``); None with ``--split all`` (the scatter then shows the examples given)."""
    if args.split == "all":
        return None
    spec, _ = _data_spec(run, argparse.Namespace(**{**vars(args), "split": "train"}))
    dataset = spec.load()
    if dataset.train is None or len(dataset.train) == 0 or tuple(dataset.shape) != tuple(run.config.data_shape):
        return None
    from vaekit.store.runs import align_labels

    x, labels = scatter_examples(dataset.train, dataset.train_labels, run.preprocessing, device)
    return x.to(model_dtype(run)), align_labels(labels, dataset.classes, run.config.class_names, f"--data {spec.spec}")


def labels_for(run: Run, labels: np.ndarray | None, spec: DataSpec, device: torch.device) -> Tensor | None:
    """The labels a conditional run's model is given for examples of ``spec`` (checked: present, each one
    of the model's classes; a ConfigError names --data otherwise), on ``device``; None for an
    unconditional run."""
    import torch

    from vaekit.cli.labels import checked_labels

    checked = checked_labels(labels, run.config.num_classes, f"--data {spec.spec}")
    return None if checked is None else torch.as_tensor(checked, device=device)


def labelled(run: Run, labels: np.ndarray | None, spec: DataSpec, device: torch.device) -> Any:
    """The run's model as the commands use it on examples with ``labels``: the model itself, or a
    conditional one given the labels (:meth:`vaekit.models.conditional.ConditionalVAE.given`)."""
    from vaekit.models.protocol import with_labels

    return with_labels(run.model, labels_for(run, labels, spec, device))


def check_decoding(run: Run, count: int, option: str, device: torch.device) -> None:
    """A ConfigError naming ``option`` when decoding ``count`` points of ``run``'s model needs more memory
    than ``device`` has available (:func:`vaekit.cli.footprint.decoding_bytes`), before any is drawn."""
    from vaekit.cli.footprint import available_memory, decoding_bytes, describe_bytes

    need, have = decoding_bytes(run.model, count), available_memory(device)
    if have is not None and need > have[0]:
        raise ConfigError(f"{option}: decoding {count:,} points needs about {describe_bytes(need)}, more than the "
                          f"{describe_bytes(have[0])} of memory {have[1]} on {device}; ask for fewer")


def model_dtype(run: Run) -> torch.dtype:
    """The floating dtype of the run's parameters."""
    import torch

    return next((p.dtype for p in run.model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def save_images(path: Path, values: Tensor, data_shape: tuple[int, ...], *, nrow: int | None = None,
                title: str | None = None, col_labels: list[str] | None = None) -> Path:
    """Values (N, *data_shape) as a PNG grid (images) or heatmap (tabular), or as a .npy array."""
    import torch

    from vaekit.viz import plots
    from vaekit.viz.figures import to_display

    if path.suffix.lower() == ".npy":
        return write_npy(path, values.detach().to("cpu", torch.float32).numpy())
    return plots.image_grid(to_display(values, data_shape), path, nrow=nrow, title=title, col_labels=col_labels)
