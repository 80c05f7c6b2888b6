"""The table ``vaekit score`` writes, one row per example, as the rows are scored: CSV (always) or
Parquet (with pyarrow, ``pip install 'vaekit[parquet]'``).

Rows go to a temporary file beside the destination, which replaces it only once every row is written
(so an interrupted run leaves the old file, or none, never half a table). CSV values are written with
17 significant digits, which read back to the same float64 (``float(text)``); flags as 1 and 0.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from vaekit.errors import ConfigError
from vaekit.store.atomic import with_filename

__all__ = ["ScoreTable", "check_format"]

_PARQUET_ROW_GROUP = 65536


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return None
    return pyarrow


def check_format(path: Path) -> None:
    """A ``.parquet`` destination needs pyarrow: a ConfigError naming the file and the fix where it is missing."""
    if path.suffix.lower() == ".parquet" and _pyarrow() is None:
        raise ConfigError(f"--out {path}: writing Parquet needs pyarrow, which is not installed; "
                          "pip install 'vaekit[parquet]', or write a .csv file")


class ScoreTable:
    """A context manager writing columns ``names`` (``index`` first, the row number in the input) to
    ``path``, batch by batch with :meth:`write`; the file appears on a clean exit only."""

    def __init__(self, path: Path, names: list[str]) -> None:
        check_format(path)
        self.path, self.names = path, ["index", *names]
        self.parquet = path.suffix.lower() == ".parquet"
        self._tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self._rows = 0
        self._pending: list[dict[str, np.ndarray]] = []
        self._writer: Any = None
        self._fh: Any = None

    def __enter__(self) -> ScoreTable:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.parquet:
                self._fh = open(self._tmp, "x", encoding="utf-8", newline="")
                self._fh.write(",".join(self.names) + "\n")
        except OSError as exc:
            raise with_filename(exc, self.path) from exc
        return self

    def write(self, columns: dict[str, np.ndarray]) -> None:
        """Append the rows of ``columns`` (each (B,), every name of the table but ``index``)."""
        n = len(next(iter(columns.values())))
        block = {"index": np.arange(self._rows, self._rows + n, dtype=np.int64),
                 **{name: np.asarray(columns[name]) for name in self.names[1:]}}
        self._rows += n
        try:
            if self.parquet:
                self._pending.append(block)
                if sum(len(b["index"]) for b in self._pending) >= _PARQUET_ROW_GROUP:
                    self._flush_parquet()
            else:
                self._fh.write("".join(",".join(_text(block[name][i]) for name in self.names) + "\n"
                                       for i in range(n)))
        except OSError as exc:
            raise with_filename(exc, self.path) from exc

    def _flush_parquet(self) -> None:
        pa = _pyarrow()
        if not self._pending:
            return
        table = pa.table({name: np.concatenate([b[name] for b in self._pending]) for name in self.names})
        if self._writer is None:
            self._writer = pa.parquet.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table)
        self._pending = []

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is None:
                try:
                    self._finish()
                except OSError as error:
                    raise with_filename(error, self.path) from error
        finally:
            if self._fh is not None and not self._fh.closed:
                self._fh.close()
            if self._writer is not None and kind is not None:
                self._writer.close()
            self._tmp.unlink(missing_ok=True)

    def _finish(self) -> None:
        if self.parquet:
            if self._writer is None and not self._pending:     # no rows: an empty table of the columns
                self._pending = [{name: np.zeros(0) for name in self.names}]
            self._flush_parquet()
            self._writer.close()
        else:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        os.replace(self._tmp, self.path)


def _text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return format(float(value), ".17g")
