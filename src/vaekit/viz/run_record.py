"""Everything a report shows of one run, read from its directory (no model is loaded, no user code run).

:func:`read_run` gathers config.json (the model, and the data, preprocessing and training options),
metrics.jsonl (the history), every evaluation-*.json (training's evaluation-SPLIT.json and those of
``vaekit evaluate --save``), run.json (the commands, dates, durations,
versions and split sizes, :mod:`vaekit.store.run_info`) and the figures with their captions
(figures/captions.json, a list of ``{"file", "caption"}``, else every PNG in figures/ with a caption
from its name). What the evaluations report is described once, in :data:`QUANTITIES`: label, unit
and which way is better.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaekit.errors import DataError
from vaekit.store.documents import read_json
from vaekit.store.layout import RunLayout
from vaekit.store.metrics import read_history
from vaekit.store.run_info import read_run_info

__all__ = ["Quantity", "QUANTITIES", "SUMMARY_KEYS", "EVALUATION_SPLITS", "RunRecord", "read_run",
           "default_caption", "figure_title", "best_epoch", "value_of"]

NATS = "nats per example"


@dataclass(frozen=True)
class Quantity:
    """One number of an evaluation (a key of evaluation-SPLIT.json): how to name it, its unit, and
    ``better`` = +1 when higher is better, -1 when lower is, 0 when neither; ``se``: the key of its
    standard error, if any."""

    key: str
    label: str
    unit: str
    better: int = 0
    se: str | None = None


#: The quantities of an evaluation, in the order the reports show them.
QUANTITIES: tuple[Quantity, ...] = (
    Quantity("log_likelihood", "log p(x)", NATS, +1, se="log_likelihood_se"),
    Quantity("elbo", "ELBO", NATS, +1),
    Quantity("posterior_gap", "posterior gap KL(q(z|x) ‖ p(z|x))", NATS, -1),
    Quantity("bits_per_dim", "bits/dim", "bits per dimension", -1),
    Quantity("active_units", "active units", "latent dims with Cov_x(E_q[z_u]) > 0.01"),
    Quantity("reconstruction", "reconstruction E_q[log p(x|z)]", NATS, +1),
    Quantity("kl", "KL(q(z|x) ‖ p(z))", NATS),
    Quantity("exact_log_likelihood", "exact log p(x)", NATS, +1),
    Quantity("exact_posterior_gap", "exact posterior gap", NATS, -1),
    Quantity("refined_elbo", "refined ELBO", NATS, +1),
    Quantity("refined_log_likelihood", "refined log p(x)", NATS, +1),
    Quantity("amortisation_gap", "amortisation gap", NATS, -1, se="amortisation_gap_se"),
    Quantity("approximation_gap", "approximation gap", NATS, -1, se="approximation_gap_se"),
    Quantity("log_jacobian", "log-Jacobian of the preprocessing", NATS),
)

#: The quantities of the summary at the top of a report.
SUMMARY_KEYS = ("log_likelihood", "elbo", "posterior_gap", "bits_per_dim", "active_units")

#: The evaluation files a report looks for, in the order of preference for its summary.
EVALUATION_SPLITS = ("test", "val", "all", "train")

_CAPTIONS = {
    "training-curves": "Training curves per epoch (nats per example)",
    "reconstructions": "Reconstructions: examples (top) and E[x|z] at z = E_q[z] (bottom)",
    "prior-samples": "Prior samples: E[x|z] for draws z ~ p(z)",
    "latent-scatter": "Latent space: posterior means E_q[z]",
    "latent-traversals": "Latent traversals: E[x|z] while one latent dim sweeps a range",
}


def default_caption(path: Path) -> str:
    """The caption of a figure without a recorded one, from its file name."""
    return _CAPTIONS.get(path.stem, path.stem.replace("-", " ").replace("_", " ").capitalize())


def figure_title(path: Path) -> str:
    """A short title of a figure from its file name: its default caption up to the first colon."""
    return default_caption(path).split(":", 1)[0]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def best_epoch(history: list[dict[str, Any]]) -> tuple[int, float] | None:
    """The epoch whose weights the run kept, and its validation ELBO: the first epoch with the
    highest finite ``val_elbo`` (the rule of :func:`vaekit.training.fit`: a strictly higher one
    replaces it); None when no epoch has one."""
    best: tuple[int, float] | None = None
    for i, row in enumerate(history):
        value = _number(row.get("val_elbo"))
        epoch = row.get("epoch", i + 1)
        if value is not None and (best is None or value > best[1]):
            best = (int(epoch) if isinstance(epoch, int) else i + 1, value)
    return best


@dataclass(frozen=True)
class RunRecord:
    """One run directory as the reports see it."""

    root: Path
    config: dict[str, Any]                     # config.json: {"model": ..., "extra": {...}}
    history: list[dict[str, Any]]              # metrics.jsonl, one dict per epoch
    evaluations: dict[str, dict[str, Any]]     # NAME -> evaluation-NAME.json: the splits in EVALUATION_SPLITS
                                               # order (training's), then those of vaekit evaluate --save
    info: dict[str, Any] | None                # run.json, or None for a run trained before it was recorded
    figures: list[tuple[str, Path]]            # (caption, file)

    @property
    def name(self) -> str:
        return self.root.resolve().name or str(self.root)

    def section(self, name: str) -> dict[str, Any]:
        """``model``, or a section of config.json's ``extra``: ``data``, ``preprocessing``, ``train``."""
        where = self.config if name == "model" else self.config.get("extra")
        value = where.get(name) if isinstance(where, dict) else None
        return value if isinstance(value, dict) else {}

    @property
    def summary_split(self) -> str | None:
        """The name of the evaluation the summary shows: the first of :data:`EVALUATION_SPLITS` evaluated
        at the end of training, else the first saved by ``vaekit evaluate --save``."""
        return next(iter(self.evaluations), None)

    @property
    def summary(self) -> dict[str, Any] | None:
        split = self.summary_split
        return None if split is None else self.evaluations[split]

    @property
    def best(self) -> tuple[int, float] | None:
        return best_epoch(self.history)

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return list(self.info["sessions"]) if self.info else []

    @property
    def splits(self) -> dict[str, Any]:
        return dict(self.info["splits"]) if self.info else {}


def _read_figures(layout: RunLayout) -> list[tuple[str, Path]]:
    captions_path = layout.figure_captions
    if captions_path.is_file():
        entries = read_json(captions_path, DataError)
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("caption"), str)
                for e in entries):
            raise DataError(f"{captions_path}: expected a JSON list of {{\"file\": NAME, \"caption\": TEXT}}")
        named = [(e["caption"], layout.figures / e["file"]) for e in entries]
        return [(caption, path) for caption, path in named if path.parent == layout.figures and path.is_file()]
    if not layout.figures.is_dir():
        return []
    known = list(_CAPTIONS)                       # vaekit's own figures in the order they are drawn, then the rest
    paths = sorted(layout.figures.glob("*.png"), key=lambda p: (known.index(p.stem) if p.stem in known else len(known),
                                                                p.name))
    return [(default_caption(path), path) for path in paths]


def read_run(run_dir: str | os.PathLike[str]) -> RunRecord:
    """The run in ``run_dir``. A folder that is missing or holds no config.json, or a file of it that
    is not what vaekit wrote, is a DataError whose one line names it."""
    layout = RunLayout.of(run_dir)
    if not layout.root.is_dir():
        raise DataError(f"{layout.root}: no such run directory")
    if not layout.config.is_file():
        raise DataError(f"{layout.root}: not a vaekit run directory (no {layout.config.name})")
    config = read_json(layout.config, DataError)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise DataError(f"{layout.config}: not a vaekit model configuration (no \"model\" object)")
    canonical = [layout.evaluation(split) for split in EVALUATION_SPLITS]
    saved = sorted(p for p in layout.root.glob("evaluation-*.json") if p not in canonical)
    evaluations: dict[str, dict[str, Any]] = {}
    for path in (*canonical, *saved):
        if path.is_file():
            doc = read_json(path, DataError)
            if not isinstance(doc, dict):
                raise DataError(f"{path}: expected a JSON object, got {type(doc).__name__}")
            evaluations[path.stem.removeprefix("evaluation-")] = doc
    return RunRecord(root=layout.root, config=config, history=read_history(layout), evaluations=evaluations,
                     info=read_run_info(layout), figures=_read_figures(layout))


def value_of(doc: Mapping[str, Any], key: str) -> float | None:
    """``doc[key]`` as a finite float, else None."""
    return _number(doc.get(key))
