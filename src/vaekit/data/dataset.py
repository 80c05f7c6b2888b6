"""The :class:`Dataset` container and :func:`load_dataset`, which reads one from a name or a path.

Splits are deterministic: a ``numpy.random.Generator(seed)`` permutes the examples once; the
first ``n_test`` go to the test split (only when the dataset has no test split of its own), the
next ``n_val`` to validation, the rest to training; each split keeps the original order of its
examples. Every example lands in exactly one split. With ``N`` examples (after removing the
test split, ``N'``): ``n_test = round(test_fraction * N)`` and ``n_val = round(val_fraction * N')``,
each at least 1 when its fraction is positive and never so large that training is left empty.
With both fractions 0 nothing is split: training holds every example, in the source's order
(:meth:`Dataset.every_example` gives all the examples of any dataset, e.g. to evaluate on a file).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.data import formats
from vaekit.data.mnist import load_idx_dataset
from vaekit.errors import ConfigError, DataError

__all__ = ["KNOWN_DATASETS", "Dataset", "load_dataset", "split_indices"]

#: Dataset names that :func:`load_dataset` understands besides paths.
KNOWN_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "shapes")
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train/validation/test, holding raw (unscaled) values.

    ``train``, ``val`` and ``test`` have shape ``(N, *shape)`` and dtype uint8 (discrete images,
    values ``0..levels-1``) or float32. ``test`` is the dataset's own test split if it has one
    (MNIST's t10k files), else a seeded split, or ``None`` when ``test_fraction`` was 0.
    ``val`` may have 0 examples when ``val_fraction`` was 0. Labels are int64 ``(N,)`` or ``None``;
    ``classes`` names them where the source does (the sub-folders of a folder of class folders: label i
    is ``classes[i]``), else None. Equality is identity (the arrays make value equality ill-defined).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    levels: int | None
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray | None
    train_labels: np.ndarray | None
    val_labels: np.ndarray | None
    test_labels: np.ndarray | None
    classes: tuple[str, ...] | None = None

    def every_example(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Every example of the dataset and its labels (``None`` unless every split has labels):
        the training, validation and test splits concatenated, in that order. Loaded with
        ``val_fraction=0`` and ``test_fraction=0`` that is the source's own order (for MNIST the
        training file, then t10k). Not for a streamed training split (raises :class:`ConfigError`)."""
        if hasattr(self.train, "read"):                    # a vaekit.data.stream.NpyStream
            raise ConfigError(f"{self.name}: every example of a streamed dataset cannot be held in memory here")
        parts = [(self.train, self.train_labels), (self.val, self.val_labels)]
        if self.test is not None:
            parts.append((self.test, self.test_labels))
        parts = [(x, y) for x, y in parts if len(x)]
        if not parts:
            return self.train, self.train_labels
        if len(parts) == 1:
            return parts[0]
        x = np.concatenate([x for x, _ in parts])
        label_parts = [y for _, y in parts if y is not None]
        return x, np.concatenate(label_parts) if len(label_parts) == len(parts) else None

    @property
    def dim(self) -> int:
        """Number of values in one example, the product of ``shape``."""
        return math.prod(self.shape)

    def __repr__(self) -> str:
        """Short summary: name, kind, shape, levels and split sizes."""
        n_test = None if self.test is None else len(self.test)
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, shape={self.shape}, "
            f"levels={self.levels}, train={len(self.train)}, val={len(self.val)}, test={n_test})"
        )


def _check_fraction(value: Any, option: str) -> float:
    """Return ``value`` as a float in [0, 1), else raise :class:`ConfigError` naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{option}: expected a number in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{option}: must lie in [0, 1), got {value!r}")
    return float(value)


def _check_seed(seed: Any) -> int:
    """Return ``seed`` as a non-negative int, else raise :class:`ConfigError`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def split_indices(
    n: int, fractions: tuple[float, ...], seed: int, source: str = "dataset"
) -> list[np.ndarray]:
    """Split ``range(n)`` at random into ``len(fractions) + 1`` sorted index arrays.

    Part ``i`` takes ``round(fractions[i] * remaining)`` of the indices not yet taken (at least 1
    if the fraction is positive, never leaving the last part empty); the last part takes the
    rest. Deterministic in ``seed``. Raises :class:`DataError` when ``n < 3``, or, when every
    fraction is 0 (nothing to split off: the last part is everything), when ``n < 1``.
    """
    fracs = [_check_fraction(f, f"fraction {i}") for i, f in enumerate(fractions)]
    if not any(f > 0 for f in fracs):
        if n < 1:
            raise DataError(f"{source}: holds no examples")
        return [np.zeros(0, dtype=np.int64) for _ in fracs] + [np.arange(n)]
    if n < 3:
        raise DataError(f"{source}: {n} example(s) cannot be split into train/val/test, need at least 3")
    perm = np.random.default_rng(_check_seed(seed)).permutation(n)
    parts: list[np.ndarray] = []
    start = 0
    for i, f in enumerate(fracs):
        remaining = n - start
        later = sum(1 for g in fracs[i + 1 :] if g > 0)  # later parts that need an example
        k = round(f * remaining)
        if f > 0:
            k = max(k, 1)
        k = min(k, max(remaining - 1 - later, 0))
        parts.append(np.sort(perm[start : start + k]))
        start += k
    parts.append(np.sort(perm[start:]))
    return parts


def _take(arr: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    """Index ``arr`` by ``idx`` (None stays None)."""
    return None if arr is None else arr[idx]


def _build(
    name: str,
    x: np.ndarray,
    labels: np.ndarray | None,
    kind: str,
    shape: tuple[int, ...],
    levels: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    classes: tuple[str, ...] | None = None,
) -> Dataset:
    """Make a :class:`Dataset` with seeded test and validation splits of ``x``."""
    test_idx, val_idx, train_idx = split_indices(len(x), (test_fraction, val_fraction), seed, name)
    has_test = test_fraction > 0
    return Dataset(
        name=name,
        kind=kind,
        shape=shape,
        levels=levels,
        train=x[train_idx],
        val=x[val_idx],
        test=x[test_idx] if has_test else None,
        train_labels=_take(labels, train_idx),
        val_labels=_take(labels, val_idx),
        test_labels=_take(labels, test_idx) if has_test else None,
        classes=classes,
    )


def _stream_npy(path: Path, source: str, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    """A :class:`Dataset` whose training split streams from the memory-mapped ``.npy`` file."""
    from vaekit.data.stream import NpyStream, read_npy_header

    shape, _, _ = read_npy_header(path)
    test_idx, val_idx, train_idx = split_indices(shape[0], (test_fraction, val_fraction), seed, source)
    train = NpyStream(path, rows=train_idx)
    has_test = test_fraction > 0
    return Dataset(name=source, kind=train.kind, shape=train.shape, levels=train.levels, train=train,  # type: ignore[arg-type]
                   val=train.take(val_idx), test=train.take(test_idx) if has_test else None,
                   train_labels=None, val_labels=None, test_labels=None)


def _load_digits(val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    """The 1,797 8x8 digits shipped with scikit-learn, values 0..16 (17 levels)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images).round().astype(np.uint8)[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    return _build("digits", x, y, "image", (1, 8, 8), 17, val_fraction, test_fraction, seed)


def _load_shapes(val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    """The 6,144 binary 32x32 images of :mod:`vaekit.data.shapes` (values 0..1, 2 levels), labelled by shape."""
    from vaekit.data import shapes

    factors = shapes.factor_grid()
    return _build("shapes", shapes.render(factors), factors[:, 0].copy(), "image", (1, shapes.IMAGE_SIZE,
                  shapes.IMAGE_SIZE), 2, val_fraction, test_fraction, seed)


def _default_data_dir(name: str) -> Path:
    """``$VAEKIT_DATA_DIR/<name>`` if the variable is set, else ``~/.cache/vaekit/<name>``."""
    root = os.environ.get("VAEKIT_DATA_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "vaekit"
    return base / name


def _load_idx_named(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    mirrors: Any,
    progress: bool,
    val_fraction: float,
    seed: int,
) -> Dataset:
    """MNIST or Fashion-MNIST: own t10k test split, seeded validation split of the training set."""
    folder = Path(data_dir) if data_dir is not None else _default_data_dir(name)
    xtr, ytr, xte, yte = load_idx_dataset(name, folder, download=download, mirrors=mirrors, progress=progress)
    val_idx, train_idx = split_indices(len(xtr), (val_fraction,), seed, name)
    return Dataset(
        name=name,
        kind="image",
        shape=(1, *xtr.shape[1:]),
        levels=256,
        train=xtr[train_idx][:, None],
        val=xtr[val_idx][:, None],
        test=xte[:, None],
        train_labels=ytr[train_idx],
        val_labels=ytr[val_idx],
        test_labels=yte,
    )


def _read_path(
    path: Path, label_column: int | str | None, image_size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Dispatch on the file type; return the raw array and labels."""
    source = os.fspath(path)
    if path.is_dir():
        return formats.read_image_folder(path, image_size)
    if not path.is_file():
        raise DataError(f"{source}: not a regular file or folder")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return formats.read_npy(path)
    if suffix == ".npz":
        return formats.read_npz(path)
    if suffix == ".csv":
        return formats.read_csv(path, label_column)
    if formats.is_idx_path(path):
        x, _ = formats.read_idx(path)
        beside = formats.idx_labels_path(path)        # train-images-idx3-ubyte: train-labels-idx1-ubyte
        if beside is None:
            return x, None
        y, _ = formats.read_idx(beside)
        return x, formats.as_labels(y, len(x), os.fspath(beside))
    raise DataError(
        f"{source}: unsupported file type {path.suffix or '(none)'}; expected .npy, .npz, .csv, "
        "an IDX file (.idx, -ubyte, .gz) or a folder of images"
    )


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    progress: bool = False,
    label_column: int | str | None = None,
    mirrors: list[str] | tuple[str, ...] | None = None,
    stream: bool = False,
) -> Dataset:
    """Load a dataset by name or path and split it deterministically.

    ``spec`` is ``"digits"`` (scikit-learn's 8x8 digits), ``"shapes"`` (:mod:`vaekit.data.shapes`), ``"mnist"`` or
    ``"fashion-mnist"``
    (the IDX files in ``data_dir``, default ``$VAEKIT_DATA_DIR/<name>`` or
    ``~/.cache/vaekit/<name>``; fetched when ``download=True``, from ``mirrors`` if given), or a
    path to a ``.npy``/``.npz``/``.csv``/IDX file or a folder of images, or of class sub-folders of
    images (see :mod:`vaekit.data.formats` for what each may hold, and where labels come from). Known
    names take precedence over paths.

    ``test_fraction`` is used only by datasets without their own test split (0 gives
    ``test=None``); ``val_fraction`` is the share of the remaining examples held out for
    validation. ``image_size=(H, W)`` resizes the images of a folder; ``label_column`` picks a
    CSV column as integer labels; ``progress`` shows a tqdm bar while downloading.

    ``stream=True`` (``.npy`` files only) memory-maps the file instead of reading it: the training
    split is a :class:`vaekit.data.stream.NpyStream` read in shuffled blocks during training, the
    validation and test splits (the same rows as without streaming) are read into memory.

    Raises :class:`ConfigError` for impossible options and :class:`DataError` for bad data.
    """
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    seed = _check_seed(seed)
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"dataset: expected a name or a path, got {spec!r}")

    key = os.fspath(spec).strip().lower() if isinstance(spec, str) else None
    key = _ALIASES.get(key, key) if key is not None else None
    if key in KNOWN_DATASETS:
        if stream:
            raise ConfigError(f"stream: applies to .npy files only, not to {key}")
        if image_size is not None:
            raise ConfigError(f"image_size: only applies to folders of images, not to {key}")
        if label_column is not None:
            raise ConfigError(f"label_column: only applies to .csv files, not to {key}")
        if key == "digits":
            return _load_digits(val_fraction, test_fraction, seed)
        if key == "shapes":
            return _load_shapes(val_fraction, test_fraction, seed)
        return _load_idx_named(key, data_dir, download, mirrors, progress, val_fraction, seed)

    path = Path(spec)
    source = os.fspath(spec)
    if not path.exists():
        raise DataError(
            f"{source}: neither a known dataset ({', '.join(KNOWN_DATASETS)}) nor an existing file or folder"
        )
    if image_size is not None and not path.is_dir():
        raise ConfigError(f"image_size: only applies to folders of images, not to {source}")
    if label_column is not None and path.suffix.lower() != ".csv":
        raise ConfigError(f"label_column: only applies to .csv files, not to {source}")

    if stream:
        if path.suffix.lower() != ".npy" or not path.is_file():
            raise ConfigError(f"stream: applies to .npy files only, not to {source}")
        return _stream_npy(path, source, val_fraction, test_fraction, seed)
    classes = None
    labels: np.ndarray | None
    if path.is_dir() and formats.class_folders(path):     # one sub-folder per class: labelled images
        raw, labels, classes = formats.read_class_folders(path, image_size)
    else:
        raw, labels = _read_path(path, label_column, image_size)
    x, kind, shape, levels = formats.interpret_array(raw, source)
    return _build(source, x, labels, kind, shape, levels, val_fraction, test_fraction, seed, classes)
