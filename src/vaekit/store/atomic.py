"""Atomic file writes: a crash at any moment leaves either the old file or the new one, whole.

The data go to a temporary file in the destination's folder (created like any new file, mode
0o666 less the umask), are flushed and fsynced, then the temporary file is renamed over the
destination (``os.replace``, atomic on POSIX and Windows). On any failure the temporary file is
removed and the destination is untouched; an OSError (a read-only file system, a full disk, a file
size limit) is raised with the destination as its ``filename``, so that the message names the file
the user asked for rather than the temporary one.

The temporary name is ``.NAME.RANDOM.tmp`` while that fits the file system's limit on a name
(``NAME_MAX``, 255 bytes on most); for a longer NAME it is a prefix of NAME and a hash of the whole
name (:func:`temporary_stem`), so that any legal target name can be written atomically.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "remove_stale_temporaries",
           "with_filename", "temporary_stem", "name_max"]

#: Bytes a temporary name adds to its stem: ``.`` + stem + ``.`` + 32 hex digits + ``.tmp``.
_TEMP_OVERHEAD = 1 + 1 + 32 + 4
#: Bytes of the hash that stands for the part of a long name left out of its temporary name.
_HASH_HEX = 16


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name (in bytes) the file system of ``folder`` takes: ``NAME_MAX``, 255 where
    the system does not say (or ``folder`` does not exist yet)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def temporary_stem(name: str, limit: int = 255) -> str:
    """The part of a temporary name that stands for the target ``name``: ``name`` itself when
    ``.name.<32 hex>.tmp`` fits in ``limit`` bytes, else the longest prefix of ``name`` (whole UTF-8
    characters) followed by ``~`` and 16 hex digits of the SHA-256 of ``name``, so that it fits and
    two long names that share a prefix still have distinct temporaries."""
    raw = os.fsencode(name)
    if len(raw) + _TEMP_OVERHEAD <= limit:
        return name
    keep = max(0, limit - _TEMP_OVERHEAD - 1 - _HASH_HEX)
    prefix = raw[:keep].decode("utf-8", errors="ignore")   # a character cut in two (or not UTF-8): left out
    return f"{prefix}~{hashlib.sha256(raw).hexdigest()[:_HASH_HEX]}"


def with_filename(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` (same class and errno) naming ``path``: for an error raised on a temporary file or on
    a write, which names no file or the wrong one."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, os.fspath(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{temporary_stem(path.name, name_max(path.parent))}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise with_filename(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise with_filename(exc, path) from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8; a lone surrogate (a file name that is
    not valid UTF-8, decoded by Python with ``surrogateescape``) is written as a backslash escape."""
    return atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``atomic_write_bytes`` of ``obj`` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Delete the temporary files that interrupted writes of ``path`` left behind (``.NAME.*.tmp``
    beside it); call only where no other process writes ``path``. Returns how many were removed."""
    path = Path(path)
    removed = 0
    stem = temporary_stem(path.name, name_max(path.parent)) if path.parent.is_dir() else path.name
    for tmp in path.parent.glob(f".{glob.escape(stem)}.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
