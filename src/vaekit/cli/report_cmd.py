"""``vaekit report RUN_DIR [RUN_DIR ...]``: runs side by side on one self-contained HTML page
(:mod:`vaekit.viz.compare`), read from their directories: no model is loaded, no data read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vaekit.errors import ConfigError

__all__ = ["register", "DEFAULT_OUT"]

DEFAULT_OUT = Path("report-compare.html")


def _cmd_report(args: argparse.Namespace) -> int:
    from vaekit.viz.compare import write_comparison

    out: Path = args.out
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out {out}: unknown extension {out.suffix or '(none)'!r}; use .html")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory")
    if out.exists() and not args.force:
        raise ConfigError(f"--out {out}: file exists; pass --force to overwrite it")
    print(f"wrote {write_comparison(args.run_dirs, out)}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``vaekit report`` to ``subparsers``."""
    p = subparsers.add_parser(
        "report", help="compare runs side by side in one HTML page",
        description="Write one self-contained HTML page with the runs side by side: the summary of each "
                    "run's evaluation (log p(x) ± standard error with K importance samples, ELBO, posterior "
                    "gap, bits/dim, active units; the best of each row marked), their commands, dates, "
                    "durations, versions, data and split sizes, the settings in which they differ, their "
                    "validation ELBO per epoch on one plot, and their figures side by side.\n\nexample:\n"
                    "  vaekit report runs/digits-k2 runs/digits-k8 --out k2-vs-k8.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", metavar="RUN_DIR", type=Path, nargs="+", help="run directories written by "
                   "'vaekit train'")
    p.add_argument("--out", metavar="FILE", type=Path, default=DEFAULT_OUT,
                   help=f"the HTML page to write (default: {DEFAULT_OUT} in the working folder)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_cmd_report)
