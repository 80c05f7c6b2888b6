"""A self-contained HTML report of a run: metrics, figures and configuration in one file.

The report needs nothing but itself: figures are embedded as base64 ``data:`` URIs, the style
sheet is inline, no script, font or other resource is fetched (a Content-Security-Policy meta tag
forbids it), and every piece of text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

from vaekit.store.atomic import atomic_write_text
from vaekit.store.layout import RunLayout

__all__ = ["write_report", "render_report"]

_MIME_BY_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1100px; color: #1f2328; background: #fff;
       line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 12px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
table.metrics, table.config { border-collapse: collapse; min-width: 360px; font-size: 0.95em; }
table.metrics th, table.metrics td, table.config th, table.config td {
    border: 1px solid #d0d7de; padding: 5px 12px; text-align: left; }
table.metrics thead th, table.config thead th { background: #f6f8fa; }
table.metrics tbody th, table.config tbody th { font-weight: 600; }
table.metrics td.value { text-align: right; font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas,
                         "Liberation Mono", monospace; white-space: nowrap; }
table.metrics tbody tr:nth-child(even), table.config tbody tr:nth-child(even) { background: #fafbfc; }
table.config td.config-value { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
                               monospace; white-space: pre-wrap; word-break: break-word; }
figure { margin: 0 0 28px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #d0d7de;
             image-rendering: auto; }
figcaption { margin-top: 6px; color: #57606a; font-size: 0.95em; }
p.empty { color: #57606a; font-style: italic; }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _esc(text: object) -> str:
    """``str(text)`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def _format_value(value: object) -> str:
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


def _metrics_html(metrics: Mapping[str, object]) -> str:
    """The metrics as a two-column table (name, value), in the dict's order."""
    if not metrics:
        return '<p class="empty">No metrics.</p>'
    rows = "\n".join(
        f'<tr><th scope="row">{_esc(key)}</th><td class="value">{_esc(_format_value(value))}</td></tr>'
        for key, value in metrics.items()
    )
    return (
        '<table class="metrics">\n<thead><tr><th scope="col">metric</th><th scope="col">value</th></tr></thead>\n'
        f"<tbody>\n{rows}\n</tbody>\n</table>"
    )


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


def _data_uri(path: Path) -> str:
    """The file at ``path`` as a base64 ``data:`` URI."""
    data = path.read_bytes()
    return f"data:{_mime_type(data, path)};base64,{base64.b64encode(data).decode('ascii')}"


def _figures_html(run_dir: Path, figures: Mapping[str, str | os.PathLike[str]]) -> str:
    """Each figure embedded as an ``<img>`` with its caption (the dict key)."""
    if not figures:
        return '<p class="empty">No figures.</p>'
    blocks = []
    for caption, figure in figures.items():
        uri = _data_uri(_resolve_figure(run_dir, caption, figure))
        blocks.append(
            f'<figure>\n<img src="{_esc(uri)}" alt="{_esc(caption)}">\n'
            f"<figcaption>{_esc(caption)}</figcaption>\n</figure>"
        )
    return "\n".join(blocks)


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


def _config_value(value: object) -> str:
    """A configuration leaf as text: strings verbatim, the rest as compact JSON (else ``str``)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except ValueError:  # e.g. a circular reference
        return str(value)


def _config_html(config: Mapping[str, object]) -> str:
    """The configuration as a table of dotted keys (nested sections flattened) and values."""
    if not config:
        return '<p class="empty">Empty configuration.</p>'
    rows = "\n".join(
        f'<tr><th scope="row">{_esc(key)}</th><td class="config-value">{_esc(_config_value(value))}</td></tr>'
        for key, value in _flatten(config)
    )
    return (
        '<table class="config">\n<thead><tr><th scope="col">setting</th><th scope="col">value</th></tr></thead>\n'
        f"<tbody>\n{rows}\n</tbody>\n</table>"
    )


def render_report(
    run_dir: str | os.PathLike[str],
    *,
    title: str,
    metrics: Mapping[str, float | int | str],
    figures: Mapping[str, str | os.PathLike[str]],
    config: Mapping[str, object] | None = None,
) -> str:
    """The HTML text that :func:`write_report` writes (figures are read from disk)."""
    run = Path(run_dir)
    sections = [
        f"<h1>{_esc(title)}</h1>",
        "<h2>Metrics</h2>",
        _metrics_html(metrics),
        "<h2>Figures</h2>",
        _figures_html(run, figures),
    ]
    if config is not None:
        sections += ["<h2>Configuration</h2>", _config_html(config)]
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def write_report(
    run_dir: str | os.PathLike[str],
    *,
    title: str,
    metrics: Mapping[str, float | int | str],
    figures: Mapping[str, str | os.PathLike[str]],
    config: Mapping[str, object] | None = None,
) -> Path:
    """Write the run's report (``report.html``, named by :class:`~vaekit.store.layout.RunLayout`), a
    self-contained HTML page, and return its path.

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
