"""Helpers shared by the benchmark scripts: machine description and the torch.mm roofline.

Not a benchmark itself. ``gemm_roofline`` measures, in the calling process, the FLOP/s that
``torch.mm`` reaches on a given list of GEMM shapes (each (m, k, n): an (m×k)·(k×n) product,
2·m·k·n FLOPs), called back to back in a tight loop: best of ``repeats`` timed repeats.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def machine_info() -> dict:
    """Machine, Python, torch and threads of this process, and the UTC date (for the JSON)."""
    return {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "processor": platform.processor(), "python": platform.python_version()},
            "torch_version": torch.__version__, "threads": torch.get_num_threads(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def training_gemms(layers: Sequence[tuple[int, int]], batch: int) -> list[tuple[int, int, int]]:
    """The GEMMs of one training step of an MLP with linear layers ``layers`` (in, out) at ``batch``:
    forward X·Wᵀ (batch×in·in×out), input gradient dY·W (batch×out·out×in) and weight gradient
    dYᵀ·X (out×batch·batch×in), 2·batch·in·out FLOPs each."""
    out = []
    for i, o in layers:
        out += [(batch, i, o), (batch, o, i), (o, batch, i)]
    return out


def forward_gemms(layers: Sequence[tuple[int, int]], rows: int) -> list[tuple[int, int, int]]:
    """The forward GEMMs X·Wᵀ (rows×in·in×out) of linear layers ``layers`` (in, out)."""
    return [(rows, i, o) for i, o in layers]


def gemm_flops(gemms: Sequence[tuple[int, int, int]]) -> int:
    """2·m·k·n summed over the GEMMs."""
    return sum(2 * m * k * n for m, k, n in gemms)


def gemm_roofline(gemms: Sequence[tuple[int, int, int]], *, repeats: int = 5, min_seconds: float = 0.5) -> dict:
    """FLOP/s of ``torch.mm`` over ``gemms`` (a list of (m, k, n)), best of ``repeats`` repeats of
    about ``min_seconds`` each, after a warm-up. Operands are float32 and contiguous except where
    the layout of the real computation is a transpose (not distinguished here: torch.mm picks the
    BLAS transposition flags itself)."""
    g = torch.Generator().manual_seed(0)
    calls = [(torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)) for m, k, n in gemms]
    outs = [torch.empty(m, n) for m, _, n in gemms]
    flops = gemm_flops(gemms)

    def one_pass() -> None:
        for (a, b), c in zip(calls, outs, strict=True):
            torch.mm(a, b, out=c)

    for _ in range(3):
        one_pass()
    calibrate = min(0.2, min_seconds)
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < calibrate:
        one_pass()
        n += 1
    per_rep = max(1, round(n * min_seconds / calibrate))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per_rep):
            one_pass()
        rates.append(flops * per_rep / (time.perf_counter() - t0))
    return {"gemms_mkn": [list(s) for s in gemms], "flops_per_pass": flops, "passes_per_repeat": per_rep,
            "repeats_flops_per_second": rates, "flops_per_second": max(rates)}


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def write_results(path: str | Path, doc: dict) -> str:
    """Write ``doc`` as indented JSON to ``path`` (folders created); return its display path."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return display_path(path)
