"""The checkpoint blob every trainer writes: its tensors in canonical form, nothing else, so the same
state gives the same bytes (and CID) everywhere."""

from __future__ import annotations

import struct

import numpy as np

CHECKPOINT_MAGIC = b"VRCKPT1\n"


def pack_tensors(tensors: list[np.ndarray]) -> bytes:
    """Tensors as a checkpoint blob: the magic, the tensor count, then each tensor's rank, dims and
    little-endian int64 values. Nothing else (no timestamps, no container metadata), so the same
    state gives the same bytes, and the same CID, everywhere."""
    ts = [np.ascontiguousarray(t, dtype="<i8") for t in tensors]
    parts = [CHECKPOINT_MAGIC, struct.pack("<I", len(ts))]
    for t in ts:
        parts += [struct.pack(f"<B{t.ndim}I", t.ndim, *t.shape), t.tobytes()]
    return b"".join(parts)


def unpack_tensors(blob: bytes) -> list[np.ndarray]:
    """The tensors of a checkpoint blob; ValueError (what is wrong) for bytes that are not one."""
    if not blob.startswith(CHECKPOINT_MAGIC):
        raise ValueError("not a Veracity checkpoint (bad magic)")
    at = len(CHECKPOINT_MAGIC)
    try:
        (count,) = struct.unpack_from("<I", blob, at)
        at += 4
        ts = []
        for _ in range(count):
            (ndim,) = struct.unpack_from("<B", blob, at)
            dims = struct.unpack_from(f"<{ndim}I", blob, at + 1)
            at += 1 + 4 * ndim
            size = 8 * int(np.prod(dims, dtype=np.int64))
            if at + size > len(blob):
                raise ValueError("truncated")
            ts.append(np.frombuffer(blob, dtype="<i8", count=size // 8, offset=at).reshape(dims).astype(np.int64))
            at += size
    except struct.error:
        raise ValueError("truncated") from None
    if at != len(blob):
        raise ValueError("trailing bytes after the last tensor")
    return ts

