"""Execution traces: every op output hashed, the list committed by one Merkle root.

Format (version 2)
------------------
* **Tensor digest** (version 2): the tensor's integers in its canonical dtype, C order, big
  endian (as ``verify.rows`` packs them for contracts), cut into *chunks of whole rows* (rows run
  along the last axis): as many rows as fit in 8 KiB, at least one. Leaf ``sha256(0x03 ||
  chunk)``; digest ``sha256(b"VXT2" || dtype code (u8) || ndim (u8) || dims (u32 BE each) ||
  root over the leaves)``. dtype codes: 1 int8, 2 uint8, 3 int16, 4 int32, 5 int64. So any row,
  hence any element, is proven to a contract by its chunk, the chunk's Merkle proof and the
  header. SHA-256 is 4.9x faster than keccak-256 here (1.56 vs 0.32 GB/s,
  ``bench/exact_vs_native.py`` measures it) and is an EVM precompile.
* **Record**: ``(step, op, digest)``. A step is one layer call (an embedding, an encoder layer,
  one generated token's pass through a block); ``op`` names the op inside it
  (``"layer.3.attn.softmax"``). Records are kept in execution order.
* **Leaf**: ``sha256(0x00 || step (u32 BE) || len(op) (u16 BE) || op utf-8 || digest)``.
* **Chain**: ``c_i = sha256(0x02 || c_{i-1} || leaf_i)`` with ``c_{-1}`` 32 zero bytes, so
  ``c_i`` commits to every record up to ``i``: two traces that agree on ``c_i`` agree on all
  records before it, which lets a dispute bisect to the *first* differing record.
* **Root**: a binary SHA-256 tree over ``c_0 .. c_{n-1}``, node ``sha256(0x01 || left ||
  right)``, an odd last node carried up unchanged (``exact.merkle`` proves a position in it);
  the root of no records is ``sha256(b"")``.
* The **output hash** of a job is ``sha256`` over the tensor digests of its per-item outputs, in
  input order, so it does not depend on how the items were batched.
* The **output root** is what a provider commits on chain as a job's output: ``sha256(b"VXO1" ||
  k (u32 BE) || Merkle root over the digests of the k output records)``, in the order the
  program numbers them (``OpDesc.output``). It follows from the trace, so a contract judges it:
  an output root whose leaf j is not the digest of the trace's j-th output record, or whose k is
  not the program's count, is a fault anyone proves in one call (``Disputes.prove_output_fault``).
  Served outputs (output JSONL, a checkpoint) are checked against it, not against the trace.
"""

from __future__ import annotations

import hashlib
import math
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, Callable, Iterable

import numpy as np

from veracity.exact.merkle import Peaks, grow, peaks_root
from veracity.exact.merkle import root as merkle_root  # the one Merkle tree (position-binding proofs too)

BACKGROUND_BYTES = 1 << 20
DTYPE_CODES: dict[np.dtype[Any], int] = {np.dtype(np.int8): 1, np.dtype(np.uint8): 2, np.dtype(np.int16): 3,
                                          np.dtype(np.int32): 4, np.dtype(np.int64): 5}
CODE_DTYPES = {code: dt for dt, code in DTYPE_CODES.items()}
_first = itemgetter(0)


CHUNK_BYTES = 8192  # a chunk holds whole rows, as many as fit (at least one)
TENSOR_MAGIC = b"VXT2"  # a tensor header's first bytes


def canonical(a: np.ndarray) -> np.ndarray:
    """The tensor as big-endian integers of its canonical width, C order (what is hashed)."""
    dt = np.dtype(f"{a.dtype.kind}{a.dtype.itemsize}")
    if dt not in DTYPE_CODES:
        raise TypeError(f"only integer tensors are committed, got {dt}")
    return np.ascontiguousarray(a, dtype=dt.newbyteorder(">"))


@lru_cache(maxsize=4096)
def chunking(shape: tuple[int, ...], itemsize: int) -> tuple[int, int, int]:
    """(row bytes, rows per chunk, chunks) of a tensor: rows run along the last axis."""
    row = (shape[-1] if shape else 1) * itemsize
    per = max(1, CHUNK_BYTES // max(row, 1))
    return row, per, max(1, -(-rows_of(shape) // per))


def tensor_chunks(a: np.ndarray) -> list[memoryview]:
    """The canonical bytes cut into chunks of whole rows."""
    c = canonical(a)
    row, per, n = chunking(c.shape, c.dtype.itemsize)
    data = c.data.cast("B") if c.size else memoryview(b"")  # an empty tensor (a rank-0 adapter): one empty chunk
    size = row * per
    return [data[i * size:(i + 1) * size] for i in range(n)]


def chunk_leaf(chunk: bytes | memoryview) -> bytes:
    h = hashlib.sha256(b"\x03")
    h.update(chunk)
    return h.digest()


def header(a: np.ndarray) -> bytes:
    return header_of(tuple(a.shape), a.dtype)


@lru_cache(maxsize=4096)
def header_of(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    dt = np.dtype(f"{dtype.kind}{dtype.itemsize}")
    return TENSOR_MAGIC + struct.pack(">BB", DTYPE_CODES[dt], len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def tensor_digest(a: np.ndarray) -> bytes:
    """Digest of an integer tensor: ``sha256(header || root over its row chunks)`` (see above)."""
    c = canonical(a)
    return hashlib.sha256(header(c) + merkle_root([chunk_leaf(ch) for ch in tensor_chunks(c)])).digest()


def fast_digest(a: np.ndarray, dtype: np.dtype) -> bytes:
    """``tensor_digest(a.astype(dtype))`` in one conversion (a running provider's hot path)."""
    shape = a.shape or (1,)  # (``canonical`` makes a scalar one element)
    row, per, n = chunking(shape, dtype.itemsize)
    c = np.ascontiguousarray(a, dtype=big_endian(dtype))
    if n == 1:  # one chunk (most records of a decoded token): its leaf is the root
        return hashlib.sha256(header_of(shape, dtype) + chunk_leaf(c.data)).digest()
    data, size = c.data.cast("B"), row * per
    return hashlib.sha256(header_of(shape, dtype) + merkle_root([chunk_leaf(data[i * size:(i + 1) * size])
                                                                 for i in range(n)])).digest()


# a grown tensor's rows, its whole chunks' Merkle peaks and the hash so far of the chunk its last rows opened
Growth = tuple[int, Peaks, Any]


def grown_digest(a: np.ndarray, dtype: np.dtype, grown: Growth | None = None) -> tuple[bytes, Growth]:
    """``fast_digest`` of a tensor that grows by appended rows (a KV cache), and what the tensor grown
    from it needs. ``grown``: what the tensor ``a`` grew from gave, whose rows are ``a``'s first
    rows; so only the rows after them are converted and hashed, going on from the hash of the chunk
    they left open, and the chunk tree's root comes from the whole chunks' peaks (a decoded token's
    cache hashes its one new row)."""
    shape = a.shape or (1,)
    _, per, _ = chunking(shape, dtype.itemsize)
    n = rows_of(shape)
    done, peaks, chunk = grown if grown is not None and grown[0] <= n else (0, [], _open_chunk())
    chunk = chunk.copy()
    rows = np.ascontiguousarray(a.reshape(n, shape[-1])[done:], dtype=big_endian(dtype))
    at = 0
    while done < n:
        take = min(per - done % per, n - done)
        chunk.update(rows[at:at + take])
        at, done = at + take, done + take
        if done % per == 0:
            peaks, chunk = grow(peaks, chunk.digest()), _open_chunk()
    tree = grow(peaks, chunk.digest()) if done % per or not peaks else peaks
    return hashlib.sha256(header_of(shape, dtype) + peaks_root(tree)).digest(), (n, peaks, chunk)


def grown_digests(arrays: list[np.ndarray], dtypes: list[np.dtype],
                  grown: list[Growth | None]) -> list[tuple[bytes, Growth]]:
    """``grown_digest`` of each (the native backend hashes them together in C instead)."""
    return [grown_digest(a, dtype, g) for a, dtype, g in zip(arrays, dtypes, grown)]


@lru_cache(maxsize=None)
def big_endian(dtype: np.dtype) -> np.dtype:
    """``dtype``, big endian (what is hashed)."""
    return dtype.newbyteorder(">")


def _open_chunk() -> Any:
    """The hash of a chunk with no rows yet (``chunk_leaf``'s prefix)."""
    return hashlib.sha256(b"\x03")


def rows_of(shape: tuple[int, ...]) -> int:
    """A tensor's rows (along the last axis), as chunks count them."""
    return math.prod(shape[:-1]) if len(shape) > 1 else 1


def leaf_hash(step: int, op: str, digest: bytes) -> bytes:
    name = op.encode()
    return hashlib.sha256(b"\x00" + struct.pack(">IH", step, len(name)) + name + digest).digest()


def output_hash(item_digests: list[bytes]) -> bytes:
    return hashlib.sha256(b"".join(item_digests)).digest()


def outputs_tree(digests: list[bytes]) -> bytes:
    """The Merkle root over output record digests (under ``outputs_root``'s count)."""
    return merkle_root(list(digests))


def outputs_root(digests: list[bytes]) -> bytes:
    """A job's committed output: ``sha256(b"VXO1" || k || outputs_tree)`` over its output records'
    digests, in output order."""
    return hashlib.sha256(b"VXO1" + struct.pack(">I", len(digests)) + outputs_tree(digests)).digest()


@dataclass(frozen=True)
class TraceRecord:
    step: int
    op: str
    digest: bytes


def encode_records(records: list[TraceRecord]) -> bytes:
    """A trace as a blob: one JSON line per record, ``{"step", "op", "digest" (hex)}``."""
    import json

    return "".join(f'{{"step": {r.step}, "op": {json.dumps(r.op)}, "digest": "{r.digest.hex()}"}}\n'
                   for r in records).encode()


def decode_records(blob: bytes) -> list[TraceRecord]:
    """Records from ``encode_records``; raises ValueError on anything else."""
    import json

    out = []
    for line in blob.decode("utf-8").splitlines():
        rec = json.loads(line)
        digest = bytes.fromhex(rec["digest"])
        if len(digest) != 32:
            raise ValueError("a record's digest must be 32 bytes")
        out.append(TraceRecord(int(rec["step"]), str(rec["op"]), digest))
    return out


def chain_link(prev: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x02" + prev + leaf).digest()


GENESIS = bytes(32)


def chained(records: list[TraceRecord], start: bytes = GENESIS) -> list[bytes]:
    """The chain values ``c_0 .. c_{n-1}`` of a trace (the leaves of its Merkle tree), going on from
    ``start`` (a step's op-level trace goes on from the coarse chain value before it: ``exact.levels``)."""
    out, c = [], start
    for r in records:
        c = chain_link(c, leaf_hash(r.step, r.op, r.digest))
        out.append(c)
    return out


def records_root(records: list[TraceRecord]) -> bytes:
    """The trace root: the Merkle root over the chained records."""
    return merkle_root(chained(records))


def first_difference(mine: list[TraceRecord], theirs: list[TraceRecord]) -> int | None:
    """Index of the first record where two traces differ (a length difference counts), or None."""
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            return i
    return None if len(mine) == len(theirs) else min(len(mine), len(theirs))


class Trace:
    """Collects op digests in order; hashing may run on a worker thread (hashlib drops the GIL), or
    later, by whoever made the records (``before_read``)."""

    def __init__(self, background: bool = True) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1) if background else None
        self._pending: list[tuple[int, int, str, Future[bytes] | bytes]] = []
        self._before_read: list[Callable[[], None]] = []

    def before_read(self, flush: Callable[[], None]) -> None:
        """``flush`` adds the records its maker holds back (``exact.execute.Exec`` hashes a coarse
        trace's in batches); it runs before the records are read."""
        self._before_read.append(flush)

    def record(self, step: int, op: str, produce: Callable[[], np.ndarray], nbytes: int = 0,
               index: int | None = None) -> None:
        """Record an op output; ``produce`` returns its canonical integer array. ``index`` places it
        among the records (a coarse trace hashes a record when a later step first reads it, so
        not always in order); by default, after the last.

        Outputs of ``nbytes`` >= BACKGROUND_BYTES are hashed on the worker thread, overlapping the
        next ops; smaller ones inline, where a thread hand-off would cost more than the hash.
        """
        at = len(self._pending) if index is None else index
        if self._pool is None or nbytes < BACKGROUND_BYTES:
            self._pending.append((at, step, op, tensor_digest(produce())))
        else:
            self._pending.append((at, step, op, self._pool.submit(lambda: tensor_digest(produce()))))

    def add(self, step: int, op: str, digest: bytes, index: int) -> None:
        """Record an op output whose digest is already computed (``record``'s ``index``)."""
        self._pending.append((index, step, op, digest))

    def add_all(self, records: Iterable[tuple[int, int, str, bytes]]) -> None:
        """``add`` of each (index, step, op, digest)."""
        self._pending.extend(records)

    @property
    def indexed(self) -> list[tuple[int, TraceRecord]]:
        """(record index, record) of each record hashed, in record order."""
        pending = self._sorted()
        return list(zip(map(_first, pending), self._records(pending)))

    @property
    def records(self) -> list[TraceRecord]:
        """The records, in record order."""
        return self._records(self._sorted())

    def _sorted(self) -> list[tuple[int, int, str, Future[bytes] | bytes]]:
        for flush in self._before_read:
            flush()
        return sorted(self._pending, key=_first)

    @staticmethod
    def _records(pending: list[tuple[int, int, str, Future[bytes] | bytes]]) -> list[TraceRecord]:
        return [TraceRecord(s, o, d if isinstance(d, bytes) else d.result()) for _, s, o, d in pending]

    def root(self) -> bytes:
        return records_root(self.records)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __len__(self) -> int:
        for flush in self._before_read:
            flush()
        return len(self._pending)
