"""The ``vaekit`` command: ``vaekit SUBCOMMAND --help`` for each subcommand.

Exit codes: 0 success; 2 a usage or input error (one line on stderr, no traceback); 130, 143, 129
stopped by SIGINT (Ctrl-C), SIGTERM, SIGHUP; 1 otherwise. ``vaekit`` without arguments is a usage
error: it lists the commands, one line each, on stderr and exits 2.
The subcommands live in modules with ``register(subparsers)``, which adds their parsers and sets
``func`` (called with the parsed namespace, returns the exit code): :mod:`~vaekit.cli.train_cmd`
(its options in :mod:`~vaekit.cli.train_options`, ``--resume`` in :mod:`~vaekit.cli.train_resume`),
:mod:`~vaekit.cli.commands` (sample, reconstruct, encode, interpolate; what they share in
:mod:`~vaekit.cli.run_access`), :mod:`~vaekit.cli.evaluate_cmd`, :mod:`~vaekit.cli.figures_cmd` and
:mod:`~vaekit.cli.report_cmd`.

Building the parser imports no torch (``vaekit --help`` and ``vaekit CMD --help`` answer in a
fraction of a second): the command modules import the heavy modules inside the functions that run a
command, and the option table takes the choices that live in torch modules by name, checking them
when a value is parsed (:mod:`~vaekit.cli.train_options`). Help texts taken from docstrings are
shown without their reST markup (:mod:`~vaekit.cli.help_text`).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vaekit.allocator import keep_freed_memory
from vaekit.cli.help_text import plain
from vaekit.errors import VaekitError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2), as for every other input error."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"vaekit {self.prog.split()[-1]}: error: {message}\n" if " " in self.prog
                  else f"vaekit: error: {message}\n")

    def format_help(self) -> str:  # noqa: D102 - argparse API: the help without reST markup
        return plain(super().format_help())


class _CommandList(argparse.HelpFormatter):
    """The top-level help: each command on one line under "commands", without argparse's extra
    COMMAND line above them."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=20)   # room for "disentanglement"

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(choice) for choice in action._get_subactions())
        return super()._format_action(action)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from vaekit.cli import commands, disentanglement_cmd, report_cmd, score_cmd, train_cmd, tune_cmd

    parser = _Parser(prog="vaekit", description="Variational autoencoders on PyTorch, verified against closed forms.",
                     epilog="'vaekit COMMAND --help' shows a command's options and an example.",
                     formatter_class=_CommandList)
    parser.add_argument("--version", action="version", version=f"vaekit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, title="commands")
    sub.required = True
    train_cmd.register(sub)
    commands.register(sub)
    report_cmd.register(sub)
    score_cmd.register(sub)
    tune_cmd.register(sub)
    disentanglement_cmd.register(sub)
    for subparser in sub.choices.values():
        subparser.set_defaults(parser=subparser)
    return parser


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


#: errno -> what a user reads: file system conditions that are the input's or the machine's fault.
_FILE_SYSTEM_ERRORS = {
    errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large (the file-size limit, ulimit -f, was reached)",
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EISDIR: "is a directory",
    errno.ENAMETOOLONG: "file name too long", errno.ELOOP: "too many levels of symbolic links",
    errno.ENOTDIR: "not a directory", errno.EEXIST: "already exists",
}


def _outside_fault(exc: Exception, command: str) -> str | None:
    """The one-line message for an error that is not vaekit's: a file-system condition (read-only,
    full, over the file-size limit, a file where a folder is needed, ...) naming the file, or an
    allocation that failed in torch (out of memory); None for anything else."""
    if isinstance(exc, OSError) and exc.errno in _FILE_SYSTEM_ERRORS:
        reason = _FILE_SYSTEM_ERRORS[exc.errno]
        if exc.filename is None:
            return f"cannot write: {reason}"
        name = os.fsdecode(exc.filename)
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):      # mkdir met a file where a folder is needed
            blocker = next((p for p in (name, *map(str, Path(name).parents)) if os.path.isfile(p)), None)
            if blocker is not None:
                reason = f"{blocker} is a file, not a directory" if blocker != name else "is a file, not a directory"
        return f"{name}: {reason}"
    message = str(exc)
    if isinstance(exc, RuntimeError) and ("can't allocate memory" in message or "not enough memory" in message
                                          or type(exc).__name__ == "OutOfMemoryError"):
        size = re.search(r"tried to allocate (\d+) bytes", message)
        what = f"tried to allocate {_bytes(int(size.group(1)))}" if size else " ".join(message.split())[:200]
        hint = "; a .npy training file larger than memory trains with --stream" if command == "train" else ""
        return f"out of memory ({what}){hint}"
    return None


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} bytes"


def _lenient_output() -> None:
    """Print what the terminal's encoding cannot hold (a file name that is not valid UTF-8) as
    backslash escapes rather than fail after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if getattr(stream, "errors", None) == "strict" and reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _version() -> str:
    from vaekit import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (``vaekit`` and ``python -m vaekit`` call it through
    :func:`vaekit.cli.exits.run`, which also ends the process)."""
    started = time.time()
    _lenient_output()
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):     # bare `vaekit`: the commands, and a usage error
        sys.stderr.write(parser.format_help())
        return 2
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # report it as the subcommand's error, not the top-level parser's
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv, args.started = ["vaekit", *(sys.argv[1:] if argv is None else argv)], started  # run.json records them
    try:
        keep_freed_memory()
        return int(args.func(args) or 0)
    except VaekitError as exc:                 # worded with the command's options where the error has that form
        print(f"vaekit {args.command}: error: {getattr(exc, 'command_line', None) or exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"vaekit {args.command}: error: {exc.filename or exc}: file not found", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:           # Ctrl-C: 130; SIGTERM, SIGHUP (TrainingInterrupted): 143, 129
        signum = getattr(exc, "signum", 2)
        what = "interrupted" if signum == 2 else f"stopped by {_signal_name(signum)}"
        print(f"vaekit {args.command}: {what}", file=sys.stderr)
        return 128 + signum
    except MemoryError as exc:
        hint = "; a .npy training file larger than memory trains with --stream" if args.command == "train" else ""
        print(f"vaekit {args.command}: error: out of memory ({exc or 'allocation failed'}){hint}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: one line, exit 1 (traceback with VAEKIT_DEBUG=1)
        fault = _outside_fault(exc, args.command)
        if fault is not None:                   # the file system or the memory, not vaekit: exit 2
            print(f"vaekit {args.command}: error: {fault}", file=sys.stderr)
            return 2
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        print(f"vaekit {args.command}: internal error: {type(exc).__name__}: {exc} "
              f"(set VAEKIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
