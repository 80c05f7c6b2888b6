"""Outputs a person looks at: ``vaekit sample --clip``, interpolations framed by their two originals,
small images drawn large enough to see, and a latent scatter of a training subsample."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import VAEConfig, build_vae
from vaekit.cli import main
from vaekit.cli import run_access as ra
from vaekit.data import Preprocessing, fit_preprocessing, load_dataset
from vaekit.errors import ShapeError
from vaekit.store.model_files import save_model
from vaekit.store.runs import DataSpec, eval_tensor, load_run, split_of
from vaekit.viz import figures as fig_mod
from vaekit.viz import plots
from vaekit.viz.mosaic import _MAX_PX, _MIN_TILE_PX, _PAD, _Grid, _scale_for

SHAPE = (1, 8, 8)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _tile_pixels(img: np.ndarray, grid: _Grid, scale: int, row: int, col: int, top: int = 0) -> np.ndarray:
    """The (tile_h, tile_w) grey values at the centres of the enlarged pixels of one tile."""
    y0 = top + (grid.pad + row * (grid.tile_h + grid.pad)) * scale
    x0 = (grid.pad + col * (grid.tile_w + grid.pad)) * scale
    ys = y0 + np.arange(grid.tile_h) * scale + scale // 2
    xs = x0 + np.arange(grid.tile_w) * scale + scale // 2
    return img[np.ix_(ys, xs)][..., 0].astype(float)


# --------------------------------------------------------------------------- small images are drawn large


@pytest.mark.parametrize("rows, cols, tile", [(2, 16, 8), (8, 8, 8), (1, 1, 8), (4, 12, 8), (2, 16, 28)])
def test_small_tiles_get_a_minimum_pixel_size(rows, cols, tile):
    grid = _Grid(rows=rows, cols=cols, tile_h=tile, tile_w=tile)
    s = _scale_for(grid)
    assert s * tile >= _MIN_TILE_PX                      # an 8x8 digit is at least 48 px across
    assert max(grid.height, grid.width) * s <= _MAX_PX


def test_minimum_pixel_size_gives_way_to_the_largest_image():
    grid = _Grid(rows=1, cols=200, tile_h=8, tile_w=8)   # 2002 px at scale 1: 6x would be 12012 px
    assert _scale_for(grid) == 1


def test_reconstructions_of_8x8_digits_are_pixel_exact_and_large(tmp_path):
    rng = np.random.default_rng(0)
    orig, rec = rng.random((16, *SHAPE)), rng.random((16, *SHAPE))
    img = _png(plots.plot_reconstructions(orig, rec, tmp_path / "r.png"))
    grid = _Grid(rows=2, cols=16, tile_h=8, tile_w=8)
    s = _scale_for(grid)
    assert s >= 6 and img.shape[1] >= grid.width * s    # row labels on the left add to the width
    left = img.shape[1] - grid.width * s                 # the mosaic is right of the row labels
    tile = _tile_pixels(img[:, left:], grid, s, 1, 3)
    np.testing.assert_allclose(tile, np.round(rec[3, 0] * 255), atol=1)
    block = img[_PAD * s: _PAD * s + s, left + _PAD * s: left + _PAD * s + s, 0]
    assert block.min() == block.max()                    # nearest neighbour: one source pixel, s x s equal pixels


# --------------------------------------------------------------------------- interpolations with their originals


def test_interpolation_rows_start_and_end_with_the_originals(tmp_path):
    pairs, steps = 3, 5
    t = np.linspace(0, 1, steps)
    starts = np.ones((pairs, *SHAPE))                                   # white
    ends = np.zeros((pairs, *SHAPE))                                    # black
    path = np.broadcast_to(t[None, :, None, None, None] * 0.5 + 0.25, (pairs, steps, *SHAPE)).copy()
    img = _png(plots.plot_interpolations(path, tmp_path / "i.png", starts=starts, ends=ends, values=t))
    grid = _Grid(rows=pairs, cols=steps + 4, tile_h=8, tile_w=8)
    s = _scale_for(grid)
    top = img.shape[0] - grid.height * s                                # the column labels are above
    assert img.shape[1] == grid.width * s and top > 0
    for r in range(pairs):
        assert np.all(_tile_pixels(img, grid, s, r, 0, top) == 255)               # x_a first
        assert np.all(_tile_pixels(img, grid, s, r, steps + 3, top) == 0)         # x_b last
        assert np.all(np.abs(_tile_pixels(img, grid, s, r, 1, top) - 0.5 * 255) <= 1)  # a blank column between
        for j in range(steps):
            np.testing.assert_allclose(_tile_pixels(img, grid, s, r, j + 2, top), round((t[j] * 0.5 + 0.25) * 255),
                                       atol=1)


def test_interpolation_shapes_are_checked(tmp_path):
    path = np.zeros((2, 4, *SHAPE))
    with pytest.raises(ShapeError, match="starts"):
        plots.plot_interpolations(path, tmp_path / "i.png", starts=np.zeros((3, *SHAPE)), ends=np.zeros((2, *SHAPE)))
    with pytest.raises(ShapeError, match="values"):
        plots.plot_interpolations(path, tmp_path / "i.png", starts=np.zeros((2, *SHAPE)),
                                  ends=np.zeros((2, *SHAPE)), values=[0, 1])


# --------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An image run whose decoder mean leaves [0, 1] (weights scaled up), and a table run."""
    root = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    model = build_vae(VAEConfig(SHAPE, latent_dim=2, arch_args={"hidden": (16,)}))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    prep = fit_preprocessing(load_dataset("digits"), "gaussian")
    save_model(model, root / "images", extra={"preprocessing": prep.to_dict(), "data": DataSpec().to_dict(),
                                             "train": {}})
    table = build_vae(VAEConfig((5,), latent_dim=2, arch_args={"hidden": (8,)}))
    save_model(table, root / "table", extra={"preprocessing": Preprocessing("tabular", None, None, None, False,
                                                                            False).to_dict(),
                                             "data": DataSpec().to_dict(), "train": {}})
    return root


def test_sample_default_is_the_unclipped_mean_and_clip_clips_it(runs, capsys):
    raw, clipped = runs / "raw.npy", runs / "clipped.npy"
    assert main(["sample", str(runs / "images"), "--n", "32", "--out", str(raw), "--seed", "4"]) == 0
    assert main(["sample", str(runs / "images"), "--n", "32", "--out", str(clipped), "--seed", "4", "--clip"]) == 0
    a, b = np.load(raw), np.load(clipped)
    assert a.min() < 0 and a.max() > 1                  # a Gaussian decoder's mean is not bounded
    np.testing.assert_array_equal(b, np.clip(a, 0, 1))  # the same draws, clipped to the images' range
    assert "clipped to [0, 1]" in capsys.readouterr().out


def test_sample_help_says_the_default_is_the_unclipped_mean(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--clip" in text and "unclipped mean E[x|z]" in text


def test_clip_on_a_continuous_table_is_a_one_line_error(runs, capsys):
    assert main(["sample", str(runs / "table"), "--out", str(runs / "t.npy"), "--clip"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--clip" in err and "no known range" in err and len(err.splitlines()) == 1
    assert not (runs / "t.npy").exists()


def test_interpolate_png_shows_the_test_examples_at_both_ends(runs):
    out = runs / "interp.png"
    assert main(["interpolate", str(runs / "images"), "--pairs", "2", "--steps", "5", "--out", str(out)]) == 0
    run = load_run(runs / "images")
    x, _ = split_of(run.data.load(), "test", 4)
    x = eval_tensor(run.preprocessing, x, seed=ra.EVAL_DATA_SEED).numpy()           # as every command sees it
    img = _png(out)
    grid = _Grid(rows=2, cols=5 + 4, tile_h=8, tile_w=8)
    s = _scale_for(grid)
    top = img.shape[0] - grid.height * s
    for r in range(2):
        np.testing.assert_allclose(_tile_pixels(img, grid, s, r, 0, top), np.round(x[2 * r, 0] * 255), atol=1)
        np.testing.assert_allclose(_tile_pixels(img, grid, s, r, 8, top), np.round(x[2 * r + 1, 0] * 255), atol=1)


# --------------------------------------------------------------------------- the latent scatter


def test_scatter_indices_are_a_seeded_subsample():
    small = fig_mod.scatter_indices(300)
    np.testing.assert_array_equal(small, np.arange(300))              # fewer than N_SCATTER: all of them
    big = fig_mod.scatter_indices(60_000)
    assert big.shape == (fig_mod.N_SCATTER,) and fig_mod.N_SCATTER >= 2000
    assert np.all(np.diff(big) > 0) and big[-1] < 60_000               # sorted, distinct, in range
    assert big[-1] > 50_000                                            # spread over the whole split, not its head
    np.testing.assert_array_equal(big, fig_mod.scatter_indices(60_000))


def test_figures_command_scatters_the_training_split(runs):
    run = load_run(runs / "images")
    args = argparse.Namespace(split="test", data=None, data_dir=None)
    got = ra.training_scatter(run, args, torch.device("cpu"))
    assert got is not None
    x, labels = got
    dataset = run.data.load()
    index = fig_mod.scatter_indices(len(dataset.train))
    assert x.shape[0] == len(dataset.train) > 1000                     # the digits training split, not the test 180
    assert labels is not None and dataset.train_labels is not None
    np.testing.assert_array_equal(labels, dataset.train_labels[index])
    expected = eval_tensor(run.preprocessing, dataset.train[index], seed=ra.EVAL_DATA_SEED)
    torch.testing.assert_close(x, expected)
    assert ra.training_scatter(run, argparse.Namespace(split="all", data="digits", data_dir=None),
                               torch.device("cpu")) is None


def test_write_figures_caption_counts_the_training_examples(runs, tmp_path):
    run = load_run(runs / "images")
    dataset = run.data.load()
    test_x = eval_tensor(run.preprocessing, dataset.test[:20])
    train_x = eval_tensor(run.preprocessing, dataset.train[:300])
    figures = fig_mod.write_figures(tmp_path, model=run.model, x=test_x, labels=dataset.test_labels[:20],
                                    history=[], scatter=(train_x, dataset.train_labels[:300]))
    caption = next(c for c in figures if c.startswith("Latent space"))
    assert "of 300 training examples" in caption
    with pytest.raises(ShapeError, match="scatter"):
        fig_mod.write_figures(tmp_path, model=run.model, x=test_x, labels=None, history=[],
                              scatter=(train_x, dataset.train_labels[:10]))
