"""vaekit.viz.figures: the PNGs of a run and its report."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import ShapeError, VAEConfig, build_vae
from vaekit.store.model_files import save_model
from vaekit.viz.figures import write_figures, write_run_report

HISTORY = [{"epoch": e, "train_elbo": -10.0 + e, "val_elbo": -11.0 + e, "train_kl": 1.0, "val_kl": 1.1,
            "train_reconstruction": -9.0 + e, "val_reconstruction": -10.0 + e, "beta": 1.0, "lr": 1e-3}
           for e in (1, 2, 3)]


def _check_pngs(run_dir: Path, figures: dict[str, Path], names: set[str]) -> None:
    assert {p.name for p in figures.values()} == names
    for caption, path in figures.items():
        assert caption and path.parent == run_dir / "figures" and path.is_file()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 10 and im.height > 10


ALL = {"training-curves.png", "reconstructions.png", "prior-samples.png", "latent-scatter.png",
       "latent-traversals.png"}


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_image_model_with_labels_and_history(tmp_path, likelihood):
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 8, 8), latent_dim=10, hidden=(16,), likelihood=likelihood))
    x = torch.rand(40, 1, 8, 8)
    x = x.round() if likelihood == "bernoulli" else x
    figures = write_figures(tmp_path, model=model, x=x, labels=np.arange(40) % 4, history=HISTORY, seed=3)
    _check_pngs(tmp_path, figures, ALL)
    traversal = next(c for c, p in figures.items() if p.name == "latent-traversals.png")
    assert "8 latent dims" in traversal                          # K = 10 > 8: the 8 with the largest KL
    assert model.training                                        # mode restored


def test_rgb_model_without_labels_or_history(tmp_path):
    model = build_vae(VAEConfig((3, 4, 5), latent_dim=2, hidden=(8,)))
    figures = write_figures(tmp_path, model=model, x=torch.rand(12, 3, 4, 5), labels=None, history=[])
    _check_pngs(tmp_path, figures, ALL - {"training-curves.png"})


def test_tabular_model_draws_heatmaps(tmp_path):
    model = build_vae(VAEConfig((5,), latent_dim=3, hidden=(8,)))
    figures = write_figures(tmp_path, model=model, x=torch.randn(30, 5), labels=np.linspace(0, 1, 30),
                            history=HISTORY)
    _check_pngs(tmp_path, figures, ALL)
    figures = write_figures(tmp_path / "b", model=model, x=torch.randn(30, 5), labels=None, history=[])
    _check_pngs(tmp_path / "b", figures, ALL - {"training-curves.png"})


def test_prior_samples_are_seeded(tmp_path):
    model = build_vae(VAEConfig((1, 6, 6), latent_dim=2, hidden=(8,)))
    x = torch.rand(10, 1, 6, 6)
    a = write_figures(tmp_path / "a", model=model, x=x, labels=None, history=[], seed=1)
    b = write_figures(tmp_path / "b", model=model, x=x, labels=None, history=[], seed=1)
    pa = next(p for p in a.values() if p.name == "prior-samples.png")
    pb = next(p for p in b.values() if p.name == "prior-samples.png")
    assert pa.read_bytes() == pb.read_bytes()


def test_labels_must_match_examples(tmp_path):
    model = build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,)))
    with pytest.raises(ShapeError, match="labels"):
        write_figures(tmp_path, model=model, x=torch.randn(10, 4), labels=np.zeros(9), history=[])


def test_run_report_embeds_figures_and_metrics(tmp_path):
    model = build_vae(VAEConfig((4,), latent_dim=2, hidden=(8,)))
    save_model(model, tmp_path, extra={})
    (tmp_path / "evaluation-test.json").write_text('{"n": 10, "elbo": -3.25, "bits_per_dim": null}')
    figures = write_figures(tmp_path, model=model, x=torch.randn(10, 4), labels=None, history=[])
    path = write_run_report(tmp_path, figures)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert 'data-key="elbo" data-value="-3.25">-3.2500<' in text and 'data-key="bits_per_dim"' not in text
    assert text.count("data:image/png;base64,") == len(figures)
    assert all(html.escape(caption) in text for caption in figures)
    assert "model.latent_dim" in text
