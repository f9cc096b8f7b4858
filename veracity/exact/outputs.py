"""A job's output tensors as one canonical blob: what ``contracts/Oracle.vy``'s ``fulfil`` carries.

Format: for each output tensor, in output order (the program's, ``OpDesc.output``), its header
(``trace.header``: ``b"VXT2"``, dtype code u8 (1 int8, 2 uint8, 3 int16, 4 int32, 5 int64), ndim
u8, dims u32 BE each) then its integers in their dtype, big endian, C order (what
``trace.tensor_digest`` hashes). Nothing else: no count, no padding, no trailing bytes. So the blob
gives each tensor's digest, hence the job's output root (``trace.outputs_root``), which is what a
provider commits: a contract that parses the blob checks it against the commitment.

A committed tensor has 1 to 4 dimensions (a program's descriptor holds at most 4: ``tensors.vy``),
none of them 0.
On chain the blob is at most ``MAX_OUTPUT`` (4096) bytes, so each of its tensors is one chunk and
its digest is ``sha256(header || sha256(0x03 || data))``; ``deliverable`` says whether the tensors
of a program's outputs (their dtypes and dims) can go through ``fulfil``.
"""

from __future__ import annotations

import struct
from typing import Iterable

import numpy as np

from veracity.exact.trace import CODE_DTYPES, TENSOR_MAGIC, canonical, header, outputs_root, tensor_digest

MAX_NDIM = 4
ORACLE_MAX_OUTPUT = 4096  # contracts/Oracle.vy's MAX_OUTPUT: the most bytes fulfil carries
ORACLE_MAX_OUTPUTS = 372  # contracts/Oracle.vy's MAX_OUTPUTS: the most tensors it parses


def encode_outputs(tensors: list[np.ndarray]) -> bytes:
    """The canonical output blob of ``tensors`` (integer arrays, each in its record's dtype)."""
    if not tensors:
        raise ValueError("an output blob holds at least one tensor")
    parts = []
    for j, t in enumerate(tensors):
        a = np.asarray(t)
        if not 1 <= a.ndim <= MAX_NDIM:
            raise ValueError(f"output {j} has {a.ndim} dimensions; a committed tensor has 1 to {MAX_NDIM}")
        if not all(1 <= d < 1 << 32 for d in a.shape):
            raise ValueError(f"output {j} has dims {a.shape}; each must be 1 .. 2**32 - 1")
        try:
            c = canonical(a)
        except TypeError as exc:
            raise ValueError(f"output {j}: {exc}") from None
        parts += [header(c), c.tobytes()]
    return b"".join(parts)


def decode_outputs(blob: bytes) -> list[np.ndarray]:
    """The tensors of a canonical output blob (native byte order, their dtypes). Strict: raises
    ValueError saying what is wrong on anything that ``encode_outputs`` would not give."""
    blob = bytes(blob)
    if not blob:
        raise ValueError("the output blob holds no tensor")
    out: list[np.ndarray] = []
    at, n = 0, len(blob)
    while at < n:
        j = len(out)
        if at + 6 > n:
            raise ValueError(f"the output blob ends inside tensor {j}'s header (truncated, or trailing bytes)")
        if blob[at:at + 4] != TENSOR_MAGIC:
            raise ValueError(f"tensor {j}'s header does not start with {TENSOR_MAGIC!r} (at byte {at})")
        code, ndim = blob[at + 4], blob[at + 5]
        if code not in CODE_DTYPES:
            raise ValueError(f"tensor {j} has unknown dtype code {code} (1 int8 .. 5 int64)")
        if not 1 <= ndim <= MAX_NDIM:
            raise ValueError(f"tensor {j} has {ndim} dimensions; a committed tensor has 1 to {MAX_NDIM}")
        head = 6 + 4 * ndim
        if at + head > n:
            raise ValueError(f"the output blob ends inside tensor {j}'s dimensions (truncated)")
        dims = struct.unpack(f">{ndim}I", blob[at + 6:at + head])
        if 0 in dims:
            raise ValueError(f"tensor {j} has a dimension of 0 (dims {list(dims)})")
        dt = CODE_DTYPES[code]
        size = int(np.prod(dims, dtype=object)) * dt.itemsize
        if at + head + size > n:
            raise ValueError(f"the output blob ends inside tensor {j}'s data: it needs {size} bytes, "
                             f"{n - at - head} are left (truncated)")
        data = np.frombuffer(blob, dtype=dt.newbyteorder(">"), count=size // dt.itemsize, offset=at + head)
        out.append(data.astype(dt).reshape(dims))
        at += head + size
    return out


def blob_root(blob: bytes) -> bytes:
    """The output root (``trace.outputs_root``) a canonical output blob gives: what it must be
    committed as. ValueError on a malformed blob."""
    return outputs_root([tensor_digest(t) for t in decode_outputs(blob)])


def encoded_size(shapes: Iterable[tuple[int, tuple[int, ...]]]) -> int:
    """The bytes of the output blob of tensors of these (dtype code, dims): their headers and data."""
    return sum(6 + 4 * len(dims) + int(np.prod(dims, dtype=object)) * CODE_DTYPES[code].itemsize
               for code, dims in shapes)


def undeliverable_shapes(shapes: list[tuple[int, tuple[int, ...]]], limit: int = ORACLE_MAX_OUTPUT) -> str | None:
    """Why outputs of these (dtype code, dims) could not go through ``fulfil`` (``Oracle.vy``
    refuses their blob), or None if they can: more than ``limit`` bytes or ``ORACLE_MAX_OUTPUTS``
    tensors, a tensor of no or more than 4 dimensions, or one with a dimension of 0. (Each tensor
    of at most 4096 bytes is one chunk, as ``fulfil`` hashes it.)"""
    if not shapes:
        return "the job has no outputs"
    if len(shapes) > ORACLE_MAX_OUTPUTS:
        return f"its output would be {len(shapes)} tensors, more than the Oracle's {ORACLE_MAX_OUTPUTS}"
    for j, (code, dims) in enumerate(shapes):
        if not 1 <= len(dims) <= MAX_NDIM:
            return f"its output {j} has {len(dims)} dimensions; the Oracle takes 1 to {MAX_NDIM}"
        if not all(1 <= d < 1 << 32 for d in dims):
            return f"its output {j} has dims {list(dims)}; the Oracle takes each 1 .. 2**32 - 1"
    size = encoded_size(shapes)
    if size > limit:
        return f"its output would be {size} bytes, more than the Oracle's {limit}-byte limit"
    return None
