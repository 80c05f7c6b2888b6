"""A run's provenance, ``run.json`` (named by :class:`~vaekit.store.layout.RunLayout`): the commands that
trained it, when, for how long, with which versions, and how many examples each split held.

::

    {"format": "vaekit-run-info", "format_version": 1,
     "sessions": [{"command": ["vaekit", "train", "--data", "digits", ...],
                   "started": "2026-01-31T14:03:12Z", "finished": "2026-01-31T14:05:40Z",
                   "duration_s": 148.2, "resumed": false,
                   "versions": {"vaekit": "0.2.0", "torch": "2.13.0", "python": "3.11.2"}}],
     "splits": {"train": 1437, "val": 180, "test": 180}}

``vaekit train`` appends one session when it has trained and evaluated (the first command, then one
per ``--resume``); ``duration_s`` = finished - started, the wall-clock time of that command up to
the end of its evaluation. ``splits`` are the example counts of the last session's data.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vaekit.errors import DataError
from vaekit.store.atomic import atomic_write_json
from vaekit.store.documents import read_json
from vaekit.store.layout import RunLayout

__all__ = ["FORMAT", "software_versions", "timestamp", "new_session", "record_session", "read_run_info"]

FORMAT = "vaekit-run-info"
FORMAT_VERSION = 1


def software_versions() -> dict[str, str]:
    """The versions that matter to reproduce a run: vaekit, torch and Python."""
    import torch

    from vaekit import __version__

    return {"vaekit": __version__, "torch": torch.__version__, "python": platform.python_version()}


def timestamp(seconds: float) -> str:
    """``seconds`` since the epoch as ISO-8601 UTC to the second, e.g. ``2026-01-31T14:03:12Z``."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_session(argv: Sequence[str], *, started: float, finished: float | None = None,
                resumed: bool = False) -> dict[str, Any]:
    """One training command: its words (``argv``, program name first), start and end (seconds since
    the epoch; ``finished`` defaults to now), their difference in seconds and the software versions."""
    end = time.time() if finished is None else finished
    return {"command": [str(word) for word in argv], "started": timestamp(started), "finished": timestamp(end),
            "duration_s": round(end - started, 3), "resumed": bool(resumed), "versions": software_versions()}


def _empty() -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "sessions": [], "splits": {}}


def record_session(layout: RunLayout, session: Mapping[str, Any], splits: Mapping[str, int]) -> Path:
    """Append ``session`` to the run's run.json (created if missing; an unreadable one is replaced, as
    its history is lost anyway and the end of a training command must not fail on it), set the split
    sizes to ``splits`` and write it atomically; return its path."""
    try:
        doc = read_run_info(layout) or _empty()
    except DataError:
        doc = _empty()
    doc["sessions"] = [*doc["sessions"], dict(session)]
    doc["splits"] = {name: int(count) for name, count in splits.items()}
    return atomic_write_json(layout.run_info, doc)


def read_run_info(layout: RunLayout) -> dict[str, Any] | None:
    """The run's provenance, or None when it has no run.json (a run trained before vaekit recorded it).
    A file that is not such a document is a DataError naming it."""
    path = layout.run_info
    if not path.is_file():
        return None
    doc = read_json(path, DataError)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: not a vaekit run-info document (expected \"format\": {FORMAT!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise DataError(f"{path}: format version {version!r} is not one this vaekit reads (1 to {FORMAT_VERSION})")
    sessions, splits = doc.get("sessions"), doc.get("splits")
    if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
        raise DataError(f"{path}: \"sessions\" must be a list of objects")
    if not isinstance(splits, dict):
        raise DataError(f"{path}: \"splits\" must be an object")
    return doc
