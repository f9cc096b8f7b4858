"""Process-level settings for running exact models: threads and the allocator."""

from __future__ import annotations

import ctypes
import os


def tune_allocator() -> None:
    """Keep large tensors on the heap instead of fresh mmaps (avoids page faults per op).

    glibc returns blocks above 32 MiB to the OS at every free, so each large activation is
    faulted in again. This changes speed only, never results.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD


def set_threads(n: int | None) -> None:
    """Intra-op threads for torch (results do not depend on it; speed does)."""
    if n:
        import torch

        torch.set_num_threads(n)
        os.environ["OMP_NUM_THREADS"] = str(n)
