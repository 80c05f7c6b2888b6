"""Reader of numeric CSV files, with an optional header row and an optional integer label column.

Cells are comma-separated numbers; the first row is a header when one of its cells is not a number;
blank lines are skipped; the label column is chosen by 0-based index or header name.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from vaekit.data.validation import _name, _one_line
from vaekit.errors import ConfigError, DataError


def _parse_float(cell: str) -> float | None:
    """Parse one CSV cell as a float, or return None when it is not a number."""
    try:
        return float(cell)
    except ValueError:
        return None


def read_csv(
    path: str | os.PathLike[str], label_column: int | str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a numeric CSV file; return ``(float64 array (N, D), int64 labels or None)``.

    ``label_column`` is a 0-based column index (an int, or a string of digits as given on a
    command line) or a header name; that column is removed from the features and must hold
    integers. Rows in error messages are numbered by their line in the file (from 1).
    """
    source = _name(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [(i, row) for i, row in enumerate(csv.reader(fh), start=1) if row]
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not a UTF-8 text file ({_one_line(exc)})") from exc
    except csv.Error as exc:
        raise DataError(f"{source}: malformed CSV ({_one_line(exc)})") from exc
    if not rows:
        raise DataError(f"{source}: empty file")

    header: list[str] | None = None
    if any(_parse_float(c) is None for c in rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise DataError(f"{source}: no data rows (only a header)")
    ncols = len(header) if header is not None else len(rows[0][1])

    label_index: int | None = None
    if label_column is not None:
        if isinstance(label_column, str) and not label_column.lstrip("-").isdigit():
            if header is None or label_column not in header:
                raise ConfigError(
                    f"label_column: {source} has no column named {label_column!r}"
                    + (f" (columns: {', '.join(header)})" if header else " (no header row)")
                )
            label_index = header.index(label_column)
        else:
            label_index = int(label_column)
            if not -ncols <= label_index < ncols:
                raise ConfigError(
                    f"label_column: index {label_index} is out of range for {source} with {ncols} columns"
                )
            label_index %= ncols
        if ncols < 2:
            raise ConfigError(f"label_column: {source} has a single column, nothing left as data")

    values = np.empty((len(rows), ncols), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != ncols:
            raise DataError(f"{source}: row {line} has {len(row)} columns, expected {ncols}")
        for c, cell in enumerate(row):
            v = _parse_float(cell)
            if v is None:
                what = "an empty cell" if not cell.strip() else f"non-numeric cell {cell.strip()!r}"
                col = f"column {c + 1}" + (f" ({header[c]!r})" if header else "")
                raise DataError(f"{source}: row {line}, {col} has {what}")
            values[r, c] = v

    labels = None
    if label_index is not None:
        y = values[:, label_index]
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            bad = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0])
            raise DataError(
                f"{source}: row {rows[bad][0]}, label column {label_index + 1} has non-integer "
                f"value {float(y[bad]):g}"
            )
        labels = y.astype(np.int64)
        values = np.delete(values, label_index, axis=1)
    return values, labels


def read_column_names(path: str | os.PathLike[str], label_column: int | str | None = None) -> list[str] | None:
    """The feature names of a CSV file: its header row without the label column, or None when the file has
    no header (or cannot be read: names are a courtesy of the figures, never an error)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = next((row for row in csv.reader(fh) if row), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if first is None or all(_parse_float(c) is not None for c in first):
        return None
    names = [c.strip() for c in first]
    if label_column is not None:
        index = names.index(label_column) if isinstance(label_column, str) and label_column in names else (
            int(label_column) if str(label_column).lstrip("-").isdigit() else None)
        if index is None or not -len(names) <= index < len(names):
            return None
        del names[index]
    return names
