"""Keep freed memory in the process, so that large CPU tensors are not page-faulted in again and again.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves a block above its mmap
threshold with a fresh ``mmap`` and returns it to the system when freed (and trims the heap's top
beyond its trim threshold), so a loop that allocates and frees tensors of a few MB — the
estimators' chunks of K draws × B images × D logits, 8 MB at the CPU default — pays for zeroing
fresh pages at every iteration. Measured on this project's machine, one thread, 256 images × 500
draws of the 784-200-200-50 model: 0.93 s with glibc's defaults, 0.48 s with both thresholds raised
(``python benchmarks/cpu_kernels.py``; ``benchmarks/evaluation_paths.py`` has the whole-test-set figures).

:func:`keep_freed_memory` raises the mmap threshold to glibc's maximum (32 MiB) and the trim
threshold to 256 MiB, through ``mallopt``; it does nothing on other C libraries. vaekit's
``evaluate`` and command line call it; ``VAEKIT_KEEP_FREED_MEMORY=0`` in the environment turns it
off. The cost: up to 256 MiB of freed memory stays with the process instead of going back to the
system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20      # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 256 << 20

_done: bool | None = None


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):      # not a POSIX system, or not glibc
        return False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process (see the module docstring); returns
    whether they are set (False on other C libraries or when ``VAEKIT_KEEP_FREED_MEMORY=0``)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("VAEKIT_KEEP_FREED_MEMORY", "1").strip() == "0" or not _glibc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
