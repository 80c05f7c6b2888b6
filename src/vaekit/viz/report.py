"""Self-contained HTML pages: the building blocks of vaekit's reports, and a generic report
(:func:`write_report`: metrics, figures and configuration in one file).

A page needs nothing but itself: figures are embedded as base64 ``data:`` URIs, the style sheet is
inline, no script, font or other resource is fetched (a Content-Security-Policy meta tag forbids
it), and every piece of text is HTML-escaped: text is escaped where it enters markup, and markup
built here travels as :class:`Markup`, so a string is never escaped twice nor forgotten.

The pages of a run and of several runs side by side are :mod:`vaekit.viz.run_report` and
:mod:`vaekit.viz.compare`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from vaekit.store.atomic import atomic_write_text
from vaekit.store.layout import RunLayout

__all__ = ["write_report", "render_report", "Markup", "esc", "format_value", "html_table", "figure_html",
           "data_uri", "bytes_uri", "html_page", "config_value", "flatten_config"]

_MIME_BY_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)

_SANS = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
_MONO = 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace'
_CSS = f"""
:root {{ color-scheme: light; }}
body {{ font-family: {_SANS}; margin: 0 auto; padding: 24px 32px 48px; max-width: 1180px; color: #1f2328;
       background: #fff; line-height: 1.45; }}
h1 {{ font-size: 1.6em; margin: 0 0 4px; overflow-wrap: anywhere; }}
h2 {{ font-size: 1.2em; margin: 32px 0 12px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }}
h3 {{ font-size: 1.05em; margin: 20px 0 8px; }}
p.subtitle {{ margin: 0 0 8px; color: #57606a; overflow-wrap: anywhere; }}
p.note, p.empty {{ color: #57606a; }}
p.empty {{ font-style: italic; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
table {{ border-collapse: collapse; font-size: 0.95em; margin: 0 0 8px; }}
th, td {{ border: 1px solid #d0d7de; padding: 5px 12px; text-align: left; vertical-align: top; }}
thead th {{ background: #f6f8fa; }}
tbody th {{ font-weight: 600; }}
tbody tr:nth-child(even) {{ background: #fafbfc; }}
table.metrics, table.config, table.facts {{ min-width: 360px; }}
td.value, td.num, th.num {{ text-align: right; font-family: {_MONO}; white-space: nowrap; }}
td.config-value, td.code {{ font-family: {_MONO}; white-space: pre-wrap; overflow-wrap: anywhere; }}
td.unit {{ color: #57606a; }}
tr.best, tr.best th {{ background: #dafbe1 !important; }}
td.best {{ font-weight: 700; background: #dafbe1; }}
td.differs {{ background: #fff8c5; }}
dl.summary {{ display: flex; flex-wrap: wrap; gap: 12px; margin: 0 0 8px; }}
dl.summary div.card {{ border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 16px; min-width: 170px;
                       background: #f6f8fa; }}
dl.summary dt {{ color: #57606a; font-size: 0.9em; }}
dl.summary dd {{ margin: 2px 0 0; font-size: 1.35em; font-family: {_MONO}; white-space: nowrap; }}
dl.summary dd span.unit {{ display: block; font-size: 0.6em; color: #57606a; font-family: {_SANS};
                           white-space: normal; }}
figure {{ margin: 0 0 28px; }}
figure img {{ display: block; max-width: 100%; height: auto; border: 1px solid #d0d7de; image-rendering: auto; }}
figcaption {{ margin-top: 6px; color: #57606a; font-size: 0.95em; }}
div.side-by-side {{ display: grid; gap: 16px; grid-template-columns: repeat(var(--columns), minmax(260px, 1fr));
                    overflow-x: auto; }}
details > summary {{ cursor: pointer; color: #0969da; margin: 4px 0 8px; }}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class Markup(str):
    """HTML built by this package, already escaped: inserted into a page as it is."""


def esc(text: object) -> Markup:
    """``str(text)`` escaped for HTML text and attribute values (markup is returned unchanged)."""
    if isinstance(text, Markup):
        return text
    return Markup(html.escape(str(text), quote=True))


def format_value(value: object) -> str:
    """A metric value as display text: floats to 6 significant digits, ints in full."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "∞" if number > 0 else "−∞"
        return "0" if number == 0 else f"{number:.6g}"
    return str(value)


#: a table cell: text (escaped), Markup (inserted as is), or (content, css class) for a styled cell.
Cell = str | tuple[str, str]


def _cell(tag: str, cell: Cell, extra: str = "") -> str:
    content, css = cell if isinstance(cell, tuple) else (cell, "")
    attrs = f' class="{esc(css)}"' if css else ""
    return f"<{tag}{extra}{attrs}>{esc(content)}</{tag}>"


def html_table(columns: Sequence[Cell], rows: Sequence[Sequence[Cell]], *, css: str,
               value_css: str = "", row_css: Sequence[str] | None = None) -> Markup:
    """A table: a header row of ``columns`` (none when empty), then each row with its first cell as the row header
    (``<th scope="row">``) and the others as data cells of class ``value_css`` unless a cell names
    its own. ``row_css``: a class per row ("" for none)."""
    head = "".join(_cell("th", c, ' scope="col"') for c in columns)
    lines = []
    for i, row in enumerate(rows):
        cls = row_css[i] if row_css is not None else ""
        cells = [_cell("th", row[0], ' scope="row"')]
        cells += [_cell("td", c if isinstance(c, tuple) or not value_css else (c, value_css)) for c in row[1:]]
        lines.append((f'<tr class="{esc(cls)}">' if cls else "<tr>") + "".join(cells) + "</tr>")
    body = "\n".join(lines)
    thead = f"<thead><tr>{head}</tr></thead>\n" if columns else ""
    return Markup(f'<div class="scroll"><table class="{esc(css)}">\n{thead}<tbody>\n{body}\n</tbody>\n</table></div>')


def _mime_type(data: bytes, path: Path) -> str:
    """The image MIME type of ``data`` from its first bytes; ``ValueError`` if not an image."""
    for magic, mime in _MIME_BY_MAGIC:
        if data.startswith(magic):
            return mime
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    raise ValueError(f"figure {str(path)!r} is not a PNG, JPEG, GIF or SVG image")


def _resolve_figure(run_dir: Path, caption: str, figure: str | os.PathLike[str]) -> Path:
    """The file of one figure: absolute, else relative to ``run_dir``, else to the working folder."""
    path = Path(figure)
    candidates = [path] if path.is_absolute() else [run_dir / path, path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"figure {caption!r}: no file {str(path)!r} "
                            f"(looked in {str(run_dir)!r} and the working folder)")


def bytes_uri(data: bytes, name: str | os.PathLike[str] = "image") -> str:
    """Image bytes as a base64 ``data:`` URI (``ValueError`` naming ``name`` if they are no image)."""
    return f"data:{_mime_type(data, Path(name))};base64,{base64.b64encode(data).decode('ascii')}"


def data_uri(path: Path) -> str:
    """The image file at ``path`` as a base64 ``data:`` URI."""
    return bytes_uri(path.read_bytes(), path)


def figure_html(caption: str, uri: str, *, alt: str | None = None) -> Markup:
    """One ``<figure>``: the image at ``uri`` (a ``data:`` URI) above its caption."""
    return Markup(f'<figure>\n<img src="{esc(uri)}" alt="{esc(caption if alt is None else alt)}">\n'
                  f"<figcaption>{esc(caption)}</figcaption>\n</figure>")


def html_page(title: str, body: Sequence[str]) -> str:
    """A whole self-contained document: the title, the inline style sheet and ``body`` (Markup and
    text blocks, text escaped), one after the other."""
    content = "\n".join(esc(block) for block in body)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{content}\n</body>\n</html>\n"
    )


def _flatten(config: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    """Nested mappings as ``(dotted.key, leaf value)`` pairs, in order."""
    rows: list[tuple[str, object]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows


def config_value(value: object) -> str:
    """A configuration leaf as text: strings verbatim, the rest as compact JSON (else ``str``)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except ValueError:  # e.g. a circular reference
        return str(value)


def flatten_config(config: Mapping[str, object]) -> list[tuple[str, str]]:
    """Nested sections flattened to ``(dotted.key, value text)`` pairs, in order."""
    return [(key, config_value(value)) for key, value in _flatten(config)]


def _figures_html(run_dir: Path, figures: Mapping[str, str | os.PathLike[str]]) -> Markup:
    """Each figure embedded as an ``<img>`` with its caption (the dict key)."""
    if not figures:
        return Markup('<p class="empty">No figures.</p>')
    return Markup("\n".join(figure_html(caption, data_uri(_resolve_figure(run_dir, caption, figure)))
                            for caption, figure in figures.items()))


def render_report(
    run_dir: str | os.PathLike[str],
    *,
    title: str,
    metrics: Mapping[str, float | int | str],
    figures: Mapping[str, str | os.PathLike[str]],
    config: Mapping[str, object] | None = None,
) -> str:
    """The HTML text that :func:`write_report` writes (figures are read from disk)."""
    metrics_html = (html_table(("metric", "value"), [(k, format_value(v)) for k, v in metrics.items()],
                               css="metrics", value_css="value")
                    if metrics else Markup('<p class="empty">No metrics.</p>'))
    body = [Markup(f"<h1>{esc(title)}</h1>"), Markup("<h2>Metrics</h2>"), metrics_html,
            Markup("<h2>Figures</h2>"), _figures_html(Path(run_dir), figures)]
    if config is not None:
        body += [Markup("<h2>Configuration</h2>"),
                 html_table(("setting", "value"), flatten_config(config), css="config", value_css="config-value")
                 if config else Markup('<p class="empty">Empty configuration.</p>')]
    return html_page(title, body)


def write_report(
    run_dir: str | os.PathLike[str],
    *,
    title: str,
    metrics: Mapping[str, float | int | str],
    figures: Mapping[str, str | os.PathLike[str]],
    config: Mapping[str, object] | None = None,
) -> Path:
    """Write a generic report (``report.html``, named by :class:`~vaekit.store.layout.RunLayout`), a
    self-contained HTML page, and return its path. (A run's own page, with its summary, provenance
    and history, is :func:`vaekit.viz.run_report.write_run_report`.)

    Args:
        run_dir: the run's folder (created if missing); the report is written there atomically.
        title: page title and heading.
        metrics: name -> value, shown as a table in the given order. Names are kept verbatim
            (units in them included); floats are shown to 6 significant digits, ints in full,
            NaN as ``NaN``.
        figures: caption -> image file (PNG; JPEG, GIF and SVG also work). Relative paths are
            looked up in ``run_dir`` first, then in the working folder. Each image is embedded
            as a base64 ``data:`` URI, so the report has no external references.
        config: optional configuration, shown as a table; nested sections are flattened to
            dotted keys (``optim.lr``), non-string values shown as compact JSON (else ``str``).

    Raises:
        FileNotFoundError: a figure file does not exist.
        ValueError: a figure file is not an image.
    """
    html_text = render_report(run_dir, title=title, metrics=metrics, figures=figures, config=config)
    out = RunLayout.of(run_dir).report
    atomic_write_text(out, html_text)
    return out
