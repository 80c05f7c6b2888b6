"""Atomic file writes: a crash at any moment leaves either the old file or the new one, whole.

The data go to a temporary file in the destination's folder (created like any new file, mode
0o666 less the umask), are flushed and fsynced, then the temporary file is renamed over the
destination (``os.replace``, atomic on POSIX and Windows). On any failure the temporary file is
removed and the destination is untouched; an OSError (a read-only file system, a full disk, a file
size limit) is raised with the destination as its ``filename``, so that the message names the file
the user asked for rather than the temporary one.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "remove_stale_temporaries",
           "with_filename"]


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
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
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
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
