"""Tests of vaekit.viz.report: a valid, self-contained, escaped HTML report."""

from __future__ import annotations

import base64
import io
import math
import os
import stat
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.viz import plots
from vaekit.viz.report import write_report

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Collector(HTMLParser):
    """Parses a document, checks that tags nest, and keeps what the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []
        self.current: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.stack:
            self.current.append(f"{self.stack[-1]}:{data}")


def _parse(html_text: str) -> _Collector:
    parser = _Collector()
    parser.feed(html_text)
    parser.close()
    assert not parser.errors, parser.errors
    assert not parser.stack, f"unclosed tags {parser.stack}"
    return parser


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> Path:
    Image.new("RGB", size, colour).save(path, format="PNG")
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    _png(run / "figures" / "a.png", (255, 0, 0))
    _png(run / "figures" / "b.png", (0, 0, 255), (20, 60))
    return run


METRICS = {
    "test_elbo (nats/example)": -87.23456789,
    "test_kl (nats/example)": 25.5,
    "bits_per_dim": 0.000012345678,
    "epochs": 60000,
    "device": "cpu",
    "<script>": "<b>bold</b> & more",
}


def test_report_is_valid_self_contained_html(run_dir: Path) -> None:
    out = write_report(
        run_dir,
        title="MNIST <VAE> run",
        metrics=METRICS,
        figures={"samples": run_dir / "figures" / "a.png", "latent space": "figures/b.png"},
        config={"latent_dim": 16, "beta": 1.0, "name": "</pre><script>alert(1)</script>", "layers": [512, 256]},
    )
    assert out == run_dir / "report.html"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    parsed = _parse(text)
    tag_names = [tag for tag, _ in parsed.tags]
    for forbidden in ("script", "link", "iframe", "object", "embed"):
        assert forbidden not in tag_names
    # every reference is inline: src only as data: URIs, no href, no url() in the style sheet
    for tag, attrs in parsed.tags:
        assert "href" not in attrs, (tag, attrs)
        if "src" in attrs:
            assert str(attrs["src"]).startswith("data:"), (tag, str(attrs["src"])[:40])
    assert "url(" not in text and "http://" not in text and "https://" not in text
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_report_embeds_each_figure_with_its_caption(run_dir: Path) -> None:
    figures = {"samples": run_dir / "figures" / "a.png", "latent <space> & more": "figures/b.png"}
    parsed = _parse(write_report(run_dir, title="t", metrics={}, figures=figures).read_text("utf-8"))
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 2
    for attrs, (caption, figure) in zip(images, figures.items(), strict=True):
        src = str(attrs["src"])
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        data = base64.b64decode(src[len(prefix) :], validate=True)
        assert data == (run_dir / figure).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG"
        assert attrs["alt"] == caption
    captions = [t.split(":", 1)[1] for t in parsed.current if t.startswith("figcaption:")]
    assert captions == list(figures)


def test_report_lists_every_metric_escaped_and_formatted(run_dir: Path) -> None:
    text = write_report(run_dir, title="t", metrics=METRICS, figures={}).read_text("utf-8")
    parsed = _parse(text)
    cells = [t.split(":", 1)[1] for t in parsed.current if t.startswith(("th:", "td:"))]
    for key in METRICS:
        assert key in cells
    # the metric named <script> is text, not markup
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in text
    assert "<b>" not in text
    values = dict(zip(cells[2::2], cells[3::2], strict=True))  # after the header row
    assert values["test_elbo (nats/example)"] == "-87.2346"
    assert values["test_kl (nats/example)"] == "25.5"
    assert values["bits_per_dim"] == "1.23457e-05"
    assert values["epochs"] == "60000"
    assert values["device"] == "cpu"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.0, "0"),
        (1.0, "1"),
        (-0.5, "-0.5"),
        (123456789.0, "1.23457e+08"),
        (math.nan, "NaN"),
        (math.inf, "∞"),
        (np.float32(0.25), "0.25"),
        (np.int64(7), "7"),
        (True, "True"),
    ],
)
def test_report_number_formatting(run_dir: Path, value: object, shown: str) -> None:
    parsed = _parse(write_report(run_dir, title="t", metrics={"m": value}, figures={}).read_text("utf-8"))
    assert f"td:{shown}" in parsed.current


def test_report_config_is_an_escaped_table(run_dir: Path) -> None:
    config = {
        "name": "</pre><script>alert(1)</script>",
        "path": Path("/data/x"),
        "optim": {"lr": 0.001, "betas": [0.9, 0.999]},
        "empty": {},
        "flag": None,
    }
    text = write_report(run_dir, title="t", metrics={"a": 1}, figures={}, config=config).read_text("utf-8")
    parsed = _parse(text)
    cells = [t.split(":", 1)[1] for t in parsed.current if t.startswith(("th:", "td:"))]
    start = cells.index("setting")
    rows = dict(zip(cells[start + 2 :: 2], cells[start + 3 :: 2], strict=True))
    assert rows == {
        "name": "</pre><script>alert(1)</script>",  # shown as text: the parser unescaped it
        "path": '"/data/x"',
        "optim.lr": "0.001",
        "optim.betas": "[0.9, 0.999]",
        "empty": "{}",
        "flag": "null",
    }
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_report_title_is_escaped(run_dir: Path) -> None:
    text = write_report(run_dir, title='a <b> "c" & d', metrics={}, figures={}).read_text("utf-8")
    assert "<title>a &lt;b&gt; &quot;c&quot; &amp; d</title>" in text
    assert "<h1>a &lt;b&gt; &quot;c&quot; &amp; d</h1>" in text


def test_report_without_config_has_no_config_section(run_dir: Path) -> None:
    text = write_report(run_dir, title="t", metrics={"a": 1}, figures={}).read_text("utf-8")
    assert "Configuration" not in text and "setting" not in text


def test_report_missing_or_non_image_figure(run_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_report(run_dir, title="t", metrics={}, figures={"x": "figures/nope.png"})
    (run_dir / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a PNG"):
        write_report(run_dir, title="t", metrics={}, figures={"x": "notes.png"})
    assert not (run_dir / "report.html").exists()


def test_report_overwrites_atomically_and_creates_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "new" / "run"
    first = write_report(run, title="first", metrics={}, figures={})
    second = write_report(run, title="second", metrics={}, figures={})
    assert first == second == run / "report.html"
    assert "second" in second.read_text("utf-8") and "first" not in second.read_text("utf-8")
    assert sorted(p.name for p in run.iterdir()) == ["report.html"]


def test_report_with_real_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    figs = tmp_path / "figures"
    grid = plots.image_grid(rng.random((16, 1, 8, 8)), figs / "samples.png", title="samples")
    scatter = plots.plot_latent_scatter(rng.normal(size=(100, 4)), figs / "latent.png", labels=rng.integers(0, 3, 100))
    text = write_report(tmp_path, title="run", metrics={"elbo": -1.5}, figures={"samples": grid, "latent": scatter})
    parsed = _parse(text.read_text("utf-8"))
    assert sum(tag == "img" for tag, _ in parsed.tags) == 2


def test_report_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = write_report(tmp_path, title="t", metrics={}, figures={})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
