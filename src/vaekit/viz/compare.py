"""Several runs side by side on one self-contained HTML page (``vaekit report RUN_DIR ...``).

Top to bottom: the summary (log p(x) ± standard error with K, ELBO, posterior gap, bits/dim, active
units; one column per run, the best value of each row marked, a warning when the runs were evaluated
on different data), the runs' provenance (command, date, duration, versions, data, split sizes, model,
training), the settings in which they differ (the shared ones collapsed), their validation ELBO per
epoch on one plot, and each figure of the runs side by side. Like a run's report, every summary number
carries its exact value (``data-key``, ``data-value``, and ``data-run``: the run's column name).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vaekit.store.atomic import atomic_write_text
from vaekit.viz import run_text as words
from vaekit.viz.curves import validation_elbo_png
from vaekit.viz.report import Cell, Markup, bytes_uri, data_uri, esc, figure_html, html_page, html_table
from vaekit.viz.run_record import QUANTITIES, SUMMARY_KEYS, RunRecord, figure_title, read_run, value_of
from vaekit.viz.run_report import facts_rows, number_span, short_config

__all__ = ["run_names", "render_comparison", "write_comparison"]

_ABSENT = "—"


def run_names(records: Sequence[RunRecord]) -> list[str]:
    """A column name per run: its folder's name, or the path as given where two names collide."""
    names = [r.name for r in records]
    return [name if names.count(name) == 1 else str(r.root) for name, r in zip(names, records, strict=True)]


def _tagged(span: Markup, run: str) -> Markup:
    return Markup(span.replace("<span ", f'<span data-run="{esc(run)}" ', 1))


def _summary_rows(records: Sequence[RunRecord], names: Sequence[str]) -> tuple[list[list[Cell]], list[str]]:
    """The rows of the summary table and the notes under it."""
    docs = [r.summary or {} for r in records]
    rows: list[list[Cell]] = [["evaluated on", "", *(
        f"{d.get('split', r.summary_split)} split, {d.get('n')} examples" if d else "not evaluated"
        for r, d in zip(records, docs, strict=True))]]
    rows.append(["importance samples K", "", *(words.number(d.get("importance_samples")) if d else _ABSENT
                                               for d in docs)])
    by_key = {q.key: q for q in QUANTITIES}
    # a run whose latent units all collapsed has q(z|x) ≈ p(z) and a posterior gap near 0: no merit, never "best"
    collapsed = [bool(d) and value_of(d, "active_units") == 0 for d in docs]
    for key in (*SUMMARY_KEYS, "exact_log_likelihood"):
        q = by_key[key]
        values = [value_of(d, key) for d in docs]
        if all(v is None for v in values):
            continue
        present = [v for v in values if v is not None]
        rivals = [v for v, gone in zip(values, collapsed, strict=True)
                  if v is not None and not (gone and key == "posterior_gap")]
        best = ((max(rivals) if q.better > 0 else min(rivals)) if q.better and len(present) > 1 and rivals
                else None)
        cells: list[Cell] = [q.label, (q.unit, "unit")]
        for name, doc, value, gone in zip(names, docs, values, collapsed, strict=True):
            if value is None:
                cells.append((_ABSENT, "num"))
                continue
            shown = _tagged(number_span(doc, key), name)
            if q.se is not None and value_of(doc, q.se) is not None:
                shown = Markup(f"{shown} ± {_tagged(number_span(doc, q.se), name)}")
            if key == "active_units":
                shown = Markup(f"{shown} of {_tagged(number_span(doc, 'latent_dim'), name)}")
            marked = value == best and not (gone and key == "posterior_gap")
            cells.append((shown, "num best" if marked else "num"))
        rows.append(cells)
    sources = {(r.summary_split, str(d.get("data")), d.get("n"), d.get("limit")) for r, d in zip(records, docs,
                                                                                                strict=True) if d}
    notes = []
    if len(sources) > 1:
        notes.append("The runs were evaluated on different data (split, source or number of examples): their "
                     "numbers do not compare directly.")
    if len(records) > 1:
        notes.append("Highlighted: the best value of each row (higher log p(x) and ELBO, lower gap and bits/dim).")
    for name, gone in zip(names, collapsed, strict=True):
        if gone:
            notes.append(f"{name}: no active units (every latent dimension collapsed to the prior, q(z|x) ≈ p(z)), "
                         "so its small posterior gap is no merit and is not highlighted.")
    return rows, notes


def _side_by_side_rows(per_run: Sequence[Sequence[tuple[str, str]]]) -> tuple[list[list[Cell]], list[bool]]:
    """Rows of (label, one value per run), in the order labels first appear, and whether each differs."""
    labels = list(dict.fromkeys(label for rows in per_run for label, _ in rows))
    lookup = [dict(rows) for rows in per_run]
    out: list[list[Cell]] = []
    differs = []
    for label in labels:
        values = [d.get(label, _ABSENT) for d in lookup]
        differs.append(len(set(values)) > 1)
        out.append([label, *values])
    return out, differs


def _facts_section(records: Sequence[RunRecord], names: Sequence[str]) -> list[str]:
    rows, differs = _side_by_side_rows([facts_rows(r) for r in records])
    marked: list[list[Cell]] = [[row[0], *((str(v), " ".join(c for c in ("code" if row[0] == "command" else "",
                                                                          "differs" if d else "") if c))
                                           for v in row[1:])]
                                for row, d in zip(rows, differs, strict=True)]
    return [Markup("<h2>Runs</h2>"), html_table(("", *names), marked, css="facts")]


def _settings_section(records: Sequence[RunRecord], names: Sequence[str]) -> list[str]:
    rows, differs = _side_by_side_rows([short_config(r) for r in records])
    different = [row for row, d in zip(rows, differs, strict=True) if d]
    shared = [row[:2] for row, d in zip(rows, differs, strict=True) if not d]
    out: list[str] = [Markup("<h2>Settings that differ</h2>")]
    if different:
        out.append(html_table(("setting", *names), different, css="config", value_css="config-value"))
    else:
        out.append(Markup('<p class="note">None: every setting of config.json is the same.</p>'))
    if shared:
        table = html_table(("setting", "value"), shared, css="config", value_css="config-value")
        out.append(Markup(f"<details><summary>{len(shared)} settings shared by every run</summary>{table}</details>"))
    return out


def _curves_section(records: Sequence[RunRecord], names: Sequence[str]) -> list[str]:
    histories = {name: r.history for name, r in zip(names, records, strict=True)}
    try:
        png = validation_elbo_png(histories)
    except ValueError:                               # no run records a validation ELBO
        return []
    caption = "Validation ELBO per epoch (nats per example); ★ each run's best epoch, the weights it kept"
    return [Markup("<h2>Validation ELBO</h2>"), figure_html(caption, bytes_uri(png, "validation-elbo.png"))]


def _figures_section(records: Sequence[RunRecord], names: Sequence[str]) -> list[str]:
    by_file: dict[str, dict[str, tuple[str, Path]]] = {}
    for name, record in zip(names, records, strict=True):
        for caption, path in record.figures:
            by_file.setdefault(path.name, {})[name] = (caption, path)
    if not by_file:
        return []
    out: list[str] = [Markup("<h2>Figures</h2>")]
    for file, found in by_file.items():
        cells = []
        for name in names:
            if name in found:
                caption, path = found[name]
                cells.append(figure_html(f"{name}: {caption}", data_uri(path)))
            else:
                cells.append(Markup(f'<p class="empty">{esc(name)}: no {esc(file)}</p>'))
        out.append(Markup(f"<h3>{esc(figure_title(Path(file)))}</h3>"))
        out.append(Markup(f'<div class="side-by-side" style="--columns: {len(names)}">{"".join(cells)}</div>'))
    return out


def render_comparison(records: Sequence[RunRecord]) -> str:
    """The HTML text of the page comparing ``records`` (at least one)."""
    if not records:
        raise ValueError("render_comparison: no runs to compare")
    names = run_names(records)
    title = f"vaekit: {len(records)} runs compared" if len(records) > 1 else f"vaekit run {names[0]}"
    body: list[str] = [Markup(f"<h1>{esc(title)}</h1>"),
                       Markup(f'<p class="subtitle">{esc(", ".join(str(r.root) for r in records))}</p>')]
    rows, notes = _summary_rows(records, names)
    body += [Markup("<h2>Summary</h2>"), html_table(("", "unit", *names), rows, css="metrics compare",
                                                    value_css="num")]
    body += [Markup(f'<p class="note">{esc(note)}</p>') for note in notes]
    body += _facts_section(records, names)
    body += _settings_section(records, names)
    body += _curves_section(records, names)
    body += _figures_section(records, names)
    return html_page(title, body)


def write_comparison(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Read the runs in ``run_dirs`` (:func:`vaekit.viz.run_record.read_run`: a folder that is no run
    is a DataError naming it) and write their comparison to ``out`` atomically; return its path."""
    records = [read_run(d) for d in run_dirs]
    path = Path(out)
    atomic_write_text(path, render_comparison(records))
    return path
