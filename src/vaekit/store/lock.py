"""One writer per run directory: an ``fcntl.flock`` on ``RUN/.lock`` (:attr:`vaekit.store.layout.RunLayout.lock`).

``vaekit train`` holds it exclusively for the whole run (under torchrun, rank 0 holds it: only rank 0
writes), as does :func:`vaekit.fit` with a run directory while it trains; ``vaekit evaluate`` and
``vaekit figures`` hold it shared while they compute and write (they may run together: each writes
its own files, atomically, and none of them while a run trains). A process that cannot have the
lock does not wait: it gets a :class:`RunLockedError` (exit code 2) naming the holder: its process
id, host, command and start time, read from the kernel's table of locks (``/proc/locks`` on Linux).

The lock file is created empty and never written, so taking the lock (or failing to) changes no
file of an existing run. The lock belongs to the open file, so it dies with the process that holds
it, however that process ends (even SIGKILL): a killed run never leaves a stale lock, and the file
itself stays in the run directory (removing it would let two processes lock two different files of
the same name). Within one process the lock is re-entrant (the command holds it and
:func:`vaekit.fit` takes it again). Taking the lock creates the directory if needed, so "is this
directory free? then make it a run" happens under the lock, never as a check-then-act between two
processes.

``flock`` locks are advisory. On a network file system a lock held on another machine is named
only as "a process on another machine" (the local kernel does not list it), and some network file
systems do not share flock locks between machines at all; under torchrun only rank 0 takes the
lock, so a multi-node run is one writer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from vaekit.errors import ConfigError
from vaekit.store.layout import RunLayout

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLockedError", "run_lock", "refuse_if_locked", "lock_holder"]


class RunLockedError(ConfigError):
    """The run directory is locked by another process (named in the message)."""


# real path of a run directory -> [file descriptor, depth]: the locks this process holds
_held: dict[str, list[int]] = {}


def _lock_pids(path: Path) -> list[int]:
    """The processes that hold a flock on ``path``, as the kernel lists them (Linux); [] if unknown."""
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            with contextlib.suppress(ValueError):
                pids.append(int(fields[4]))
    return sorted({p for p in pids if p > 0})


def _command(pid: int) -> str:
    """``vaekit train`` (or the program's name) of process ``pid``, '' if unknown."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return ""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) in ("vaekit", "vaekit.cli") and i + 1 < len(argv):
            return f"vaekit {argv[i + 1]}"
    return " ".join(os.path.basename(a) for a in argv[:2])


def _started(pid: int) -> str:
    """When process ``pid`` started (local time), '' if unknown."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(boot + start_ticks / ticks))


def lock_holder(directory: str | os.PathLike[str]) -> str | None:
    """Who holds the lock of ``directory`` now (``pid 123 on host h (vaekit train, started …)``), as
    this machine's kernel lists it; None when no process on this machine holds it (or on systems
    without ``/proc/locks``)."""
    listed = _lock_pids(RunLayout.of(directory).lock)
    pids = [p for p in listed if p != os.getpid()] or listed          # another process first
    if not pids:
        return None
    pid, started = pids[0], _started(pids[0])
    details = [d for d in (_command(pid), f"started {started}" if started else "") if d]
    others = f" and {len(pids) - 1} other process(es)" if len(pids) > 1 else ""
    return (f"pid {pid} on host {socket.gethostname()}" + (f" ({', '.join(details)})" if details else "")
            + others)


def _locked_error(layout: RunLayout, option: str) -> RunLockedError:
    holder = lock_holder(layout.root) or "a process on another machine (or one this machine does not list)"
    return RunLockedError(f"{option}{layout.root}: in use by {holder}; wait for it to finish or choose another "
                          "directory")


def _busy(exc: OSError) -> bool:
    return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def refuse_if_locked(directory: str | os.PathLike[str], *, option: str = "") -> None:
    """A :class:`RunLockedError` naming the holder when another process holds the lock of
    ``directory`` (shared or exclusive); creates and changes nothing (a quick check before the real
    :func:`run_lock`)."""
    layout = RunLayout.of(directory)
    if fcntl is None or not layout.lock.is_file() or os.path.realpath(layout.root) in _held:
        return
    try:
        fd = os.open(layout.lock, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)          # released when fd closes, below
    except OSError as exc:
        if _busy(exc):
            raise _locked_error(layout, option) from None
    finally:
        os.close(fd)


def _open_lock(layout: RunLayout, option: str) -> int:
    root = layout.root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{option}{root}: exists and is not a directory") from None
    except OSError as exc:
        raise ConfigError(f"{option}{root}: cannot create the run directory ({exc.strerror or exc})") from None
    if not root.is_dir():
        raise ConfigError(f"{option}{root}: exists and is not a directory")
    try:
        return os.open(layout.lock, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ConfigError(f"{option}{layout.lock}: cannot create the run's lock file "
                          f"({exc.strerror or exc})") from None


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike[str], *, shared: bool = False, option: str = "") -> Iterator[Path]:
    """Hold the lock of run directory ``directory`` (created if missing) for the block, exclusively
    (a writer of the run) or ``shared`` (with other shared holders); yields the lock file's path.
    Another process holding it in a conflicting way: :class:`RunLockedError` at once. ``option``
    (e.g. ``"--out "``) prefixes the directory in error messages. Within one process the lock is
    re-entrant, whatever the mode."""
    layout = RunLayout.of(directory)
    if fcntl is None:  # pragma: no cover
        yield layout.lock
        return
    key = os.path.realpath(layout.root) if layout.root.is_dir() else None
    if key is not None and key in _held:
        _held[key][1] += 1
        try:
            yield layout.lock
        finally:
            _held[key][1] -= 1
        return
    fd = _open_lock(layout, option)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if not _busy(exc):
                raise ConfigError(f"{option}{layout.lock}: cannot lock the run directory "
                                  f"({exc.strerror or exc})") from None
            raise _locked_error(layout, option) from None
        key = os.path.realpath(layout.root)
        _held[key] = [fd, 1]
        try:
            yield layout.lock
        finally:
            del _held[key]
    finally:
        os.close(fd)                            # closing the file releases the lock
