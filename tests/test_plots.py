"""Tests of vaekit.viz.plots: valid PNGs, pixel layout of the mosaics, shape checks, PCA, tolerance."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.errors import DataError, ShapeError
from vaekit.viz import plots

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def _open_png(path: Path) -> np.ndarray:
    """Open ``path`` as a PNG, check it is a non-empty RGB image, return its pixels (H, W, 3)."""
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.mode == "RGB"
        assert im.width > 0 and im.height > 0
        return np.asarray(im).copy()


def _no_temp_files(folder: Path) -> bool:
    return not any(p.name.endswith(".tmp") for p in folder.iterdir())


def _tiles(pattern: list[list[int]], size: int = 16) -> np.ndarray:
    """Grayscale images (N, 1, size, size), all-white (1) or all-black (0), row-major from ``pattern``."""
    flat = [v for row in pattern for v in row]
    return np.stack([np.full((1, size, size), float(v)) for v in flat])


# --------------------------------------------------------------------------- image_grid


def test_image_grid_writes_png_and_returns_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    out = plots.image_grid(rng.random((10, 1, 28, 28)), tmp_path / "grid.png", title="samples")
    assert out == tmp_path / "grid.png"
    _open_png(out)
    assert _no_temp_files(tmp_path)


def test_image_grid_layout_of_white_and_black_tiles(tmp_path: Path) -> None:
    pattern = [[1, 0, 1], [0, 0, 1]]
    pixels = _open_png(plots.image_grid(_tiles(pattern), tmp_path / "g.png", nrow=3))
    h, w, _ = pixels.shape
    # 3 tiles per row, 2 rows: the picture is about 3:2 and each cell centre has its tile's colour
    assert w / h == pytest.approx(3 / 2, rel=0.1)
    for r, row in enumerate(pattern):
        for c, value in enumerate(row):
            y, x = int((r + 0.5) * h / 2), int((c + 0.5) * w / 3)
            assert tuple(pixels[y, x]) == (WHITE if value else BLACK), (r, c)
    assert (pixels == 255).all(axis=-1).any() and (pixels == 0).all(axis=-1).any()


def test_image_grid_default_is_square_and_fills_rows_first(tmp_path: Path) -> None:
    # 5 images -> ceil(sqrt(5)) = 3 per row, 2 rows; the 4th image starts the second row
    pattern = [[0, 0, 0], [1, 0]]
    pixels = _open_png(plots.image_grid(_tiles(pattern), tmp_path / "g.png"))
    h, w, _ = pixels.shape
    assert w / h == pytest.approx(3 / 2, rel=0.1)
    assert tuple(pixels[int(0.75 * h), int(w / 6)]) == WHITE
    assert tuple(pixels[int(0.25 * h), int(w / 6)]) == BLACK


def test_image_grid_rgb_colours(tmp_path: Path) -> None:
    images = np.zeros((3, 3, 8, 8))
    for i in range(3):
        images[i, i] = 1.0  # red, green, blue
    pixels = _open_png(plots.image_grid(images, tmp_path / "rgb.png", nrow=3))
    h, w, _ = pixels.shape
    expected = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for c in range(3):
        assert tuple(pixels[h // 2, int((c + 0.5) * w / 3)]) == expected[c]


def test_image_grid_clips_to_unit_interval(tmp_path: Path) -> None:
    images = np.stack([np.full((1, 8, 8), -3.0), np.full((1, 8, 8), 7.0)])
    pixels = _open_png(plots.image_grid(images, tmp_path / "clip.png", nrow=2))
    h, w, _ = pixels.shape
    assert tuple(pixels[h // 2, w // 4]) == BLACK
    assert tuple(pixels[h // 2, 3 * w // 4]) == WHITE


def test_image_grid_flat_vectors_with_shape_match_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.random((7, 1, 6, 5))
    a = _open_png(plots.image_grid(images, tmp_path / "a.png"))
    b = _open_png(plots.image_grid(images.reshape(7, 30), tmp_path / "b.png", shape=(1, 6, 5)))
    np.testing.assert_array_equal(a, b)


def test_image_grid_uint8_is_read_as_0_to_255(tmp_path: Path) -> None:
    images = np.full((1, 1, 8, 8), 255, dtype=np.uint8)
    pixels = _open_png(plots.image_grid(images, tmp_path / "u8.png"))
    assert tuple(pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]) == WHITE


def test_image_grid_tabular_vectors_draw_a_heatmap(tmp_path: Path) -> None:
    table = np.random.default_rng(2).normal(size=(30, 12))
    pixels = _open_png(plots.image_grid(table, tmp_path / "tab.png", title="tabular"))
    # a colour-mapped heatmap with axes: many distinct colours, not a grey mosaic
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize(
    ("images", "kwargs"),
    [
        (np.zeros((4, 2, 8, 8)), {}),  # 2 channels
        (np.zeros((4, 8, 8, 3)), {}),  # channels-last
        (np.zeros((4, 1, 2, 8, 8)), {}),  # 5-D
        (np.zeros((4, 50)), {"shape": (1, 7, 7)}),  # 50 values cannot make 1x7x7
        (np.zeros((0, 1, 8, 8)), {}),  # empty
    ],
)
def test_image_grid_rejects_bad_shapes(tmp_path: Path, images: np.ndarray, kwargs: dict) -> None:
    with pytest.raises(ShapeError):
        plots.image_grid(images, tmp_path / "bad.png", **kwargs)
    assert not (tmp_path / "bad.png").exists()


def test_image_grid_rejects_non_png_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png"):
        plots.image_grid(np.zeros((1, 1, 4, 4)), tmp_path / "grid.jpg")


def test_image_grid_creates_parent_folders_and_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "figures" / "deep" / "grid.png"
    plots.image_grid(np.zeros((1, 1, 4, 4)), out)
    plots.image_grid(np.ones((1, 1, 4, 4)), out)
    pixels = _open_png(out)
    assert tuple(pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]) == WHITE
    assert _no_temp_files(out.parent)


# --------------------------------------------------------------------------- training curves


def _history(epochs: int = 12) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 150 - 5 * e,
            "train_elbo": -150 + 5 * e,
            "train_kl": 10 + e,
            "train_reconstruction": -140 + 6 * e,
            "val_elbo": -152 + 5 * e,
            "val_kl": 10.5 + e,
            "val_reconstruction": -141 + 6 * e,
            "beta": min(1.0, e / 5),
            "lr": 1e-3 * 0.9**e,
        }
        for e in range(1, epochs + 1)
    ]


def test_training_curves_full_history(tmp_path: Path) -> None:
    out = plots.plot_training_curves(_history(), tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    _open_png(out)
    assert _no_temp_files(tmp_path)


def test_training_curves_tolerate_missing_keys_nan_and_none(tmp_path: Path) -> None:
    history = _history()
    for row in history[::2]:
        del row["val_elbo"], row["val_kl"], row["val_reconstruction"]
    history[3]["train_kl"] = float("nan")
    history[4]["train_elbo"] = None
    del history[5]["epoch"]  # epochs then numbered 1..n
    for row in history:
        row.pop("lr")
    _open_png(plots.plot_training_curves(history, tmp_path / "c.png"))


@pytest.mark.parametrize("history", [[], [{}], [{"epoch": 1, "train_elbo": -100.0}], [{"train_loss": 3.0}]])
def test_training_curves_with_almost_nothing(tmp_path: Path, history: list[dict]) -> None:
    _open_png(plots.plot_training_curves(history, tmp_path / "c.png"))


def test_training_curves_series_and_epochs() -> None:
    history = [{"epoch": 3, "train_kl": 1}, {"epoch": 4, "train_kl": "x"}, {"epoch": 5}]
    np.testing.assert_array_equal(plots._epochs(history), [3, 4, 5])
    np.testing.assert_array_equal(plots._series(history, "train_kl"), [1, np.nan, np.nan])
    np.testing.assert_array_equal(plots._epochs([{"epoch": 3}, {}]), [1, 2])


# --------------------------------------------------------------------------- reconstructions


def test_reconstructions_originals_above_reconstructions(tmp_path: Path) -> None:
    originals = np.ones((5, 1, 16, 16))
    reconstructions = np.zeros((5, 1, 16, 16))
    pixels = _open_png(plots.plot_reconstructions(originals, reconstructions, tmp_path / "rec.png"))
    h, w, _ = pixels.shape
    right = pixels[:, w // 2 :]  # the row labels sit on the left
    top_row, bottom_row = right[h // 4], right[3 * h // 4]
    assert (top_row == 255).all(axis=-1).any() and not (top_row == 0).all(axis=-1).any()
    assert (bottom_row == 0).all(axis=-1).any() and not (bottom_row == 255).all(axis=-1).any()


def test_reconstructions_flat_with_shape_and_at_most_16_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.random((40, 64))
    many = _open_png(plots.plot_reconstructions(x, x, tmp_path / "a.png", shape=(8, 8)))
    sixteen = _open_png(plots.plot_reconstructions(x[:16], x[:16], tmp_path / "b.png", shape=(1, 8, 8)))
    np.testing.assert_array_equal(many, sixteen)


def test_reconstructions_tabular(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    _open_png(plots.plot_reconstructions(rng.normal(size=(8, 10)), rng.normal(size=(8, 10)), tmp_path / "t.png"))


def test_reconstructions_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(4, 1, 8, 8\).*\(4, 1, 8, 9\)"):
        plots.plot_reconstructions(np.zeros((4, 1, 8, 8)), np.zeros((4, 1, 8, 9)), tmp_path / "r.png")
    with pytest.raises(ShapeError, match=r"\(4, 64\).*\(3, 64\)"):
        plots.plot_reconstructions(np.zeros((4, 64)), np.zeros((3, 64)), tmp_path / "r.png", shape=(8, 8))
    assert not (tmp_path / "r.png").exists()


# --------------------------------------------------------------------------- latent scatter


class _PCASpy:
    """Records that sklearn's PCA was used, then delegates to it."""

    calls = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        from sklearn.decomposition import _pca

        type(self).calls += 1
        self._pca = _pca.PCA(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._pca, name)


@pytest.mark.parametrize("k", [1, 2, 3, 8])
@pytest.mark.parametrize("label_kind", [None, "int", "float", "str"])
def test_latent_scatter_all_dims_and_labels(tmp_path: Path, k: int, label_kind: str | None) -> None:
    rng = np.random.default_rng(k)
    n = 200
    means = rng.normal(size=(n, k))
    labels = {
        None: None,
        "int": rng.integers(0, 10, n),
        "float": rng.normal(size=n),
        "str": rng.choice(["cat", "dog", "<b>bird</b>"], n),
    }[label_kind]
    _open_png(plots.plot_latent_scatter(means, tmp_path / "s.png", labels=labels))


def test_latent_scatter_uses_pca_only_above_two_dims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.decomposition

    monkeypatch.setattr(sklearn.decomposition, "PCA", _PCASpy)
    monkeypatch.setattr(_PCASpy, "calls", 0)
    rng = np.random.default_rng(5)
    plots.plot_latent_scatter(rng.normal(size=(50, 2)), tmp_path / "two.png")
    assert _PCASpy.calls == 0
    plots.plot_latent_scatter(rng.normal(size=(50, 6)), tmp_path / "six.png")
    assert _PCASpy.calls == 1


def test_latent_scatter_pca_axis_labels_give_explained_variance() -> None:
    rng = np.random.default_rng(6)
    means = rng.normal(size=(500, 4)) * np.array([5.0, 2.0, 0.1, 0.1])
    ax = plots._scatter_figure(means, None).axes[0]
    x_label, y_label = ax.get_xlabel(), ax.get_ylabel()
    assert x_label.startswith("PC1 (") and x_label.endswith("% var)")
    assert y_label.startswith("PC2 (") and y_label.endswith("% var)")
    pc1, pc2 = (float(s.split("(")[1].split("%")[0]) for s in (x_label, y_label))
    assert pc1 == pytest.approx(100 * 25 / 29.02, abs=3)
    assert pc2 == pytest.approx(100 * 4 / 29.02, abs=3)
    assert "PCA" in ax.get_title()


def test_latent_scatter_two_dims_are_plotted_directly() -> None:
    ax = plots._scatter_figure(np.random.default_rng(7).normal(size=(20, 2)), None).axes[0]
    assert "PC" not in ax.get_xlabel() and "z_{0}" in ax.get_xlabel()


def test_latent_scatter_collapsed_posterior_does_not_warn(tmp_path: Path) -> None:
    # all means equal (posterior collapse): PCA would divide 0 by 0; warnings are errors here
    _open_png(plots.plot_latent_scatter(np.zeros((30, 5)), tmp_path / "c.png"))
    _open_png(plots.plot_latent_scatter(np.zeros((1, 5)), tmp_path / "one.png"))
    coords, ratio = plots._pca_2d(np.ones((10, 4)))
    assert not coords.any() and not ratio.any()


def test_latent_scatter_checks_inputs(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match="labels"):
        plots.plot_latent_scatter(np.zeros((10, 2)), tmp_path / "s.png", labels=np.zeros(9))
    with pytest.raises(ShapeError):
        plots.plot_latent_scatter(np.zeros((10, 2, 2)), tmp_path / "s.png")
    with pytest.raises(DataError, match="non-finite"):
        plots.plot_latent_scatter(np.array([[0.0, np.nan]]), tmp_path / "s.png")


# --------------------------------------------------------------------------- traversals


def test_latent_traversals_rows_are_latent_dims(tmp_path: Path) -> None:
    k, steps = 3, 5
    images = np.zeros((k, steps, 3, 12, 12))
    images[:, :, 2] = 1.0  # blue tiles ...
    images[1, :, 0], images[1, :, 2] = 1.0, 0.0  # ... except the row of z_1, red
    pixels = _open_png(plots.plot_latent_traversals(images, tmp_path / "t.png", values=np.linspace(-2, 2, steps)))
    h, w, _ = pixels.shape
    right = pixels[:, w // 2 :]  # the row labels sit on the left
    is_red = (right == (255, 0, 0)).all(axis=-1)
    is_blue = (right == (0, 0, 255)).all(axis=-1)
    red_rows = np.flatnonzero(is_red.any(axis=1))
    band = red_rows.max() - red_rows.min() + 1  # one tile row, enlarged
    assert band < h / 3
    # the red band (z_1) has a row of blue tiles (z_0) right above it and one (z_2) right below
    above, below = red_rows.min() - band // 2, red_rows.max() + band // 2
    assert is_blue[above].sum() > w / 4 and not is_red[above].any()
    assert is_blue[below].sum() > w / 4 and not is_red[below].any()
    # the columns: 5 runs of blue pixels along a tile row
    blue_along_row = np.concatenate([[0], (pixels[above] == (0, 0, 255)).all(axis=-1).astype(int)])
    assert np.count_nonzero(np.diff(blue_along_row) == 1) == steps


def test_latent_traversals_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    _open_png(plots.plot_latent_traversals(rng.random((4, 7, 3, 8, 8)), tmp_path / "t.png", values=np.arange(7)))


def test_latent_traversals_check_shapes(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match="values"):
        plots.plot_latent_traversals(np.zeros((2, 5, 1, 8, 8)), tmp_path / "t.png", values=np.zeros(4))
    with pytest.raises(ShapeError):
        plots.plot_latent_traversals(np.zeros((5, 1, 8, 8, 1, 1)), tmp_path / "t.png", values=np.zeros(1))


# --------------------------------------------------------------------------- library hygiene


def test_plots_never_import_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from vaekit.viz import plots\n"
        f"plots.image_grid(np.zeros((2, 1, 4, 4)), {str(tmp_path / 'g.png')!r}, title='t')\n"
        f"plots.plot_latent_scatter(np.zeros((5, 3)), {str(tmp_path / 's.png')!r}, labels=[0, 1, 0, 1, 1])\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert result.stderr == ""


def test_plots_work_from_threads(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            plots.image_grid(np.full((4, 1, 8, 8), i / 4), tmp_path / f"g{i}.png", title=f"thread {i}")
            plots.plot_training_curves(_history(5), tmp_path / f"c{i}.png")
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        _open_png(tmp_path / f"g{i}.png")
        _open_png(tmp_path / f"c{i}.png")


def test_grid_geometry() -> None:
    grid = plots._Grid(rows=2, cols=3, tile_h=10, tile_w=20, pad=2)
    assert (grid.height, grid.width) == (2 * 12 + 2, 3 * 22 + 2)
    mosaic = plots._mosaic(np.ones((5, 10, 20, 3)), grid)
    assert mosaic.shape == (26, 68, 3)
    assert math.isclose(mosaic[2:12, 2:22].min(), 1.0)
    assert math.isclose(mosaic[14:24, 46:66].max(), 0.5)  # the sixth cell is empty (grey)


def test_png_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = plots.image_grid(np.zeros((1, 1, 4, 4)), tmp_path / "g.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
