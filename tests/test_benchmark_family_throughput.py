"""The model-family throughput benchmark (benchmarks/family_throughput.py): its families are valid models that
differ from the baseline as documented, its table computes the ratios to the baseline, and (slow) the script runs
end to end on tiny sizes and writes finite JSON with every family. The real run is in BENCHMARKS.md."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from mnist_skip import HOW

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
MNIST = REPO.parent / "shared" / "data" / "mnist"
sys.path.insert(0, str(BENCH))

import family_throughput as ft  # noqa: E402

from vaekit import VAEConfig  # noqa: E402

NAMES = ["mlp", "conv", "resnet", "mixture", "vamp", "iaf", "layers2", "conditional", "logistic", "logistic-mixture"]


def _finite(value, path="") -> None:
    """Every number in a JSON document is finite (json.loads turns NaN/Infinity into floats)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{path}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{path} = {value}"


def test_families_are_the_baseline_with_one_change():
    assert [name for name, _, _ in ft.FAMILIES] == NAMES
    base = VAEConfig(**ft.BASE).to_dict()
    assert base["arch_args"] == {"hidden": [200, 200], "activation": "tanh"} and base["latent_dim"] == 50
    expected = {"mlp": set(), "conv": {"arch", "arch_args"}, "resnet": {"arch", "arch_args"},
                "mixture": {"prior", "prior_args"}, "vamp": {"prior", "prior_args"},
                "iaf": {"posterior", "posterior_args"}, "layers2": {"layers", "latent_dim", "layer_args"},
                "conditional": {"num_classes"}, "logistic": {"likelihood", "likelihood_args"},
                "logistic-mixture": {"likelihood", "likelihood_args"}}
    for name, _, changes in ft.FAMILIES:
        d = VAEConfig(**{**ft.BASE, **changes}).to_dict()
        changed = {k for k in set(d) | set(base) if d.get(k) != base.get(k)}
        assert changed == expected[name], name
    changes = {name: c for name, _, c in ft.FAMILIES}
    layers2 = VAEConfig(**{**ft.BASE, **changes["layers2"]})
    assert layers2.layer_args["latent_dims"] == [50] and layers2.latent_dim == 100   # IWAE: 100 then 50


def test_table_ratios_are_against_the_mlp():
    fams = [SimpleNamespace(name=n, options=o) for n, o, _ in ft.FAMILIES[:3]]
    medians = {"mlp": {"train": 20000.0, "eval": 1000.0, "parameters": 10},
               "conv": {"train": 5000.0, "eval": 250.0, "parameters": 20},
               "resnet": {"train": 1280.0, "eval": 50.0, "parameters": 30}}
    rows = ft.table(fams, medians, SimpleNamespace(samples=100, batch_size=128)).splitlines()
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]
    assert [c[0] for c in cells] == ["mlp", "conv", "resnet"]
    assert [c[5] for c in cells] == ["1.00", "0.25", "0.06"]           # train ex/s over the mlp's
    assert [c[8] for c in cells] == ["1.000", "0.250", "0.050"]        # eval images/s over the mlp's
    assert cells[2][4] == "100.0"                                       # ms/step = 1000 · 128 / 1280
    assert cells[1][7] == "4.00"                                        # ms/image = 1000 / 250


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason=f"real MNIST not found in {MNIST}" + HOW)
def test_family_throughput_smoke(tmp_path):
    out = tmp_path / "fam.json"
    proc = subprocess.run([sys.executable, str(BENCH / "family_throughput.py"), "--threads", "1", "--rounds", "2",
                           "--train-seconds", "0.01", "--eval-seconds", "0.01", "--images", "4", "--samples", "4",
                           "--out", str(out)], check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    _finite(doc)
    for key in ("machine", "torch_version", "date", "threads", "command", "load_average_before",
                "load_average_after"):
        assert key in doc
    assert doc["threads"] == 1 and doc["samples"] == 4 and doc["images"] == 4 and doc["rounds_count"] == 2
    assert list(doc["families"]) == NAMES
    assert [sorted(r["families"]) for r in doc["rounds"]] == [sorted(NAMES)] * 2
    assert doc["families"]["mlp"]["train_over_mlp"] == 1.0 and doc["families"]["mlp"]["eval_over_mlp"] == 1.0
    for name, fam in doc["families"].items():
        per = [r["families"][name] for r in doc["rounds"]]
        assert fam["median_train_examples_per_second"] == pytest.approx(
            sum(p["train"]["examples_per_second"] for p in per) / 2)      # median of 2 = their mean
        assert fam["calibration"]["steps"] >= ft.MIN_STEPS
        assert all(p["train"]["steps"] == fam["calibration"]["steps"] for p in per)
        assert all(p["eval"]["log_likelihood"] < 0 for p in per)           # log p(x) of a discrete x
    for name in NAMES:
        assert f"| {name} |" in proc.stdout
