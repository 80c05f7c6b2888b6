"""Figure and PNG helpers shared by the plots: a headless Agg figure, and an atomic RGB PNG writer.

Figures are built with matplotlib's object API (a :class:`~matplotlib.figure.Figure` on its own
:class:`FigureCanvasAgg`); ``pyplot`` and global ``rcParams`` are never touched, so drawing works
headless and from several threads. :func:`_save` writes one RGB PNG atomically (a temporary file
in the same folder, then :func:`os.replace`), creating parent folders; the path must end in ``.png``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from vaekit.store.atomic import atomic_write_bytes

_DPI = 100


def _check_png_path(path: str | os.PathLike[str]) -> Path:
    """The path as a :class:`Path`; a ``ValueError`` unless it ends in ``.png``."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"figure path must end in .png, got {str(out)!r}")
    return out


def _new_figure(width_in: float, height_in: float, *, constrained: bool = True) -> Figure:
    """A white figure attached to its own Agg canvas (no pyplot, no global state)."""
    fig = Figure(
        figsize=(width_in, height_in),
        dpi=_DPI,
        facecolor="white",
        layout="constrained" if constrained else None,
    )
    FigureCanvasAgg(fig)
    return fig


def _png_bytes(fig: Figure) -> bytes:
    """Render ``fig`` as the bytes of an RGB PNG."""
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` and write it as an RGB PNG at ``path`` (atomically); return the path."""
    out = _check_png_path(path)
    atomic_write_bytes(out, _png_bytes(fig))
    return out
