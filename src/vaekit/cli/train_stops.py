"""How a ``vaekit train`` command ends when it is stopped: the stop signal that ended it, a lost or
stalled peer under torchrun (one line each), and the line that says how to resume."""

from __future__ import annotations

import argparse
import shlex
import sys

from vaekit.store.layout import RunLayout

__all__ = ["stop_signal", "lost_peers", "report_stop"]


def stop_signal(exc: BaseException) -> int | None:
    """The stop signal (SIGINT, SIGTERM, SIGHUP) that ended the command with ``exc``, or None.
    Under torchrun, a rank whose peer stopped first may see the peer's departure (a RuntimeError
    from a collective) before its own signal: that counts as the signal it received."""
    from vaekit.training import distributed, interrupts

    if isinstance(exc, KeyboardInterrupt):
        return interrupts.exit_code(exc) - 128
    received = interrupts.received_signal()
    if received is not None and isinstance(exc, RuntimeError) and distributed.launched_by_torchrun():
        return received
    return None


def lost_peers(exc: BaseException, args: argparse.Namespace) -> str | None:
    """Under torchrun, the one-line reason when a collective failed because another rank stalled
    (no answer within --dist-timeout) or went away; None for any other error."""
    from vaekit.training import distributed

    if not (isinstance(exc, RuntimeError) and distributed.launched_by_torchrun()):
        return None
    text = str(exc).lower()
    if "timed out" in text or "timeout" in text:            # gloo: "Timed out waiting", "Application timeout"
        timeout = getattr(args, "dist_timeout_s", None)
        within = f" within --dist-timeout {timeout:g} s" if timeout is not None else ""
        return (f"rank {distributed.env_rank()}: no answer from the other ranks{within} (a rank stalled or its "
                "machine failed); torchrun stops the run, or restarts it with --max-restarts and --auto-resume")
    if "closed by peer" in text or "reset by peer" in text or "connection closed" in text:
        return (f"rank {distributed.env_rank()}: lost the connection to another rank (it stopped or its machine "
                "failed); torchrun stops the run, or restarts it with --max-restarts and --auto-resume")
    return None


def report_stop(args: argparse.Namespace, signum: int) -> None:
    """One line on stderr: what stopped training and, when there is a run, how to resume it."""
    from vaekit.training.interrupts import signal_name

    what = "interrupted" if signum == 2 else f"stopped by {signal_name(signum)}"
    run_dir = getattr(args, "run_dir", None)
    if run_dir is not None and RunLayout.of(run_dir).config.is_file():
        what += (f"; resume with: vaekit train --out {shlex.quote(str(run_dir))} --resume"
                 + (" --trust-code" if args.trust_code else ""))
    print(f"vaekit train: {what}", file=sys.stderr)
