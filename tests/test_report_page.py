"""A run's report.html and the comparison page of ``vaekit report``: what a reader finds on them.

The runs are made by hand (config.json, metrics.jsonl, evaluation-test.json, run.json, figures), so
every number on the page can be checked against the file it comes from. The same pages in a real
browser, from real training runs: tests/test_report_browser.py.
"""

from __future__ import annotations

import json
import shlex
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import VAEConfig, build_vae
from vaekit.cli import main
from vaekit.data import fit_preprocessing, load_dataset
from vaekit.errors import DataError
from vaekit.store.layout import RunLayout
from vaekit.store.model_files import save_model
from vaekit.store.run_info import new_session, read_run_info, record_session, software_versions
from vaekit.store.runs import DataSpec
from vaekit.viz import curves
from vaekit.viz.compare import write_comparison
from vaekit.viz.run_report import write_run_report

EVALUATION = {"n": 180, "importance_samples": 8, "log_likelihood": -44.86465123494466,
              "log_likelihood_se": 0.24502949235599128, "elbo": -45.59519265492757, "kl": 0.6675238952040672,
              "reconstruction": -44.92766884697808, "posterior_gap": 0.778580406949752,
              "bits_per_dim": 5.09880674512327, "active_units": 1, "latent_dim": 3, "exact_log_likelihood": None,
              "split": "test", "limit": None, "seed": 0, "log_jacobian": 0.0, "data": DataSpec().to_dict()}
VAL_ELBO = (-60.0, -50.0, -45.25, -47.0)          # the best epoch is 3
STARTED = 1_780_000_000.0                          # 2026-05-28T20:26:40Z


def _history(lr: tuple[float, ...] = (1e-3,) * 4) -> list[dict[str, Any]]:
    return [{"epoch": e, "step": 10 * e, "train_loss": -v + 1.0, "train_elbo": v - 1.0, "train_kl": 2.0 + e,
             "train_reconstruction": v + 1.0 + e, "val_elbo": v, "val_kl": 2.5, "val_reconstruction": v + 2.5,
             "beta": 1.0, "lr": lr[e - 1], "seconds": 1.5, "val_log_likelihood": None, "skipped_steps": 0}
            for e, v in enumerate(VAL_ELBO, 1)]


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (30, 20), colour).save(path)
    return path


def make_run(root: Path, *, latent_dim: int = 3, evaluation: dict[str, Any] | None = None,
             command: tuple[str, ...] = ("train", "--data", "digits", "--out", "runs/a"),
             history: list[dict[str, Any]] | None = None) -> Path:
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=latent_dim, hidden=(8,)))
    prep = fit_preprocessing(load_dataset("digits"), "gaussian")
    train = {"epochs": 4, "lr": 0.001, "beta": 1.0, "batch_size": 64, "seed": 0, "schedule": "constant"}
    save_model(model, root, extra={"preprocessing": prep.to_dict(), "data": DataSpec().to_dict(), "train": train})
    layout = RunLayout.of(root)
    rows = _history() if history is None else history
    layout.metrics_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    layout.evaluation("test").write_text(json.dumps({**EVALUATION, "latent_dim": latent_dim, **(evaluation or {})}))
    record_session(layout, new_session(["vaekit", *command], started=STARTED, finished=STARTED + 125.5),
                   {"train": 1437, "val": 180, "test": 180})
    figures = {"Training curves <per epoch>": _png(layout.figure("training-curves"), (200, 30, 30)),
               "Prior samples & more": _png(layout.figure("prior-samples"), (30, 30, 200))}
    write_run_report(root, figures)
    return root


class Page(HTMLParser):
    """The tags of a page, checked to nest, with the text under each element and its tables as rows of cell texts."""

    VOID = {"img", "meta", "br", "hr", "input", "link"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.elements: list[tuple[str, dict[str, str | None], str]] = []      # (tag, attrs, text), in closing order
        self.tables: list[list[list[str]]] = []
        self._rows: list[list[str]] = []
        self._cells: list[str] = []
        self.feed(text)
        self.close()
        assert not self.stack, [t for t, _, _ in self.stack]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            self.elements.append((tag, dict(attrs), ""))
            return
        self.stack.append((tag, dict(attrs), []))
        if tag == "table":
            self._rows = []
        elif tag == "tr":
            self._cells = []

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1][0] == tag, (tag, [t for t, _, _ in self.stack])
        name, attrs, parts = self.stack.pop()
        text = "".join(parts)
        self.elements.append((name, attrs, text))
        if self.stack:
            self.stack[-1][2].append(text)
        if tag in ("th", "td"):
            self._cells.append(text)
        elif tag == "tr":
            self._rows.append(self._cells)
        elif tag == "table":
            self.tables.append(self._rows)

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.stack[-1][2].append(data)

    def find(self, tag: str, **attrs: str) -> list[tuple[dict[str, str | None], str]]:
        return [(a, t) for name, a, t in self.elements
                if name == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def numbers(self) -> dict[tuple[str | None, str], tuple[Any, str]]:
        """(data-run, data-key) -> (the exact value, the text shown) of every number that carries one."""
        return {(a.get("data-run"), str(a["data-key"])): (json.loads(str(a["data-value"])), text)
                for name, a, text in self.elements if name == "span" and "data-value" in a}

    def facts(self) -> dict[str, str]:
        """The run's facts: the first table of a run's report, row header -> value."""
        return {row[0]: row[1] for row in self.tables[0]}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run-a")


def test_summary_shows_each_number_with_its_unit(run: Path) -> None:
    page = Page((run / "report.html").read_text("utf-8"))
    numbers = page.numbers()
    for key in ("log_likelihood", "log_likelihood_se", "elbo", "posterior_gap", "bits_per_dim", "active_units",
                "latent_dim"):
        value, shown = numbers[(None, key)]
        assert value == EVALUATION[key]                                  # exactly the evaluation's number
        assert shown == (str(value) if isinstance(value, int) else f"{value:.4f}")
    cards = {dt: dd for (_, dt), (_, dd) in zip(page.find("dt"), page.find("dd"), strict=True)}
    assert cards == {
        "log p(x) ± standard error, K = 8 importance samples": "-44.8647 ± 0.2450nats per example",
        "ELBO": "-45.5952nats per example",
        "posterior gap KL(q(z|x) ‖ p(z|x))": "0.7786nats per example",
        "bits/dim": "5.0988bits per dimension",
        "active units": "1 of 3latent dims with Cov_x(E_q[z_u]) > 0.01",
    }
    notes = [text for _, text in page.find("p", class_="note")]
    assert "Evaluated on the test split of digits: 180 examples." in notes
    assert any(n.startswith("Best validation ELBO -45.2500 nats per example at epoch 3 of 4") for n in notes)


def test_summary_leaves_out_what_the_evaluation_lacks(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", evaluation={"bits_per_dim": None, "exact_log_likelihood": -40.5})
    page = Page((run / "report.html").read_text("utf-8"))
    dts = [text for _, text in page.find("dt")]
    assert "bits/dim" not in dts and "exact log p(x) (closed form)" in dts
    assert page.numbers()[(None, "exact_log_likelihood")] == (-40.5, "-40.5000")
    assert any("Bits per dimension are not reported" in t for _, t in page.find("p", class_="note"))


def test_run_facts_say_how_when_and_with_what(run: Path) -> None:
    facts = Page((run / "report.html").read_text("utf-8")).facts()
    assert list(facts) == ["run directory", "command", "started", "duration", "versions", "data", "split sizes",
                           "preprocessing", "model", "training", "training time", "best epoch"]
    assert facts["run directory"] == str(run)
    assert facts["command"] == shlex.join(["vaekit", "train", "--data", "digits", "--out", "runs/a"])
    assert facts["started"] == "2026-05-28 20:26:40 UTC"
    assert facts["duration"].startswith("2 min 06 s (the command")
    v = software_versions()
    assert facts["versions"] == f"vaekit {v['vaekit']}, torch {v['torch']}, Python {v['python']}"
    assert facts["data"] == "digits (split seed 0, validation fraction 0.1, test fraction 0.1)"
    assert facts["split sizes"] == "train 1437, validation 180, test 180 examples"
    assert facts["best epoch"] == "3 (validation ELBO -45.2500 nats per example)"
    assert facts["training time"] == "6.0 s in 4 epochs"
    assert facts["model"].startswith("data shape 1×8×8; mlp") and "latent dim 3" in facts["model"]


def test_a_run_without_run_json_says_what_was_not_recorded(run: Path) -> None:
    RunLayout.of(run).run_info.unlink()
    write_run_report(run)
    text = (run / "report.html").read_text("utf-8")
    assert text.count("not recorded (the run was trained before vaekit wrote run.json)") == 5
    assert text.count("data:image/png;base64,") == 2                  # the figures recorded before


def test_history_is_a_table_with_the_best_epoch_marked_and_no_constant_columns(run: Path) -> None:
    page = Page((run / "report.html").read_text("utf-8"))
    heads = [text for _, text in page.find("th", scope="col")]
    assert heads[:4] == ["epoch", "train ELBO (nats/example)", "train KL (nats/example)",
                         "train reconstruction (nats/example)"]
    assert "β" not in heads and "learning rate" not in heads          # constant: a sentence says so
    assert "train loss (nats/example)" not in heads                   # the loss is −ELBO
    assert "skipped steps" not in heads and "val log p(x) (nats/example)" not in heads
    best = page.find("tr", class_="best")
    assert len(best) == 1 and best[0][1].startswith("3 ★")
    assert any(t.startswith("β = 1 and the learning rate = 0.001 at every epoch.") for _, t in page.find("p"))


def test_a_changing_schedule_is_a_column_and_a_panel(tmp_path: Path) -> None:
    history = _history(lr=(1e-3, 8e-4, 4e-4, 1e-4))
    for row in history:
        row["train_loss"] += 0.5                                        # e.g. free bits: the loss is not −ELBO
    run = make_run(tmp_path / "r", history=history)
    heads = [text for _, text in Page((run / "report.html").read_text("utf-8")).find("th", scope="col")]
    assert "learning rate" in heads and "train loss (nats/example)" in heads and "β" not in heads
    assert curves.drawn_panels(history) == ["elbo", "kl", "reconstruction", "schedule"]
    assert "β = 1 at every epoch" in curves.training_curves_caption(history)


def test_the_flat_schedule_panel_is_left_out(tmp_path: Path) -> None:
    flat = _history()
    assert curves.drawn_panels(flat) == ["elbo", "kl", "reconstruction"]
    assert curves.constant_schedule(flat) == {"beta": 1.0, "lr": 0.001}
    assert curves.training_curves_caption(flat).endswith("β = 1 and the learning rate = 0.001 at every epoch "
                                                         "(no schedule panel)")
    with Image.open(curves.plot_training_curves(flat, tmp_path / "flat.png")) as im:
        assert im.size == (1400, 400)                                   # three panels side by side, not two by two
    only_val = [{"epoch": 1, "val_elbo": -3.0}, {"epoch": 2, "val_elbo": -2.0}]
    assert curves.drawn_panels(only_val) == ["elbo"]
    assert curves.drawn_panels([{"epoch": 1, "beta": 1.0}]) == []       # write_figures then draws no curves


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    root = tmp_path / "<em>run&co"                                     # a folder name is the user's string too
    make_run(root, command=("train", "--data", "a&b<c>.npy", "--out", "<script>alert(1)</script>"))
    layout = RunLayout.of(root)
    write_run_report(root, {'<img src=x onerror="alert(2)">': layout.figure("prior-samples")})
    text = (root / "report.html").read_text("utf-8")
    page = Page(text)                                                  # also: every tag is closed in order
    assert not {name for name, _, _ in page.elements} & {"script", "em", "iframe", "object", "embed", "link"}
    images = page.find("img")
    assert len(images) == 1 and str(images[0][0]["src"]).startswith("data:image/png;base64,")
    assert images[0][0]["alt"] == '<img src=x onerror="alert(2)">'
    assert page.find("h1")[0][1] == "vaekit run <em>run&co"            # shown as text
    assert page.facts()["command"] == "vaekit train --data 'a&b<c>.npy' --out '<script>alert(1)</script>'"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;em&gt;run&amp;co" in text
    assert 'onerror="' not in text and "onerror=&quot;alert(2)&quot;" in text
    assert "http://" not in text and "https://" not in text and "url(" not in text


def test_the_comparison_puts_runs_side_by_side(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", latent_dim=2, evaluation={"log_likelihood": -40.125, "elbo": -46.0,
                                                           "posterior_gap": 0.5, "bits_per_dim": None})
    page = Page(write_comparison([a, b], tmp_path / "cmp.html").read_text("utf-8"))
    numbers = page.numbers()
    assert numbers[("a", "log_likelihood")] == (EVALUATION["log_likelihood"], "-44.8647")
    assert numbers[("b", "log_likelihood")] == (-40.125, "-40.1250")
    assert numbers[("b", "latent_dim")] == (2, "2") and ("b", "bits_per_dim") not in numbers
    best = [text for _, text in page.find("td", class_="num best")]
    assert best == ["-40.1250 ± 0.2450", "-45.5952", "0.5000"]  # log p(x) (b), ELBO (a), gap (b); bits/dim: a alone
    settings = [text for _, text in page.find("th", scope="row")]
    assert "model.latent_dim" in settings and "train.lr" in settings  # differs; shared (collapsed)
    images = page.find("img")
    assert len(images) == 2 + 2 + 1                                    # each run's two figures and the overlay
    assert [t for _, t in page.find("h3")] == ["Training curves per epoch (nats per example)", "Prior samples"]


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", latent_dim=2)
    out = tmp_path / "both.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert "vaekit: 2 runs compared" in out.read_text("utf-8")
    (tmp_path / "empty").mkdir()
    for args, needle in ((["report", str(a), str(tmp_path / "nope")], "nope: no such run directory"),
                         (["report", str(a), str(tmp_path / "empty")], "not a vaekit run directory"),
                         (["report", str(a), "--out", str(out)], "file exists; pass --force"),
                         (["report", str(a), "--out", str(tmp_path / "x.png")], "use .html")):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vaekit report: error: ") and needle in err, err
    assert main(["report", str(a), "--out", str(out), "--force"]) == 0


def test_redrawn_figures_keep_the_summary_and_the_best_epoch(run: Path) -> None:
    """What ``vaekit figures`` does after drawing (tests/test_report_browser.py runs the command itself):
    the report it rewrites reads the summary and the best epoch from the run, as at the end of training."""
    before = Page((run / "report.html").read_text("utf-8"))
    layout = RunLayout.of(run)
    write_run_report(run, {"Redrawn": _png(layout.figure("latent-scatter"), (0, 120, 0))})
    after = Page((run / "report.html").read_text("utf-8"))
    assert after.numbers() == before.numbers()
    assert after.facts()["best epoch"] == before.facts()["best epoch"]
    assert after.facts()["best epoch"] == "3 (validation ELBO -45.2500 nats per example)"
    assert len(after.find("tr", class_="best")) == 1
    assert [t for _, t in after.find("figcaption")] == ["Redrawn"]       # the figures just drawn, and only those


def test_run_json_appends_one_session_per_command(tmp_path: Path) -> None:
    layout = RunLayout.of(tmp_path)
    assert read_run_info(layout) is None
    record_session(layout, new_session(["vaekit", "train"], started=STARTED, finished=STARTED + 3.25), {"train": 5})
    record_session(layout, new_session(["vaekit", "train", "--resume"], started=STARTED + 10, resumed=True),
                   {"train": 5, "val": 2})
    doc = read_run_info(layout)
    assert doc is not None and [s["command"] for s in doc["sessions"]] == [["vaekit", "train"],
                                                                          ["vaekit", "train", "--resume"]]
    assert doc["sessions"][0]["duration_s"] == 3.25 and doc["sessions"][0]["started"] == "2026-05-28T20:26:40Z"
    assert doc["sessions"][1]["resumed"] is True and doc["splits"] == {"train": 5, "val": 2}
    layout.run_info.write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="run.json: not a vaekit run-info document"):
        read_run_info(layout)


def test_numbers_round_trip_exactly_through_the_page() -> None:
    from vaekit.viz.run_report import number_span

    for value in (0.1 + 0.2, -1e-300, 123456789.123456789, float(np.float32(0.3))):
        span = Page(f"<p>{number_span({'v': value}, 'v')}</p>").numbers()[(None, "v")]
        assert span[0] == value


def test_saved_evaluations_are_columns_and_training_s_is_the_summary(run: Path) -> None:
    saved = {**EVALUATION, "n": 20, "importance_samples": 10, "limit": 20, "log_likelihood": -50.0}
    (run / "evaluation-test-K10-seed0-limit20.json").write_text(json.dumps(saved))
    write_run_report(run)
    page = Page((run / "report.html").read_text("utf-8"))
    assert page.numbers()[(None, "log_likelihood")][0] == EVALUATION["log_likelihood"]
    table = next(t for t in page.tables if t[0][:2] == ["quantity", "unit"])
    assert table[0] == ["quantity", "unit", "test", "test-K10-seed0-limit20"]
    assert table[1] == ["examples", "", "180", "20"] and table[3][3] == "-50.0000 ± 0.2450"
    RunLayout.of(run).evaluation("test").unlink()                      # no evaluation of training's: the saved one
    write_run_report(run)
    page = Page((run / "report.html").read_text("utf-8"))
    assert page.numbers()[(None, "log_likelihood")] == (-50.0, "-50.0000")
    assert "Evaluated on the test split of digits: 20 examples (the first 20)." in [t for _, t in page.find("p")]
