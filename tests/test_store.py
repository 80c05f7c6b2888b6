"""vaekit.store: the run directory's file names come from RunLayout; the metrics files (JSON lines and
CSV, rewritten atomically, appended per epoch); weights and versioned JSON documents; the names that
``vaekit.store.model_files`` re-exports for code written before the split."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from vaekit.errors import CheckpointError, ConfigError, DataError
from vaekit.models.config import VAEConfig
from vaekit.models.vae import build_vae
from vaekit.store import RunLayout
from vaekit.store.documents import read_versioned_json
from vaekit.store.metrics import append_metrics, read_history, rewrite_metrics
from vaekit.store.model_files import FORMAT_VERSION, load_model, read_config, save_model
from vaekit.store.weights import load_state_strict, load_weights, save_weights

FIELDS = ("epoch", "train_elbo", "val_elbo", "note")
ROWS = [{"epoch": e, "train_elbo": -10.0 + e, "val_elbo": -11.5 + e, "note": "x,y" if e == 2 else None}
        for e in (1, 2, 3)]


def test_rewrite_then_append_metrics(tmp_path):
    layout = RunLayout.of(tmp_path / "run")
    rewrite_metrics(layout, ROWS[:2], FIELDS)
    append_metrics(layout, ROWS[2], FIELDS)
    assert read_history(layout.metrics_jsonl) == ROWS == read_history(layout)
    assert layout.metrics_jsonl.read_text() == "".join(json.dumps(r) + "\n" for r in ROWS)
    with layout.metrics_csv.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == list(FIELDS) and len(table) == 4
    assert table[2] == ["2", "-8.0", "-9.5", "x,y"] and table[1][3] == ""
    rewrite_metrics(layout, ROWS[:1], FIELDS)               # a resumed run: the history it continues from
    assert read_history(layout) == ROWS[:1]
    assert len(layout.metrics_csv.read_text().splitlines()) == 2
    assert sorted(p.name for p in layout.root.iterdir()) == ["metrics.csv", "metrics.jsonl"]   # no temporaries


def test_append_to_a_new_run_writes_the_header_once(tmp_path):
    layout = RunLayout.of(tmp_path)
    for row in ROWS:
        append_metrics(layout, row, FIELDS)
    lines = layout.metrics_csv.read_text().splitlines()
    assert lines[0] == ",".join(FIELDS) and len(lines) == 4
    with pytest.raises(ValueError):                          # a key the CSV has no column for
        append_metrics(layout, {"epoch": 4, "colour": "red"}, FIELDS)


def test_read_history_of_a_missing_or_malformed_file(tmp_path):
    assert read_history(tmp_path / "metrics.jsonl") == []
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n\nnot json\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:3: not valid JSON"):
        read_history(path)
    path.write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r":2: expected a JSON object"):
        read_history(path)


def test_save_model_writes_format_2_through_the_layout(tmp_path):
    model = build_vae(VAEConfig((4,), latent_dim=2, arch="linear"))
    save_model(model, tmp_path / "m", extra={"note": 1})
    layout = RunLayout.of(tmp_path / "m")
    doc = json.loads(layout.config.read_text())
    assert doc["format"] == "vaekit-model" and doc["format_version"] == FORMAT_VERSION == 2
    assert doc["model"]["arch"] == "linear" and doc["model"]["arch_args"] == {}
    assert sorted(p.name for p in layout.root.iterdir()) == sorted([layout.config.name, layout.weights.name])
    config, extra = read_config(layout.root)
    assert config == model.config and extra == {"note": 1}
    loaded = load_model(layout.root)
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_a_bad_model_dict_names_the_file(tmp_path):
    save_model(build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,))), tmp_path)
    path = RunLayout.of(tmp_path).config
    doc = json.loads(path.read_text())
    doc["model"]["latent_dims"] = 3
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"config.json: model config: unknown keys \['latent_dims'\]"):
        read_config(tmp_path)


def test_weights_and_documents(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(7)}
    save_weights(state, tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    assert all(torch.equal(state[k], loaded[k]) for k in state) and sorted(loaded) == ["a", "b"]
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "nothing.safetensors")
    module = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"w.safetensors: weights do not match the linear layer"):
        load_state_strict(module, loaded, tmp_path / "w.safetensors", "the linear layer")
    path = tmp_path / "doc.json"
    for doc, message in (({"format": "other", "format_version": 1}, "not a vaekit thing"),
                         ({"format": "fmt", "format_version": 5}, "newer than this vaekit reads"),
                         ({"format": "fmt", "format_version": True}, "newer"),
                         ({"format": "fmt", "format_version": 0}, "not one this vaekit reads")):
        path.write_text(json.dumps(doc))
        with pytest.raises(CheckpointError, match=message):
            read_versioned_json(path, fmt="fmt", max_version=2, what="thing", missing="gone")
    path.write_text(json.dumps({"format": "fmt", "format_version": 2, "x": 1}))
    assert read_versioned_json(path, fmt="fmt", max_version=2, what="thing", missing="gone")["x"] == 1
    with pytest.raises(CheckpointError, match="doc2.json: gone"):
        read_versioned_json(tmp_path / "doc2.json", fmt="fmt", max_version=2, what="thing", missing="gone")


def test_names_importable_from_model_files_and_the_package():
    import vaekit.store as store
    from vaekit.store import model_files

    for name in ("save_model", "load_model", "read_config", "save_weights", "load_weights", "load_state_strict",
                 "read_versioned_json", "atomic_write_bytes", "atomic_write_json", "FORMAT_VERSION"):
        assert hasattr(model_files, name), name
    assert store.load_run.__module__ == "vaekit.store.runs" and store.read_history is read_history
    with pytest.raises(AttributeError):
        store.no_such_name  # noqa: B018
