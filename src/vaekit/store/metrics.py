"""A run's training history on disk: one row per epoch, in two files the run's
:class:`~vaekit.store.layout.RunLayout` names.

* ``metrics.jsonl`` — one JSON object per line, every key of the row;
* ``metrics.csv``   — a header line of ``fields`` and one line per row (for spreadsheets).

:func:`rewrite_metrics` replaces both files atomically (a resumed run rewrites the history it
continues from, so no row is ever duplicated); :func:`append_metrics` adds one epoch's row to
each; :func:`read_history` reads the JSON lines back.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaekit.errors import DataError
from vaekit.store.atomic import atomic_write_bytes, with_filename
from vaekit.store.documents import DuplicateKeyError, loads
from vaekit.store.layout import RunLayout

__all__ = ["rewrite_metrics", "append_metrics", "read_history"]


def _json_line(row: Mapping[str, Any]) -> str:
    return json.dumps(dict(row)) + "\n"


def rewrite_metrics(layout: RunLayout, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    """Replace the run's metrics.jsonl and metrics.csv by ``rows`` (each atomically); the CSV has the
    columns ``fields`` (a row with another key is a ValueError, as for :class:`csv.DictWriter`)."""
    atomic_write_bytes(layout.metrics_jsonl, "".join(_json_line(row) for row in rows).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(layout.metrics_csv, buf.getvalue().encode())


def append_metrics(layout: RunLayout, row: dict[str, Any], fields: Sequence[str]) -> None:
    """Append one epoch's ``row`` to metrics.jsonl and metrics.csv (the CSV header first when the
    file is new or empty)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    try:
        with layout.metrics_jsonl.open("a") as fh:
            fh.write(_json_line(row))
    except OSError as exc:                      # a full disk or a file size limit: name the file
        raise with_filename(exc, layout.metrics_jsonl) from exc
    new = not layout.metrics_csv.exists() or layout.metrics_csv.stat().st_size == 0
    try:
        with layout.metrics_csv.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(fields), lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow(row)
    except OSError as exc:
        raise with_filename(exc, layout.metrics_csv) from exc


def read_history(path: str | os.PathLike[str] | RunLayout) -> list[dict[str, Any]]:
    """The epochs recorded in a metrics.jsonl file (one JSON object per line; a RunLayout stands for
    its metrics.jsonl); [] if the file is missing. A malformed line is a DataError naming it."""
    path = path.metrics_jsonl if isinstance(path, RunLayout) else Path(path)
    if not path.is_file():
        return []
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        except DuplicateKeyError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc})") from None
        except RecursionError:
            raise DataError(f"{path}:{lineno}: not valid JSON (nested too deeply)") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line")
        rows.append(row)
    return rows
