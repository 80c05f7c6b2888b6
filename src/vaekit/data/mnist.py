"""MNIST and Fashion-MNIST: the four standard IDX files, read from a folder or downloaded.

Files are looked for in ``data_dir`` as ``<name>`` or ``<name>.gz`` (raw or gzip), e.g.
``train-images-idx3-ubyte.gz``. With ``download=True`` the missing ones are fetched from the
mirrors in order (the first that answers wins), each written to a hidden temporary file in
``data_dir``, verified by md5, and only then renamed into place; a failed or mismatching
download leaves nothing behind, and an existing file is never overwritten.

A downloaded ``.gz`` passes verification when the md5 of its bytes is the published checksum, or
(where known) when the md5 of its uncompressed bytes is the published checksum of the original
uncompressed file, so a mirror that recompressed identical content is accepted. The size of every
file is known (the uncompressed bytes of 60,000 or 10,000 28x28 images or labels), so a download
is read to at most a gzip of that size plus one byte, and a mirror that sends (or announces) more
is refused and the next one tried; verifying a recompressed file inflates at most the known size.
The https mirrors come first; the plain-http originals are a fallback, checked by the same md5s.

The mirror list is, in order of precedence: the ``mirrors=`` argument; the environment variable
``VAEKIT_MNIST_MIRROR`` (``VAEKIT_FASHION_MNIST_MIRROR`` for Fashion-MNIST), a comma-separated
list of base URLs; the module constants :data:`MNIST_MIRRORS` / :data:`FASHION_MNIST_MIRRORS`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

import numpy as np

from vaekit.data.formats import _one_line, read_idx
from vaekit.errors import DataError, MissingDataError

__all__ = [
    "FASHION_MNIST_MIRRORS",
    "IDX_FILES",
    "MNIST_MIRRORS",
    "download_idx_files",
    "load_idx_dataset",
]

#: https mirrors first; the original plain-http sites last (every file is checked against its
#: published md5 whichever mirror serves it).
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)

#: The four files, in download order: train images, train labels, test images, test labels.
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_TIMEOUT_S = 60.0
_CHUNK = 1 << 20

#: Bytes of each file uncompressed (the same for MNIST and Fashion-MNIST: 60,000 and 10,000 28x28
#: images and their labels, with the IDX header).
_RAW_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}


def _max_download(base: str) -> int:
    """The most bytes a download of ``base``.gz may have: a gzip of the known uncompressed bytes is
    never larger than them plus deflate's block overhead (5 bytes per 64 KiB stored) and a header;
    the bound is generous (0.1 % and 1 KiB) and still refuses anything much larger."""
    raw = _RAW_SIZES[base]
    return raw + raw // 1000 + 1024


@dataclass(frozen=True)
class _Source:
    """Where a named IDX dataset comes from and how to verify it."""

    env_var: str
    gz_md5: dict[str, str]  # published md5 of each .gz file
    raw_md5: dict[str, str]  # published md5 of the uncompressed bytes, where known


_SOURCES: dict[str, _Source] = {
    "mnist": _Source(
        env_var="VAEKIT_MNIST_MIRROR",
        gz_md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        raw_md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion-mnist": _Source(
        env_var="VAEKIT_FASHION_MNIST_MIRROR",
        gz_md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        raw_md5={},
    ),
}


def _source(name: str) -> _Source:
    """Return the download source of ``name`` ("mnist" or "fashion-mnist")."""
    try:
        return _SOURCES[name]
    except KeyError:
        raise DataError(f"{name}: not an IDX dataset (known: {', '.join(_SOURCES)})") from None


def _existing(data_dir: Path, base: str) -> Path | None:
    """Return the existing file for ``base`` in ``data_dir`` (raw preferred over .gz), or None."""
    for candidate in (data_dir / base, data_dir / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _resolve_mirrors(name: str, mirrors: Sequence[str] | None) -> list[str]:
    """Apply the precedence argument > environment variable > module constant."""
    src = _source(name)
    if mirrors is None:
        env = os.environ.get(src.env_var, "").strip()
        if env:
            mirrors = [m.strip() for m in env.split(",") if m.strip()]
        else:
            # read the module constants at call time, so that patching them works
            mirrors = MNIST_MIRRORS if name == "mnist" else FASHION_MNIST_MIRRORS
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _md5_file(path: Path) -> str:
    """Return the hex md5 of a file's bytes."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _md5_gunzip(path: Path, limit: int) -> str | None:
    """Return the hex md5 of a gzip file's uncompressed bytes, or None if it is not valid gzip or
    inflates to more than ``limit`` bytes (reading stops there)."""
    h = hashlib.md5()
    size = 0
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                size += len(chunk)
                if size > limit:
                    return None
                h.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def _verify(tmp: Path, base: str, src: _Source) -> tuple[bool, str]:
    """Check a downloaded .gz against the published checksums; return (ok, md5 of the bytes)."""
    got = _md5_file(tmp)
    if got == src.gz_md5[base]:
        return True, got
    raw = src.raw_md5.get(base)
    if raw is not None and _md5_gunzip(tmp, _RAW_SIZES[base]) == raw:
        return True, got
    return False, got


class _TooLarge(Exception):
    """A mirror sent (or announced) more bytes than the file can have."""


def _fetch(url: str, tmp_fh: BinaryIO, desc: str, progress: bool, limit: int) -> None:
    """Stream ``url`` into the open binary file ``tmp_fh``, with an optional tqdm bar; more than
    ``limit`` bytes (announced or received: at most ``limit`` + 1 are read) is :class:`_TooLarge`."""
    from tqdm.auto import tqdm

    request = Request(url, headers={"User-Agent": "vaekit"})
    with urlopen(request, timeout=_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > limit:
            raise _TooLarge(f"announces {total} bytes, more than the {limit} the file can have")
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress, leave=False) as bar:
            while chunk := response.read(min(_CHUNK, limit + 1 - received)):
                received += len(chunk)
                if received > limit:
                    raise _TooLarge(f"sent more than the {limit} bytes the file can have")
                tmp_fh.write(chunk)
                bar.update(len(chunk))


def _download_one(base: str, data_dir: Path, mirrors: list[str], src: _Source, progress: bool) -> Path:
    """Download ``base``.gz into ``data_dir`` from the first mirror that serves it; verify; rename."""
    fname = f"{base}.gz"
    final = data_dir / fname
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror + fname
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=data_dir)
        except OSError as exc:
            raise DataError(f"{data_dir}: cannot write a temporary file ({_one_line(exc)})") from exc
        tmp = Path(tmp_name)
        keep = False
        try:
            with os.fdopen(fd, "wb") as fh:
                try:
                    _fetch(url, fh, fname, progress, _max_download(base))
                except _TooLarge as exc:
                    failures.append(f"{url}: {exc}")
                    continue
                except HTTPError as exc:
                    exc.close()
                    failures.append(f"{url}: HTTP {exc.code}")
                    continue
                except URLError as exc:
                    failures.append(f"{url}: {' '.join(str(exc.reason).split())}")
                    continue
                except (OSError, ValueError, HTTPException) as exc:
                    failures.append(f"{url}: {_one_line(exc)}")
                    continue
            ok, got = _verify(tmp, base, src)
            if not ok:
                raise DataError(
                    f"{final}: checksum mismatch for the download from {url} "
                    f"(md5 {got}, expected {src.gz_md5[base]}); the file was discarded"
                )
            if final.exists():  # appeared meanwhile: never overwrite it
                return final
            os.replace(tmp, final)
            keep = True
            return final
        finally:
            if not keep:
                tmp.unlink(missing_ok=True)
    raise DataError(f"{final}: could not download from any mirror ({'; '.join(failures) or 'no mirrors given'})")


def download_idx_files(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] | None = None,
    progress: bool = False,
) -> list[Path]:
    """Download the IDX files of ``name`` ("mnist" or "fashion-mnist") missing from ``data_dir``.

    Creates ``data_dir`` if needed; files already present (raw or .gz) are left alone. Returns
    the paths of the four files. Raises :class:`DataError` when a file cannot be fetched from
    any mirror or fails its checksum (nothing partial is left behind).
    """
    src = _source(name)
    data_dir = Path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{data_dir}: cannot create the data folder ({_one_line(exc)})") from exc
    urls = _resolve_mirrors(name, mirrors)
    paths = []
    for base in IDX_FILES:
        found = _existing(data_dir, base)
        paths.append(found if found is not None else _download_one(base, data_dir, urls, src, progress))
    return paths


def load_idx_dataset(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    download: bool = False,
    mirrors: Sequence[str] | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(train_images, train_labels, test_images, test_labels)`` of MNIST/Fashion-MNIST.

    Images are uint8 ``(N, 28, 28)``; labels int64 in 0..9. Missing files raise
    :class:`DataError` naming them unless ``download=True``.
    """
    _source(name)
    data_dir = Path(data_dir)
    missing = [b for b in IDX_FILES if _existing(data_dir, b) is None]
    if missing:
        if not download:
            files = f"{name}: missing {', '.join(f'{b}[.gz]' for b in missing)} in {data_dir}"
            raise MissingDataError(
                f"{files}; pass download=True to fetch them from the standard mirrors (MD5-checked), or data_dir= "
                "a folder that holds them",
                f"{files}; add --download to fetch them from the standard mirrors (MD5-checked), or --data-dir DIR "
                "for a folder that holds them",
            )
        download_idx_files(name, data_dir, mirrors=mirrors, progress=progress)

    arrays = []
    for base in IDX_FILES:
        path = _existing(data_dir, base)
        if path is None:  # removed by someone else after the download
            raise DataError(f"{name}: {base}[.gz] disappeared from {data_dir}")
        arr, _ = read_idx(path)
        if "images" in base:
            if arr.ndim != 3 or arr.dtype != np.uint8:
                raise DataError(f"{path}: expected uint8 images (N, H, W), got {arr.dtype} {arr.shape}")
        else:
            if arr.ndim != 1 or arr.dtype != np.uint8:
                raise DataError(f"{path}: expected uint8 labels (N,), got {arr.dtype} {arr.shape}")
            if arr.size and int(arr.max()) > 9:
                raise DataError(f"{path}: labels must lie in 0..9, found {int(arr.max())}")
            arr = arr.astype(np.int64)
        arrays.append((path, arr))
    (pi, xi), (pl, yl), (pti, xt), (ptl, yt) = arrays
    for (p_img, x), (p_lab, y) in (((pi, xi), (pl, yl)), ((pti, xt), (ptl, yt))):
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{p_lab}: {y.shape[0]} labels for {x.shape[0]} images in {p_img}")
    if xi.shape[1:] != xt.shape[1:]:
        raise DataError(f"{pti}: image size {xt.shape[1:]} differs from {xi.shape[1:]} of {pi}")
    return xi, yl, xt, yt
