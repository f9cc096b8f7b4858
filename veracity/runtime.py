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


def threads_each(processes: int) -> int:
    """Intra-op threads for each of ``processes`` that compute at once: ``$OMP_NUM_THREADS`` when
    set (the usual cap where other processes share the cores: more threads than cores make every
    OpenMP barrier wait on a thread that is not running), else the cores split among them."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // processes)
