"""Data pools, the rules as the contract computes them (``contracts/DataPool.vy``), in Python: the
score job's spec for a contribution, an embedding from the job's output, the score (quality,
near-copy test), and an epoch's reward shares. Pure, so a contributor, the curator and a test
predict to the wei what the contract will do.

    spec = score_spec(cid)                        # the bytes whose sha256 is the order's spec CID
    emb = embedding(output_blob)                  # 384 int32, big endian
    q, sim, s = score(emb, topic, accepted, 9000) # quality bps, highest similarity bps, the score
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from veracity.errors import InputError
from veracity.exact.outputs import decode_outputs, encode_outputs

DIM = 384
ONE = 1 << 30  # a unit vector's dot product with itself (2**15 fixed point)
MAX_BPS = 10_000
MAX_ACCEPTED = 64  # DataPool.MAX_ACCEPTED


def score_spec(cid: str) -> bytes:
    """The score job's spec for contribution ``cid`` (``DataPool.score_spec``: built on chain)."""
    return (b"kind: score\nmodel: minilm\nmax_price: 1\ndeadline: 3600\ninputs:\n  cid: " + cid.encode() + b"\n")


def embedding(output_blob: bytes) -> bytes:
    """The embedding in a score job's canonical output blob: 384 int32, big endian."""
    tensors = decode_outputs(output_blob)
    if len(tensors) != 1 or tensors[0].shape != (1, DIM):
        raise InputError("a score job's output is one embedding of 384 values")
    return tensors[0].astype(">i4").tobytes()


def output_blob(vector: np.ndarray) -> bytes:
    """The canonical output blob of an embedding (int32 [1, 384])."""
    return encode_outputs([np.asarray(vector, dtype=np.int32).reshape(1, DIM)])


def _ints(emb: bytes) -> np.ndarray:
    if len(emb) != 4 * DIM:
        raise InputError(f"an embedding is {4 * DIM} bytes, not {len(emb)}")
    return np.frombuffer(emb, dtype=">i4").astype(np.int64)


def dot(a: bytes, b: bytes) -> int:
    return int(_ints(a) @ _ints(b))


def _bps(x: int) -> int:
    """x * 10000 / ONE, rounded toward zero (the EVM's signed division)."""
    q = abs(x) * MAX_BPS // ONE
    return q if x >= 0 else -q


def score(emb: bytes, topic: bytes, accepted: list[bytes], threshold_bps: int) -> tuple[int, int, int]:
    """(quality bps, highest similarity bps with an accepted item, score), as ``settle`` computes them:
    quality is the cosine with the topic (0 when negative); a near-copy of an accepted item (a cosine
    at or above the threshold) scores 0, as does any item once the pool holds MAX_ACCEPTED."""
    quality = max(0, _bps(dot(emb, topic)))
    best = max((dot(emb, a) for a in accepted), default=None)
    similarity = _bps(best) if best is not None else 0
    s = quality
    if best is not None and best * MAX_BPS >= threshold_bps * ONE:
        s = 0
    if len(accepted) >= MAX_ACCEPTED:
        s = 0
    return quality, similarity, s


def shares(amount: int, scores: dict[str, int]) -> dict[str, int]:
    """Each contributor's share of ``amount`` by score (floor division, as the contract pays it;
    what is left goes to the pool's owner)."""
    total = sum(scores.values())
    return {who: amount * s // total for who, s in scores.items()} if total else {}


def contribution_line(text: str, label: int | None = None, provenance: dict[str, Any] | None = None) -> bytes:
    """One contribution blob: a JSON line with its text (and label, and the provenance of a generated item)."""
    rec: dict[str, Any] = {"text": text}
    if label is not None:
        rec["label"] = label
    if provenance is not None:
        rec["provenance"] = provenance
    return (json.dumps(rec) + "\n").encode()


def embed(text: str, model: Any = None) -> bytes:
    """The exact MiniLM embedding of ``text`` (a score job's output, computed here): a pool's topic."""
    from veracity.cid import cid_of
    from veracity.workloads.jobs import Job
    from veracity.workloads.spec import parse_spec

    line = contribution_line(text)
    job = Job(parse_spec(score_spec(cid_of(line)).decode()), line)
    result = job.run("torch", model)
    return embedding(encode_outputs(job.served_tensors(result.outputs, model)))
