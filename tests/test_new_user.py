"""What a new user meets (issue 33): numbers that add up and carry their K and units, errors worded with the
command's options."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import torch

import vaekit
from vaekit.cli import main
from vaekit.cli.evaluate_cmd import _decomposition_rows
from vaekit.inference.gaps import Refinement


def _number(text: str) -> float:
    return float(re.match(r"\s*(-?[0-9.]+)", text).group(1))


def test_the_gap_decomposition_adds_up_to_the_gap_printed_beside_it():
    """amortisation + approximation = the decomposition's own log p(x) − ELBO(q) (the tighter of the two
    samplers, and ELBO(q) by its S draws), and the rows printed say so, each end with its K or S."""
    torch.manual_seed(0)
    model = vaekit.build_vae(vaekit.VAEConfig((6,), latent_dim=2, hidden=(8,), decoder_variance=0.5))
    x = torch.randn(12, 6)
    r = vaekit.evaluate(model, x, importance_samples=30, refinement=Refinement(steps=5, samples=2),
                        gap_elbo_samples=20)
    assert r.amortisation_gap is not None and r.approximation_gap is not None
    assert math.isclose(r.amortisation_gap + r.approximation_gap, r.gap_log_likelihood - r.gap_elbo, abs_tol=1e-9)
    assert r.gap_log_likelihood == max(r.log_likelihood, r.refined_log_likelihood)
    assert r.gap_proposal == ("q*" if r.refined_log_likelihood > r.log_likelihood else "q")
    rows = dict(_decomposition_rows(r))
    assert "  ELBO(q), S = 20 draws" in rows and f"  log p(x), K = 30, proposal {r.gap_proposal}" in rows
    total = _number(rows["  log p(x) - ELBO(q)"])
    parts = _number(rows["    = amortisation gap ELBO(q*) - ELBO(q)"]) + _number(
        rows["    + approximation gap log p(x) - ELBO(q*)"])
    assert abs(total - parts) <= 2e-4                                # the printed figures add up (4 decimals)


def test_missing_mnist_is_worded_with_the_command_options(tmp_path, capsys):
    code = main(["train", "--data", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--download" in err and "--data-dir" in err and "download=True" not in err
    assert not (tmp_path / "run").exists()


def test_a_table_runs_summary_gives_the_validation_elbo_in_the_data_units(tmp_path, capsys):
    """The summary's best validation ELBO is the training metric (standardised units) plus the log-Jacobian
    −Σ_d log s_d, the units of the test numbers printed under it."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(200, 3)) * np.array([100.0, 0.01, 5.0])
    np.savetxt(tmp_path / "t.csv", table, delimiter=",")
    code = main(["train", "--data", str(tmp_path / "t.csv"), "--epochs", "2", "--hidden", "8", "--latent-dim", "2",
                 "--no-figures", "--no-progress", "--importance-samples", "5", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(x for x in out.splitlines() if x.startswith("best validation ELBO"))
    assert "of the data as given" in line and "of the standardised data" not in out
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(m["val_elbo"] for m in metrics)
    prep = json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["preprocessing"]
    log_jacobian = -float(np.log(np.asarray(prep["std"], dtype=np.float64)).sum())
    assert math.isclose(_number(line.split(":", 1)[1]), best + log_jacobian, abs_tol=1e-3)


def _record(tmp_path, name, *, epochs, best_at, active, gap, asked=None, precision_used=None):
    from vaekit.viz.run_record import RunRecord

    history = [{"epoch": e, "val_elbo": float(e if e <= best_at else best_at - 1)} for e in range(1, epochs + 1)]
    doc = {"split": "test", "n": 10, "importance_samples": 100, "log_likelihood": 30.0, "log_likelihood_se": 0.5,
           "elbo": 29.0, "posterior_gap": gap, "active_units": active, "latent_dim": 16}
    train = {"epochs": asked or epochs, "precision": "auto"}
    info = {"sessions": [{"command": ["vaekit", "train"], "precision_used": precision_used}], "splits": {}}
    return RunRecord(root=tmp_path / name, config={"model": {}, "extra": {"train": train}}, history=history,
                     evaluations={"test": doc}, info=info if precision_used else None, figures=[])


def test_the_report_says_what_to_do_next(tmp_path):
    from vaekit.viz.run_advice import DIRECTIONS, advice

    rising = advice(_record(tmp_path, "a", epochs=5, best_at=5, active=16, gap=4.0, precision_used="bf16"))
    assert rising[0] == DIRECTIONS
    assert any("still improving" in n and "--resume --epochs 10" in n for n in rising)
    assert any("--precision auto trained in bf16" in n for n in rising)
    assert not any("collapse" in n for n in rising)
    settled = advice(_record(tmp_path, "b", epochs=5, best_at=3, active=0, gap=0.01))
    assert not any("still improving" in n for n in settled)
    assert any("No active units (0 of 16)" in n for n in settled)
    stopped = advice(_record(tmp_path, "c", epochs=5, best_at=5, active=16, gap=1.0, asked=50))
    assert not any("still improving" in n for n in stopped)         # stopped early: not "train longer"


def test_the_comparison_never_marks_a_collapsed_run_best_on_the_posterior_gap(tmp_path):
    from vaekit.viz.compare import _summary_rows

    records = [_record(tmp_path, "good", epochs=3, best_at=2, active=16, gap=4.0),
               _record(tmp_path, "collapsed", epochs=3, best_at=2, active=0, gap=0.01)]
    rows, notes = _summary_rows(records, ["good", "collapsed"])
    gap_row = next(r for r in rows if "posterior gap" in str(r[0]))
    assert gap_row[2][1] == "num best" and gap_row[3][1] == "num"
    assert any(n.startswith("collapsed: no active units") for n in notes)


def test_a_conditional_grid_is_labelled_with_its_classes(tmp_path):
    from PIL import Image

    from vaekit.viz.conditional import class_columns
    from vaekit.viz.grids import image_grid

    model = vaekit.build_vae(vaekit.VAEConfig((1, 8, 8), latent_dim=2, hidden=(8,), num_classes=3,
                                              class_names=("cat", "dog", "emu")))
    assert class_columns(model, 3) == ["cat", "dog", "emu"] and class_columns(model, None) is None
    plain_model = vaekit.build_vae(vaekit.VAEConfig((1, 8, 8), latent_dim=2, hidden=(8,)))
    assert class_columns(plain_model, 3) is None
    images = np.random.default_rng(0).random((6, 1, 8, 8))
    bare = np.asarray(Image.open(image_grid(images, tmp_path / "a.png", nrow=3)).convert("L"))
    named = np.asarray(Image.open(image_grid(images, tmp_path / "b.png", nrow=3, col_labels=["cat", "dog", "emu"]))
                       .convert("L"))
    extra = named.shape[0] - bare.shape[0]
    assert extra > 0 and (named[:extra] < 128).any()                  # a band of text above the columns
    np.testing.assert_array_equal(named[extra:], bare)                # the tiles themselves unchanged


def test_a_tables_heatmaps_name_its_columns(tmp_path):
    from vaekit.data.csv_files import read_column_names
    from vaekit.store.runs import DataSpec
    from vaekit.viz.tables import _table_figure, _table_pair_figure

    (tmp_path / "t.csv").write_text("height,label,weight\n1.5,0,60\n1.7,1,70\n", encoding="utf-8")
    (tmp_path / "bare.csv").write_text("1.5,0,60\n1.7,1,70\n", encoding="utf-8")
    assert read_column_names(tmp_path / "t.csv") == ["height", "label", "weight"]
    assert read_column_names(tmp_path / "t.csv", "label") == ["height", "weight"]
    assert read_column_names(tmp_path / "t.csv", "1") == ["height", "weight"]
    assert read_column_names(tmp_path / "bare.csv") is None and read_column_names(tmp_path / "gone.csv") is None
    assert DataSpec(spec=str(tmp_path / "t.csv"), label_column="label").column_names() == ["height", "weight"]
    assert DataSpec(spec="digits").column_names() is None
    table = np.arange(6.0).reshape(3, 2)
    fig = _table_figure(table, None, ["height", "weight"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["height", "weight"]
    pair = _table_pair_figure(table, table + 1, ["height", "weight"])
    assert [t.get_text() for t in pair.axes[1].get_xticklabels()] == ["height", "weight"]
