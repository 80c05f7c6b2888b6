"""Readers for the file formats :func:`vaekit.data.load_dataset` accepts, and array validation.

Every reader returns ``(x, labels)`` with ``x`` a numeric array of shape ``(N, ...)`` and
``labels`` an int64 array of shape ``(N,)`` or ``None``; every malformed input raises
:class:`~vaekit.errors.DataError` with a one-line message that starts with the file's name.

What is accepted (and how :func:`interpret_array` turns it into examples):

* ``.npy``: one numeric array (no pickled objects).
* ``.npz``: the data under the key ``x``, ``data`` or ``arr_0`` (first found); optional integer
  labels under ``y`` or ``labels``.
* ``.csv``: comma-separated numeric cells; the first row is a header when one of its cells is not a
  number; blank lines are skipped; an optional label column (by 0-based index or header name).
* IDX (``.idx``, ``*-ubyte``, ``*.idx3-ubyte`` ..., and any ``.gz`` of those): the format of the
  MNIST distribution, big-endian, dtype codes 0x08 (uint8), 0x09 (int8), 0x0B (int16),
  0x0C (int32), 0x0D (float32), 0x0E (float64). An images file named like MNIST's
  (``train-images-idx3-ubyte[.gz]``) gets the labels of the file beside it named like
  ``train-labels-idx1-ubyte[.gz]`` when there is one.
* a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``; not recursive; sorted by name):
  grayscale (mode ``L``, or ``1`` which becomes ``L``) gives C=1, ``RGB`` (or palette ``P``, which
  is expanded to ``RGB``) gives C=3; other modes (e.g. ``RGBA``, 16-bit) are refused. A folder
  without image files of its own but with sub-folders of them is labelled: one sub-folder per class.

Array shapes: 2-D ``(N, D)`` is tabular (float32); 3-D ``(N, H, W)`` is a grayscale image batch
``(1, H, W)``; 4-D is ``(N, C, H, W)``, or ``(N, H, W, C)`` when axis 1 is not 1, 3 or 4 and the
last axis is (then it is transposed to channels-first). Images stored as uint8 (or integers in
0..255) have 256 levels; booleans become uint8 with 2 levels; float images keep ``levels=None``.

The readers live in one module per format and this module re-exports them:
:mod:`vaekit.data.idx`, :mod:`vaekit.data.numpy_files`, :mod:`vaekit.data.csv_files` and
:mod:`vaekit.data.images`; the array checks and :func:`interpret_array` are in
:mod:`vaekit.data.validation`. Which reader a path gets is decided by :mod:`vaekit.data.dataset`.
"""

from __future__ import annotations

# The last import also re-exports the private helper _one_line, which vaekit.data.mnist imports from here.
from vaekit.data.csv_files import read_csv
from vaekit.data.idx import idx_labels_path, is_idx_path, parse_idx, read_idx, write_idx
from vaekit.data.images import IMAGE_SUFFIXES, class_folders, read_class_folders, read_image_folder
from vaekit.data.numpy_files import read_npy, read_npz
from vaekit.data.validation import _one_line, as_labels, check_finite, interpret_array  # noqa: F401

__all__ = [
    "IMAGE_SUFFIXES",
    "as_labels",
    "check_finite",
    "class_folders",
    "idx_labels_path",
    "interpret_array",
    "is_idx_path",
    "parse_idx",
    "read_csv",
    "read_class_folders",
    "read_idx",
    "read_image_folder",
    "read_npy",
    "read_npz",
    "write_idx",
]
