"""``vaekit figures RUN_DIR``: redraw a run's figures and its report.html from a split of its data.

The training curves come from the run's metrics history (:func:`vaekit.store.metrics.read_history`);
the report (:func:`vaekit.viz.run_report.write_run_report`) reads everything else from the run
directory, as at the end of ``vaekit train``: the same summary, provenance, best epoch and history.
The file names are the run's :class:`~vaekit.store.layout.RunLayout`.
"""

from __future__ import annotations

import argparse
from typing import Any

from vaekit.cli import run_access as ra
from vaekit.cli.plain_progress import heartbeat, progress_for
from vaekit.store.lock import run_lock
from vaekit.store.metrics import read_history

__all__ = ["register"]


def _cmd_figures(args: argparse.Namespace) -> int:
    from vaekit.viz.figures import write_figures, write_run_report  # here: the parser imports no torch

    run, device = ra.load(args)
    if args.label is not None:                       # checked before anything is drawn
        from vaekit.models.conditioning import label_index

        label_index(args.label, run.config.num_classes, run.config.class_names, name="--label")
    x, labels, spec = ra.examples(run, args, device, args.limit)
    ra.labels_for(run, labels, spec, device)          # a conditional run: the examples need labels
    scatter = ra.training_scatter(run, args, device)  # the latent scatter: up to 5000 training examples
    layout = run.layout
    with run_lock(layout.root, shared=True):         # no training run meanwhile
        history = read_history(layout)
        with heartbeat("figures", progress_for(True)):    # without a terminal: a line every 20 s
            figures = write_figures(layout.root, model=run.model, x=x, labels=labels, history=history,
                                    seed=args.seed, scatter=scatter, sample_label=args.label,
                                    columns=spec.column_names())       # a CSV's header names the heatmaps' columns
            report = write_run_report(layout.root, figures)   # summary, best epoch, history: from the run directory
    for path in figures.values():
        print(f"wrote {path}")
    print(f"wrote {report}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``vaekit figures`` to ``subparsers``."""
    p = ra.add_parser(subparsers, "figures", "redraw the figures and report.html of a run",
                      "Redraw RUN_DIR/figures/*.png (training curves from RUN_DIR/metrics.jsonl if present, "
                      "reconstructions, prior samples, latent scatter, latent traversals) from a split of the "
                      "data, and RUN_DIR/report.html (the summary of RUN_DIR/evaluation-SPLIT.json, the run's "
                      "command and versions, the best epoch and the training history). Replaces the previous "
                      "figures and report.",
                      "vaekit figures runs/digits")
    ra.add_data_options(p)
    p.add_argument("--seed", type=ra.non_negative_int, default=0, help="seed of the prior samples (default: 0)")
    p.add_argument("--label", metavar="Y", default=None,
                   help="a conditional run: prior samples of class Y only (an index 0..C-1 or a class name); "
                        "default: a grid of the classes, one z per row decoded in every class")
    p.set_defaults(func=_cmd_figures)
