"""Reader of a folder of image files (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``) into one uint8 batch.

The folder is not searched recursively and files are sorted by name. A folder that holds no image
files but sub-folders of them is a labelled data set, one sub-folder per class
(:func:`read_class_folders`: labels 0..C−1 in the sub-folders' sorted order, named by them). Grayscale (mode ``L``, or
``1`` which becomes ``L``) gives C=1, ``RGB`` (or palette ``P``, which is expanded to ``RGB``)
gives C=3; other modes (e.g. ``RGBA``, 16-bit) are refused. An image of more pixels than Pillow's
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 179 million) is refused before it
is decoded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np

from vaekit.data.validation import _name, _one_line
from vaekit.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _validate_image_size(image_size: object) -> tuple[int, int]:
    """Return ``image_size`` as ``(H, W)`` positive ints, or raise :class:`ConfigError`."""
    try:
        h, w = cast(Any, image_size)  # anything: a non-pair raises TypeError or ValueError here
        if isinstance(h, bool) or isinstance(w, bool) or int(h) != h or int(w) != w:
            raise TypeError
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise ConfigError(f"image_size: expected (height, width), got {image_size!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"image_size: height and width must be positive, got {(h, w)}")
    return h, w


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name (hidden files left out)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def class_folders(folder: str | os.PathLike[str]) -> list[Path]:
    """The class sub-folders of ``folder`` (sorted by name, hidden ones left out) when it holds no image
    files of its own, else ``[]`` (a plain folder of images)."""
    folder = Path(folder)
    if _image_files(folder):
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image_folder(
    folder: str | os.PathLike[str], image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, None]:
    """Read every image file directly in ``folder`` into a uint8 array ``(N, C, H, W)``.

    All images must share one mode (grayscale or RGB) and, unless ``image_size=(H, W)`` is
    given (then each is resized with bilinear filtering), one size.
    """
    folder = Path(folder)
    size = _validate_image_size(image_size) if image_size is not None else None
    files = _image_files(folder)
    if not files:
        raise DataError(
            f"{_name(folder)}: folder has no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    return _read_images(files, size), None


def read_class_folders(
    folder: str | os.PathLike[str], image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read a folder of class sub-folders (:func:`class_folders`): the images of every sub-folder, in
    the sub-folders' order, as one uint8 array ``(N, C, H, W)``, their int64 labels (the index of
    their sub-folder) and the class names (the sub-folders' names). One mode and size for all, as
    :func:`read_image_folder`; a sub-folder without image files is a DataError."""
    folder = Path(folder)
    size = _validate_image_size(image_size) if image_size is not None else None
    subfolders = class_folders(folder)
    if not subfolders:
        raise DataError(f"{_name(folder)}: folder has no class sub-folders of images")
    files: list[Path] = []
    labels: list[int] = []
    for label, sub in enumerate(subfolders):
        found = _image_files(sub)
        if not found:
            raise DataError(f"{_name(sub)}: class folder has no image files ({', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [label] * len(found)
    return _read_images(files, size), np.asarray(labels, dtype=np.int64), tuple(p.name for p in subfolders)


def _read_images(files: list[Path], size: tuple[int, int] | None) -> np.ndarray:
    """The images of ``files`` (one mode; one size unless ``size`` resizes them), uint8 ``(N, C, H, W)``."""
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    first_mode: str | None = None
    first_size: tuple[int, int] | None = None
    for p in files:
        try:
            with warnings.catch_warnings():     # Pillow only warns between 1x and 2x its limit: refuse those too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                opened = Image.open(p)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{_name(p)}: image refused, too large to decode ({_one_line(exc)})") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"{_name(p)}: cannot read image ({_one_line(exc)})") from exc
        try:
            with opened:
                im: Image.Image = opened
                im.load()
                mode = im.mode
                if mode == "1":
                    im = im.convert("L")
                elif mode == "P":
                    im = im.convert("RGB")
                if im.mode not in ("L", "RGB"):
                    raise DataError(
                        f"{_name(p)}: unsupported image mode {mode} (expected grayscale or RGB)"
                    )
                if first_mode is None:
                    first_mode, first_size = im.mode, im.size
                elif im.mode != first_mode:
                    raise DataError(
                        f"{_name(p)}: image mode {im.mode} differs from {first_mode} of {_name(files[0])}"
                    )
                if size is not None:
                    if im.size != (size[1], size[0]):
                        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                elif im.size != first_size:
                    raise DataError(
                        f"{_name(p)}: image size {im.size[0]}x{im.size[1]} differs from "
                        f"{first_size[0]}x{first_size[1]} of {_name(files[0])}; "  # type: ignore[index]
                        "pass image_size to resize"
                    )
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{_name(p)}: cannot read image ({_one_line(exc)})") from exc
        arrays.append(arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1)))
    return np.stack(arrays)
