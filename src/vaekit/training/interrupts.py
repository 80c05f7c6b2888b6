"""Stop signals during training: Ctrl-C (SIGINT), and SIGTERM and SIGHUP (what torchrun, Slurm and
Kubernetes send to end a job), handled alike. Each becomes a :class:`TrainingInterrupted` (a
KeyboardInterrupt carrying the signal number), held back while files are written or while a step
commits its update, so that an interrupt always finds the state of a completed step.

A process stops once: after the first stop signal has raised :class:`TrainingInterrupted`, the
ones that follow (torchrun's agent repeats the SIGTERM that Slurm already sent to every process) are
only recorded, so that they cannot cut short the checkpoint or the exit that the first one started.

Only signals left at their default disposition are taken over (SIGINT's ``default_int_handler``,
SIG_DFL, or this module's :func:`raise_interrupt`): an ignored SIGHUP (``nohup``) stays ignored and
an application's own handler stays in charge. Handlers are installed in the main thread only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "TrainingInterrupted", "raise_interrupt", "deferred_interrupt", "InterruptGate",
           "stop_signals_raise", "received_signal", "forget_received", "exit_code", "signal_name", "watch_parent"]

#: The signals that stop training with a checkpoint: SIGINT (Ctrl-C), SIGTERM, SIGHUP.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_received: list[int] = []          # the stop signals received by this process (most recent last)
_stopping: list[bool] = [False]    # whether a stop signal has raised TrainingInterrupted already


class TrainingInterrupted(KeyboardInterrupt):
    """A stop signal (``signum``: SIGINT, SIGTERM or SIGHUP) ended training; a KeyboardInterrupt, so
    code that handles Ctrl-C handles it too. The command exits with 128 + ``signum``."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, etc."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(exc: BaseException | None = None) -> int:
    """The exit code of a process stopped by ``exc`` (or, when it carries none, by the last stop
    signal received): 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP)."""
    signum = getattr(exc, "signum", None)
    if signum is None:
        signum = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else (received_signal() or signal.SIGINT)
    return 128 + int(signum)


def received_signal() -> int | None:
    """The last stop signal this process received through these handlers, or None."""
    return _received[-1] if _received else None


def forget_received() -> None:
    """Forget the stop signals received so far (a command, or a training, starts afresh)."""
    _received.clear()
    _stopping[0] = False


def _stop(signum: int) -> None:
    """Raise TrainingInterrupted for the first stop signal only; the later ones are just recorded."""
    if not _stopping[0]:
        _stopping[0] = True
        raise TrainingInterrupted(signum)


def _note(signum: int) -> None:
    _received.append(int(signum))


def raise_interrupt(signum: int, frame: Any) -> None:
    """A signal handler: raise :class:`TrainingInterrupted` (what SIGINT's default handler does, for
    every stop signal)."""
    _note(signum)
    _stop(signum)


def _ours(handler: Any) -> bool:
    """Whether ``handler`` is a default disposition this module may take over (or one of its own)."""
    return (handler is signal.SIG_DFL or handler is signal.default_int_handler or handler is raise_interrupt
            or isinstance(handler, (InterruptGate, _Deferral)))


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`TrainingInterrupted` as Ctrl-C raises
    KeyboardInterrupt (where they have their default disposition; main thread only). When the block
    ends because of a stop, they are not restored: the process is on its way out, and a repeated
    SIGTERM (torchrun's agent sends one to every worker when the first of them exits, and after
    Slurm's own) must not kill it with the signal's default action instead of the exit code the
    first one chose. They are then recorded only, or, in a torchrun worker, ignored: Python resets
    its own handlers to the default action when the interpreter shuts down, and a worker's shutdown
    (torch, the process group) can take seconds."""
    previous: dict[signal.Signals, Any] = {}
    if _main_thread():
        for signum in STOP_SIGNALS:
            if signum != signal.SIGINT and signal.getsignal(signum) is signal.SIG_DFL:
                previous[signum] = signal.signal(signum, raise_interrupt)
    try:
        yield
    finally:
        after = signal.SIG_IGN if "TORCHELASTIC_RUN_ID" in os.environ else _note_only
        for signum, handler in previous.items():
            signal.signal(signum, after if _stopping[0] else handler)


def _note_only(signum: int, frame: Any) -> None:
    """A signal handler for a process that is stopping already: record the signal, nothing more."""
    _note(signum)


class _Deferral:
    """The handler of :func:`deferred_interrupt`: note the signal, act later."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        _note(signum)
        self.received.append(signum)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back the stop signals while files are written; raise :class:`TrainingInterrupted`
    afterwards if one arrived. An already pending interrupt is not affected."""
    if not _main_thread():
        yield
        return
    deferral = _Deferral()
    previous: dict[signal.Signals, Any] = {}
    for signum in STOP_SIGNALS:
        if _ours(signal.getsignal(signum)):
            previous[signum] = signal.signal(signum, deferral)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if deferral.received:
        _stop(deferral.received[0])


class InterruptGate:
    """A stop signal during the step loop: :class:`TrainingInterrupted` at once, except while a step
    commits its update (optimizer, scheduler, buffers, totals), when it is held back to the end of
    the commit, so that an interrupt always finds the state of a completed step. Installed (as a
    context manager) only over default handlers, in the main thread."""

    def __init__(self) -> None:
        self.holding = False
        self.pending: int | None = None
        self.previous: dict[signal.Signals, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        _note(signum)
        if self.holding:
            if self.pending is None:
                self.pending = signum
        else:
            _stop(signum)

    def __enter__(self) -> None:
        forget_received()                       # a training starts: not stopping
        if _main_thread():
            for signum in STOP_SIGNALS:
                handler = signal.getsignal(signum)
                if _ours(handler) and not isinstance(handler, (InterruptGate, _Deferral)):
                    self.previous[signum] = signal.signal(signum, self)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            _stop(signum)


def watch_parent(period_s: float = 1.0) -> threading.Thread | None:
    """Under torchrun: a daemon thread that sends this process SIGTERM when its parent (the torchrun
    agent) dies, so that a worker whose agent was killed (even with SIGKILL) stops like one whose
    agent sent it SIGTERM, instead of training on as an orphan. Returns the thread (None without a
    torchrun agent, i.e. without ``TORCHELASTIC_RUN_ID`` in the environment)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    parent = os.getppid()
    if parent <= 1:
        return None

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(period_s):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="vaekit-watch-torchrun-agent", daemon=True)
    thread.start()
    return thread
