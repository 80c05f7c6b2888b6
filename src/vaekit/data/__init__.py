"""The data layer: load datasets (built-in, MNIST-style IDX, files, image folders) and preprocess them.

* :func:`load_dataset` returns a :class:`Dataset` with raw (unscaled) train/val/test arrays;
* :func:`fit_preprocessing` picks a :class:`Preprocessing` for a likelihood, which is stored with a
  model as JSON and turns raw arrays into model inputs (``prepare``) and draws the per-batch
  randomness (``augment``: dynamic binarisation or uniform dequantisation);
* :func:`as_examples` turns a tensor, numpy array, torch Dataset or DataLoader into a float tensor
  of examples (N, *data_shape).

Malformed data raise :class:`vaekit.errors.DataError`, impossible options
:class:`vaekit.errors.ConfigError`, each with a one-line message naming the file or option.
"""

from vaekit.data.dataset import KNOWN_DATASETS, Dataset, load_dataset, split_indices
from vaekit.data.inputs import as_examples
from vaekit.data.mnist import (
    FASHION_MNIST_MIRRORS,
    IDX_FILES,
    MNIST_MIRRORS,
    download_idx_files,
    load_idx_dataset,
)
from vaekit.data.preprocessing import LIKELIHOODS, Preprocessing, fit_preprocessing

__all__ = [
    "FASHION_MNIST_MIRRORS",
    "IDX_FILES",
    "KNOWN_DATASETS",
    "LIKELIHOODS",
    "MNIST_MIRRORS",
    "Dataset",
    "Preprocessing",
    "as_examples",
    "download_idx_files",
    "fit_preprocessing",
    "load_dataset",
    "load_idx_dataset",
    "split_indices",
]
