"""Progress without a terminal: a plain line on stderr at a steady interval (logs, ``nohup``, CI).

On a terminal the commands show tqdm bars. When stderr is not a terminal a bar would be a stream of carriage
returns, so nothing was shown at all, and a long phase (an epoch of a slow model, the evaluation at K = 5000,
the figures) was minutes of silence. :class:`PlainProgress` takes the bar's place (the same calls: ``update``,
``set_postfix``, ``close``) and a thread of its own prints, every :func:`interval` seconds,

    train: 1234/5500 steps (22%), 35.2 steps/s, ETA 0:02:01, epoch 3, loss 41.2
    evaluate: 0/180 examples (0%), 0 examples/s, 0:00:40 elapsed

whether or not the work advanced since the last line. ``VAEKIT_PROGRESS_SECONDS`` sets the interval
(default 20 s; a number > 0). The library prints nothing: the commands hand :func:`progress_for` to
:func:`vaekit.fit` and :func:`vaekit.evaluate` as their ``progress``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from vaekit.errors import ConfigError

__all__ = ["PlainProgress", "interval", "progress_for", "heartbeat"]

#: Seconds between two lines unless ``VAEKIT_PROGRESS_SECONDS`` says otherwise.
DEFAULT_SECONDS = 20.0


def interval() -> float:
    """The seconds between two lines: ``VAEKIT_PROGRESS_SECONDS``, else :data:`DEFAULT_SECONDS`."""
    text = os.environ.get("VAEKIT_PROGRESS_SECONDS", "")
    if not text:
        return DEFAULT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"VAEKIT_PROGRESS_SECONDS: expected a number of seconds > 0, got {text!r}")
    return value


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """A tqdm-like counter that prints its state as one plain line every ``every`` seconds (module docstring)."""

    def __init__(self, total: int | None = None, initial: int = 0, desc: str = "", unit: str = "it",
                 disable: bool = False, every: float | None = None, file: TextIO | None = None,
                 **_tqdm_options: Any):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self._first, self._started = initial, time.monotonic()
        self._postfix = ""
        self._file = file if file is not None else sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not disable:
            self._every = interval() if every is None else every
            self._thread = threading.Thread(target=self._run, name=f"vaekit-progress-{desc}", daemon=True)
            self._thread.start()

    def line(self) -> str:
        """The state now: done/total, rate, ETA (or the time elapsed), the postfix."""
        elapsed = time.monotonic() - self._started
        rate = (self.n - self._first) / elapsed if elapsed > 0 else 0.0
        units = f"{self.unit}s"
        if self.total:
            done = f"{self.n}/{self.total} {units} ({100 * self.n / self.total:.0f}%)"
            text = f"{self.desc}: {done}, {rate:.3g} {units}/s"
            text += f", ETA {_clock((self.total - self.n) / rate)}" if rate > 0 else f", {_clock(elapsed)} elapsed"
        else:
            text = f"{self.desc}: {_clock(elapsed)} elapsed"
        return text + (f", {self._postfix}" if self._postfix else "")

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with contextlib.suppress(OSError, ValueError):      # a closed or full stream: progress is not worth a crash
                self._file.write(self.line() + "\n")
                self._file.flush()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self._postfix = ", ".join(f"{name} {value}" for name, value in values.items())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_for(enabled: bool) -> bool | Callable[..., PlainProgress]:
    """What a command hands to ``progress``: False when ``enabled`` is (--no-progress, a rank other than 0),
    True (tqdm bars) on a terminal, else the :class:`PlainProgress` class."""
    if not enabled:
        return False
    if sys.stderr.isatty():
        return True
    interval()                                  # a bad VAEKIT_PROGRESS_SECONDS stops the command before it works
    return PlainProgress


@contextlib.contextmanager
def heartbeat(desc: str, progress: bool | Callable[..., Any]) -> Iterator[None]:
    """A phase without steps (the figures): with plain progress, its elapsed time every interval."""
    if progress is PlainProgress:
        with PlainProgress(desc=desc):
            yield
    else:
        yield
