"""``vaekit figures RUN_DIR``: redraw a run's figures and its report.html from a split of its data.

The training curves come from the run's metrics history (:func:`vaekit.store.metrics.read_history`),
the report's metrics from the last epoch and from every stored evaluation; the file names are the
run's :class:`~vaekit.store.layout.RunLayout`.
"""

from __future__ import annotations

import argparse
from typing import Any

from vaekit.cli import run_access as ra
from vaekit.errors import DataError
from vaekit.store.documents import read_json
from vaekit.store.layout import RunLayout
from vaekit.store.lock import run_lock
from vaekit.store.metrics import read_history
from vaekit.viz.figures import write_figures, write_run_report

__all__ = ["register"]


def _report_metrics(layout: RunLayout, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last epoch's numbers and those of each evaluation-SPLIT.json, for the report's table."""
    metrics: dict[str, Any] = {}
    if history:
        last = history[-1]
        for key, value in last.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"last epoch: {key}"] = value
    for split in ra.SPLITS:
        path = layout.evaluation(split)
        if not path.is_file():
            continue
        doc = read_json(path, DataError)
        if not isinstance(doc, dict):
            raise DataError(f"{path}: expected a JSON object, got {type(doc).__name__}")
        for key, value in doc.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("seed", "limit"):
                metrics[f"{split}: {key}"] = value
    return metrics


def _cmd_figures(args: argparse.Namespace) -> int:
    run, device = ra.load(args)
    x, labels, _ = ra.examples(run, args, device, args.limit)
    layout = run.layout
    with run_lock(layout.root, shared=True):         # no training run meanwhile
        history = read_history(layout)
        figures = write_figures(layout.root, model=run.model, x=x, labels=labels, history=history, seed=args.seed)
        prep = run.preprocessing
        config = {"model": run.config.to_dict(), "data": run.data.to_dict(), "train": run.train,
                  "preprocessing": {"kind": prep.kind, "levels": prep.levels, "binarize": prep.binarize,
                                    "dequantize": prep.dequantize, "standardised": prep.mean is not None}}
        report = write_run_report(layout.root, metrics=_report_metrics(layout, history), figures=figures,
                                  config=config)
    for path in figures.values():
        print(f"wrote {path}")
    print(f"wrote {report}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``vaekit figures`` to ``subparsers``."""
    p = ra.add_parser(subparsers, "figures", "redraw the figures and report.html of a run",
                      "Redraw RUN_DIR/figures/*.png (training curves from RUN_DIR/metrics.jsonl if present, "
                      "reconstructions, prior samples, latent scatter, latent traversals) from a split of the "
                      "data, and RUN_DIR/report.html with the metrics of the last epoch and of any "
                      "RUN_DIR/evaluation-SPLIT.json. Replaces the previous figures and report.",
                      "vaekit figures runs/digits")
    ra.add_data_options(p)
    p.add_argument("--seed", type=ra.non_negative_int, default=0, help="seed of the prior samples (default: 0)")
    p.set_defaults(func=_cmd_figures)
