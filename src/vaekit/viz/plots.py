"""Figures of a trained VAE run, drawn from plain numpy arrays and written as PNG files.

Every public function takes arrays (or lists of dicts), draws one figure with matplotlib's object
API (a :class:`~matplotlib.figure.Figure` on a :class:`FigureCanvasAgg`; ``pyplot`` and global
``rcParams`` are never touched, so the module works headless and from several threads), writes one
RGB PNG atomically (a temporary file in the same folder, then :func:`os.replace`) and returns its
:class:`~pathlib.Path`. Parent folders are created. The path must end in ``.png``.

Image conventions: arrays are channels-first, ``(N, C, H, W)`` with ``C`` = 1 (grayscale) or 3
(RGB), or ``(N, H, W)`` (grayscale); float values are meant to lie in ``[0, 1]`` and are clipped
to it (NaN is drawn black); ``uint8`` arrays are read as ``0..255``. Flat vectors ``(N, D)`` are
reshaped with ``shape=(C, H, W)`` (or ``(H, W)``); without ``shape`` they are treated as tabular
data and drawn as a heatmap (rows = examples, columns = features, in the data's own range).

Image mosaics are drawn pixel-exact: each tile is enlarged by a whole factor (nearest neighbour),
never resampled, and a grid without a title is nothing but the mosaic.

The figures are drawn by the modules of this package, one concept each; this module is the public
facade that re-exports them: :mod:`vaekit.viz.canvas` (headless figures, atomic PNG writing),
:mod:`vaekit.viz.arrays` (input checks and tiles), :mod:`vaekit.viz.mosaic` (pixel-exact
mosaics), :mod:`vaekit.viz.tables` (heatmaps of tabular data), :mod:`vaekit.viz.grids` (image grid,
reconstructions), :mod:`vaekit.viz.curves` (training curves), :mod:`vaekit.viz.latents`
(latent scatter, traversals) and :mod:`vaekit.viz.interpolations` (interpolations between two originals).
"""

from __future__ import annotations

# The underscored names are private helpers, re-exported because tests check them as ``plots._name``.
from vaekit.viz.curves import _epochs, _series, plot_training_curves  # noqa: F401
from vaekit.viz.grids import image_grid, plot_reconstructions
from vaekit.viz.interpolations import plot_interpolations
from vaekit.viz.latents import (  # noqa: F401
    _pca_2d,
    _scatter_figure,
    plot_latent_scatter,
    plot_latent_traversals,
)
from vaekit.viz.mosaic import _Grid, _mosaic  # noqa: F401

__all__ = [
    "image_grid",
    "plot_interpolations",
    "plot_latent_scatter",
    "plot_latent_traversals",
    "plot_reconstructions",
    "plot_training_curves",
]
