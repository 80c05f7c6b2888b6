"""The process's way out: :func:`run` is the ``vaekit`` console command and ``python -m vaekit``.

:func:`vaekit.cli.main` turns a Ctrl-C during a command into one line and exit code 130. What it cannot
reach is the interpreter's own shutdown after it returns: an interrupt there (a user pressing Ctrl-C
just after "wrote report.html") would surface as "Exception ignored in atexit callback" tracebacks
from library finalizers, with exit code 0, or kill the process by the signal once Python has put the
default handler back. :func:`run` therefore ends the process itself: after ``main`` it installs a
SIGINT handler that writes one line and leaves with ``os._exit(130)``, waits for the threads that are
not daemons, runs the ``atexit`` callbacks, flushes stdout and stderr and leaves with ``os._exit``, so
that there is no later moment for an interrupt to fall into. The command's files are all written (and
fsynced) by then; only the garbage collector's final pass is skipped, which frees nothing the
operating system does not.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any, NoReturn

__all__ = ["run"]


def _command() -> str:
    """The subcommand named on the command line (for the one-line message), or ``""``."""
    return next((a for a in sys.argv[1:] if not a.startswith("-")), "")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):      # a closed or broken pipe: nothing more to say
            pass


def _interrupted(reported: bool) -> NoReturn:
    """Leave at once with exit code 130, with one line unless ``main`` already wrote it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)            # a second Ctrl-C cannot cut this short
    _flush()
    if not reported:
        name = _command()
        try:
            os.write(2, f"vaekit{' ' + name if name else ''}: interrupted\n".encode())
        except OSError:
            pass
    os._exit(130)


def _finish(code: int) -> NoReturn:
    """Threads, ``atexit`` callbacks and flushes with Ctrl-C turned into :func:`_interrupted`, then exit."""
    def late(signum: int, frame: Any) -> None:
        _interrupted(code == 130)

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:   # not where the user ignores SIGINT
        signal.signal(signal.SIGINT, late)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    _flush()
    os._exit(code)


def run() -> NoReturn:
    """``sys.exit(main())`` without a moment where Ctrl-C escapes as a traceback (module docstring)."""
    code = 1
    try:
        from vaekit.cli import main

        code = main()
        _finish(code)
    except KeyboardInterrupt:                               # between main's own handler and the one above
        _interrupted(code == 130)
    except SystemExit as exc:                               # argparse's --help, --version, usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        try:
            _finish(code)
        except KeyboardInterrupt:
            _interrupted(False)
