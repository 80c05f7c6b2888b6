"""A run's report.html: a page a person reads, built from the run directory alone.

Top to bottom:

* **Summary**: of the evaluation of the test split (else validation, all, train): log p(x) ± its
  standard error with K importance samples, the ELBO, the posterior gap KL(q(z|x) ‖ p(z|x)) (nats per
  example), bits per dimension (where defined) and active units; the best epoch of training.
* **Run**: the command line, start, duration, versions of vaekit, torch and Python (run.json), the data
  spec and split sizes, preprocessing, model and training options.
* **Figures**, each with its caption.
* **Training history**: one row per epoch, units in the headers, the best epoch marked; β and the
  learning rate are columns only when they change (else a sentence gives their value).
* **Evaluation**: every quantity of every evaluated split, with units.
* **Configuration**: config.json, flattened (collapsed).

Every number of the summary carries its exact value in a ``data-value`` attribute (``data-key`` names
it in evaluation-SPLIT.json), so tools and tests can read it back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaekit.store.atomic import atomic_write_text
from vaekit.store.layout import RunLayout
from vaekit.viz import run_text as words
from vaekit.viz.curves import constant_schedule
from vaekit.viz.report import Cell, Markup, data_uri, esc, figure_html, flatten_config, html_page, html_table
from vaekit.viz.run_advice import advice
from vaekit.viz.run_record import QUANTITIES, SUMMARY_KEYS, RunRecord, read_run, value_of

__all__ = ["write_run_report", "render_run_report", "number_span", "summary_html", "evaluation_rows",
           "facts_rows", "figures_section", "short_config"]

_BY_KEY = {q.key: q for q in QUANTITIES}
_LONG_LIST = 12          # config lists longer than this (e.g. per-column means) are shown by their length


def number_span(doc: Mapping[str, Any], key: str) -> Markup:
    """``doc[key]`` as displayed text in a span that carries the exact value (``data-value``)."""
    value = doc.get(key)
    return Markup(f'<span class="num" data-key="{esc(key)}" data-value="{esc(json.dumps(value))}">'
                  f"{esc(words.number(value))}</span>")


def _card(label: str, value: Markup, unit: str) -> str:
    return (f'<div class="card"><dt>{esc(label)}</dt><dd>{value}<span class="unit">{esc(unit)}</span></dd></div>')


def summary_html(doc: Mapping[str, Any]) -> Markup:
    """The summary cards of one evaluation: log p(x) ± SE (K), ELBO, posterior gap, bits/dim, active units."""
    cards = []
    for key in SUMMARY_KEYS:
        q = _BY_KEY[key]
        if value_of(doc, key) is None:
            continue
        value = number_span(doc, key)
        label = q.label
        if key == "log_likelihood":
            value = Markup(f"{value} ± {number_span(doc, 'log_likelihood_se')}")
            label = f"log p(x) ± standard error, K = {doc.get('importance_samples')} importance samples"
        elif key == "active_units":
            value = Markup(f"{value} of {number_span(doc, 'latent_dim')}")
        cards.append(_card(label, value, q.unit))
    if value_of(doc, "exact_log_likelihood") is not None:
        cards.append(_card("exact log p(x) (closed form)", number_span(doc, "exact_log_likelihood"), _BY_KEY[
            "exact_log_likelihood"].unit))
    return Markup('<dl class="summary">' + "".join(cards) + "</dl>")


def _evaluated_on(name: str, doc: Mapping[str, Any]) -> str:
    split = doc.get("split", name)
    n = doc.get("n")
    limit = f" (the first {doc['limit']})" if doc.get("limit") else ""
    data = doc.get("data")
    source = f" of {data.get('spec')}" if isinstance(data, dict) and data.get("spec") else ""
    text = f"Evaluated on the {split} split{source}: {n} examples{limit}."
    if value_of(doc, "bits_per_dim") is None:
        text += (" Bits per dimension are not reported: they are defined for a density likelihood on dequantised "
                 "images.")
    if value_of(doc, "log_jacobian"):
        text += (" Log-densities are of the data in the units given (the log-Jacobian of the standardisation, "
                 f"{words.number(doc.get('log_jacobian'))} nats, is included).")
    return text


def _summary_section(record: RunRecord) -> list[str]:
    out: list[str] = [Markup("<h2>Summary</h2>")]
    doc, split = record.summary, record.summary_split
    if doc is None or split is None:
        out.append(Markup('<p class="empty">Not evaluated: the run has no evaluation-*.json '
                          "(vaekit evaluate RUN_DIR --save writes one).</p>"))
    else:
        out += [summary_html(doc), Markup(f'<p class="note">{esc(_evaluated_on(split, doc))}</p>')]
    best = record.best
    if best is not None:
        out.append(Markup(f'<p class="note">Best validation ELBO {esc(words.number(best[1]))} nats per example at '
                          f'epoch <span data-key="best_epoch">{best[0]}</span> of {len(record.history)}: '
                          "the weights kept and evaluated.</p>"))
    items = "".join(f"<li>{esc(note)}</li>" for note in advice(record))
    out.append(Markup(f'<h3>What this says</h3><ul class="advice">{items}</ul>'))
    return out


def facts_rows(record: RunRecord) -> list[tuple[str, str]]:
    """(what, value) rows of the run's provenance, data, model and training."""
    sessions = record.sessions
    rows: list[tuple[str, str]] = [("run directory", str(record.root))]
    if sessions:
        commands = [words.command_line(s) + (" (resumed)" if s.get("resumed") else "") for s in sessions]
        rows.append(("command", "\n".join(commands)))
        rows.append(("started", words.when(sessions[0].get("started"))))
        total = sum(float(s.get("duration_s") or 0.0) for s in sessions)
        how = f"{len(sessions)} commands" if len(sessions) > 1 else "the command"
        rows.append(("duration", f"{words.duration(total)} ({how}, wall clock, to the end of the evaluation)"))
        rows.append(("versions", "\n".join(dict.fromkeys(words.versions(s) for s in sessions))))
    else:
        rows += [(what, words.NOT_RECORDED) for what in ("command", "started", "duration", "versions")]
    rows.append(("data", words.data_text(record.section("data"))))
    rows.append(("split sizes", words.splits_text(record.splits) if record.splits else words.NOT_RECORDED))
    rows.append(("preprocessing", words.preprocessing_text(record.section("preprocessing"))))
    rows.append(("model", words.model_text(record.section("model"))))
    rows.append(("training", words.training_text(record)))
    seconds = [s for s in (value_of(row, "seconds") for row in record.history) if s is not None]
    if seconds:
        rows.append(("training time", f"{words.duration(sum(seconds))} in {len(seconds)} epochs"))
    best = record.best
    if best is not None:
        rows.append(("best epoch", f"{best[0]} (validation ELBO {words.number(best[1])} nats per example)"))
    return rows


#: the history's columns: key, header (units included)
_HISTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("train_loss", "train loss (nats/example)"), ("train_elbo", "train ELBO (nats/example)"),
    ("train_kl", "train KL (nats/example)"), ("train_reconstruction", "train reconstruction (nats/example)"),
    ("val_elbo", "val ELBO (nats/example)"), ("val_kl", "val KL (nats/example)"),
    ("val_reconstruction", "val reconstruction (nats/example)"), ("val_log_likelihood", "val log p(x) (nats/example)"),
    ("beta", "β"), ("lr", "learning rate"), ("seconds", "time (s)"), ("skipped_steps", "skipped steps"),
)


def _is_minus_elbo(history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every epoch's training loss is −(train ELBO): the plain ELBO objective, nothing new to show."""
    def same(row: Mapping[str, Any]) -> bool:
        loss, elbo = value_of(row, "train_loss"), value_of(row, "train_elbo")
        return loss is not None and elbo is not None and abs(loss + elbo) <= 1e-9 * max(1.0, abs(loss))
    return all(same(row) for row in history)


def _history_columns(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The columns with something to show: recorded, not a constant β or learning rate, a loss that is
    not −ELBO, and skipped steps only when some were."""
    constant = constant_schedule(history)
    columns = []
    for key, header in _HISTORY_COLUMNS:
        values = [row.get(key) for row in history]
        if all(v is None for v in values) or key in constant or (key == "skipped_steps" and not any(values)):
            continue
        if key == "train_loss" and _is_minus_elbo(history):
            continue
        columns.append((key, header))
    return columns


def _history_cell(key: str, value: object) -> str:
    if isinstance(value, float) and key == "lr":
        return f"{value:.3g}"
    if isinstance(value, float) and key == "seconds":
        return f"{value:.2f}"
    return words.number(value)


def _history_section(record: RunRecord) -> list[str]:
    history = record.history
    if not history:
        return []
    columns = _history_columns(history)
    best_epoch = record.best[0] if record.best is not None else None
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    rows: list[list[Cell]] = [[f"{epoch} ★" if epoch == best_epoch else str(epoch),
                               *(_history_cell(key, row.get(key)) for key, _ in columns)]
                              for epoch, row in zip(epochs, history, strict=True)]
    table = html_table(("epoch", *(header for _, header in columns)), rows, css="history", value_css="num",
                       row_css=["best" if epoch == best_epoch else "" for epoch in epochs])
    notes = []
    constant = constant_schedule(history)
    if constant:
        said = " and ".join(f"{'β' if k == 'beta' else 'the learning rate'} = {v:g}" for k, v in constant.items())
        notes.append(f"{'T' + said[1:] if said.startswith('the') else said} at every epoch.")
    if best_epoch is not None:
        notes.append(f"★ the best epoch ({best_epoch}), whose weights the run kept.")
    out: list[str] = [Markup("<h2>Training history</h2>"), Markup(f'<p class="note">{esc(" ".join(notes))}</p>')]
    if len(history) > 40:                          # a long history: collapsed under its length
        return out + [Markup(f"<details><summary>{len(history)} epochs</summary>{table}</details>")]
    return out + [table]


def evaluation_rows(docs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows (quantity, unit, one value per evaluation) of every quantity some evaluation reports."""
    rows = [["examples", "", *(words.number(d.get("n")) for d in docs)],
            ["importance samples K", "", *(words.number(d.get("importance_samples")) for d in docs)]]
    for q in QUANTITIES:
        if all(value_of(d, q.key) is None for d in docs) or (q.key == "log_jacobian" and not any(
                value_of(d, q.key) for d in docs)):
            continue
        cells = []
        for d in docs:
            text = words.number(d.get(q.key))
            if q.se is not None and value_of(d, q.se) is not None:
                text += f" ± {words.number(d.get(q.se))}"
            if q.key == "active_units" and d.get("latent_dim") is not None:
                text += f" of {d['latent_dim']}"
            cells.append(text)
        rows.append([q.label, q.unit, *cells])
    return rows


def _evaluation_section(record: RunRecord) -> list[str]:
    if not record.evaluations:
        return []
    splits = list(record.evaluations)
    rows = evaluation_rows([record.evaluations[s] for s in splits])
    table = html_table(("quantity", "unit", *splits), [[r[0], (r[1], "unit"), *r[2:]] for r in rows],
                       css="metrics", value_css="num")
    return [Markup("<h2>Evaluation</h2>"), table]


def figures_section(record: RunRecord) -> list[str]:
    """Each figure of the run with its caption; nothing when it has none."""
    if not record.figures:
        return []
    return [Markup("<h2>Figures</h2>"), *(figure_html(caption, data_uri(path)) for caption, path in record.figures)]


def _shorten(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list) and len(value) > _LONG_LIST:
        return f"[{len(value)} values]"
    return value


def short_config(record: RunRecord) -> list[tuple[str, str]]:
    """config.json's settings as (dotted key, value) rows, long lists (per-column statistics) by their length."""
    doc = {"model": record.section("model"), **{k: record.section(k) for k in ("data", "preprocessing", "train")}}
    return flatten_config(_shorten(doc))  # type: ignore[arg-type]


def render_run_report(record: RunRecord) -> str:
    """The HTML text of the run's report."""
    title = f"vaekit run {record.name}"
    body: list[str] = [Markup(f"<h1>{esc(title)}</h1>"), Markup(f'<p class="subtitle">{esc(record.root)}</p>')]
    body += _summary_section(record)
    body += [Markup("<h2>Run</h2>"),
             html_table((), [(k, (v, "code" if k == "command" else "")) for k, v in facts_rows(record)],
                        css="facts")]
    body += figures_section(record)
    body += _history_section(record)
    body += _evaluation_section(record)
    config = html_table(("setting", "value"), short_config(record), css="config", value_css="config-value")
    body.append(Markup(f"<h2>Configuration</h2><details><summary>config.json, flattened</summary>{config}</details>"))
    return html_page(title, body)


def write_run_report(run_dir: str | os.PathLike[str],
                     figures: Mapping[str, str | os.PathLike[str]] | None = None) -> Path:
    """Write ``run_dir/report.html`` from what the run directory holds; return its path.

    ``figures`` (caption -> file in ``run_dir/figures``, as :func:`vaekit.viz.figures.write_figures`
    returns them): the figures just drawn, recorded in figures/captions.json (a list of
    ``{"file": NAME, "caption": TEXT}``, in order) so that later reports
    (``vaekit report``) show the same figures with the same captions. Without it the recorded ones
    are shown (else every PNG in figures/).
    """
    layout = RunLayout.of(run_dir)
    if figures is not None:                        # a list: the order is the page's
        captions = [{"file": Path(path).name, "caption": caption} for caption, path in figures.items()]
        atomic_write_text(layout.figure_captions, json.dumps(captions, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(layout.report, render_run_report(read_run(layout.root)))
    return layout.report
