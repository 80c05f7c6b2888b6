"""The ``vaekit`` command: ``vaekit SUBCOMMAND --help`` for each subcommand.

Exit codes: 0 success; 2 a usage or input error (one line on stderr, no traceback); 1 otherwise.
The subcommands live in modules with ``register(subparsers)``, which adds their parsers and sets
``func`` (called with the parsed namespace, returns the exit code): :mod:`~vaekit.cli.train_cmd`
(its options in :mod:`~vaekit.cli.train_options`, ``--resume`` in :mod:`~vaekit.cli.train_resume`),
:mod:`~vaekit.cli.commands` (evaluate, sample, reconstruct, encode, interpolate; what they share in
:mod:`~vaekit.cli.run_access`) and :mod:`~vaekit.cli.figures_cmd`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from vaekit.errors import VaekitError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2), as for every other input error."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"vaekit {self.prog.split()[-1]}: error: {message}\n" if " " in self.prog
                  else f"vaekit: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from vaekit.cli import commands, train_cmd

    parser = _Parser(prog="vaekit", description="Variational autoencoders on PyTorch, verified against closed forms.")
    parser.add_argument("--version", action="version", version=f"vaekit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    train_cmd.register(sub)
    commands.register(sub)
    for subparser in sub.choices.values():
        subparser.set_defaults(parser=subparser)
    return parser


def _version() -> str:
    from vaekit import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by ``python -m vaekit``)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # report it as the subcommand's error, not the top-level parser's
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except VaekitError as exc:
        print(f"vaekit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"vaekit {args.command}: error: {exc.filename or exc}: file not found", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaekit {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError as exc:
        hint = "; a .npy training file larger than memory trains with --stream" if args.command == "train" else ""
        print(f"vaekit {args.command}: error: out of memory ({exc or 'allocation failed'}){hint}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: one line, exit 1 (traceback with VAEKIT_DEBUG=1)
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        print(f"vaekit {args.command}: internal error: {type(exc).__name__}: {exc} "
              f"(set VAEKIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
