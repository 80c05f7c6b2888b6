"""vaekit's JSON documents: a JSON object tagged with its ``format`` (what it is) and its
``format_version`` (which layout of it), read back with both checked.

A model's config.json (``"vaekit-model"``) and a training checkpoint's JSON half
(``"vaekit-training-state"``) are such documents; they are written with
:func:`vaekit.store.atomic.atomic_write_json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaekit.errors import CheckpointError

__all__ = ["read_versioned_json", "read_json", "loads", "DuplicateKeyError"]


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (``{"k": 1, "k": 2}``): which value is meant is ambiguous,
    and Python's ``json`` would silently keep the last."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r} in a JSON object")
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses a key given twice in one object (:class:`DuplicateKeyError`)."""
    return json.loads(text, object_pairs_hook=_unique)


def read_json(path: Path, error: type[Exception] = CheckpointError, *, label: str | None = None) -> Any:
    """The JSON value in ``path``; a file that is not UTF-8 JSON, nested too deeply for the parser or
    with a key given twice in one object, is an ``error`` whose one-line message starts with ``label``
    (default: the path)."""
    name = str(path) if label is None else label
    try:
        return loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, DuplicateKeyError) as exc:
        raise error(f"{name}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{name}: not valid JSON (nested too deeply)") from None


def read_versioned_json(path: Path, *, fmt: str, max_version: int, what: str, missing: str,
                        min_version: int = 1) -> dict[str, Any]:
    """Read a vaekit JSON document whose ``format`` is ``fmt`` and whose ``format_version`` lies in
    ``min_version..max_version``; any other file is a CheckpointError naming it (``missing``: the
    not-found text)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: {missing}")
    try:
        doc = read_json(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CheckpointError(f"{path}: not a vaekit {what}")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > max_version:
        raise CheckpointError(f"{path}: format version {version!r} is newer than this vaekit reads "
                              f"({max_version}); upgrade vaekit")
    if version < min_version:
        raise CheckpointError(f"{path}: format version {version} is not one this vaekit reads "
                              f"({min_version} to {max_version})")
    return doc
