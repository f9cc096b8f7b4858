"""Trace format: canonical tensor digests, leaves and the Merkle root."""

import hashlib
import struct

import numpy as np
import pytest

from veracity.exact.trace import (
    Trace,
    leaf_hash,
    merkle_root,
    output_hash,
    tensor_digest,
)


def test_tensor_digest_is_the_documented_encoding():
    a = np.array([[1, -2, 3]], dtype=np.int32)
    chunk = hashlib.sha256(b"\x03" + struct.pack(">3i", 1, -2, 3)).digest()  # one chunk: its leaf is the root
    expected = hashlib.sha256(b"VXT2" + bytes([4, 2]) + struct.pack(">2I", 1, 3) + chunk).digest()
    assert tensor_digest(a) == expected


@pytest.mark.parametrize("shape,dtype", [((50, 300), np.int32), ((3, 4000), np.int32), ((2, 3, 7, 7), np.uint8),
                                         ((9,), np.int16)])
def test_any_row_is_provable_from_the_digest(shape, dtype, fresh_rng):
    from veracity.exact import merkle
    from veracity.exact.trace import chunk_leaf, chunking, header, tensor_chunks
    from veracity.verify.rows import pack

    info = np.iinfo(dtype)
    a = fresh_rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)
    row_bytes, per, n = chunking(a.shape, a.dtype.itemsize)
    chunks = [bytes(c) for c in tensor_chunks(a)]
    tree = merkle.levels([chunk_leaf(c) for c in chunks])
    assert len(chunks) == n and hashlib.sha256(header(a) + tree[-1][0]).digest() == tensor_digest(a)
    rows = a.reshape(-1, a.shape[-1])
    for r in {0, len(rows) - 1, int(fresh_rng.integers(len(rows)))}:
        g, off = divmod(r, per)
        assert merkle.verify(tree[-1][0], chunk_leaf(chunks[g]), g, n, merkle.prove(tree, g))
        # the row a contract reads out of the chunk is the row in the packed encoding
        assert chunks[g][off * row_bytes:(off + 1) * row_bytes] == pack(rows[r], a.dtype.itemsize,
                                                                        signed=np.issubdtype(dtype, np.signedinteger))


def test_digest_depends_on_dtype_and_shape_not_on_memory_layout():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    assert tensor_digest(a) != tensor_digest(a.astype(np.int16))
    assert tensor_digest(a) != tensor_digest(a.reshape(3, 2))
    assert tensor_digest(np.asfortranarray(a)) == tensor_digest(a)
    assert tensor_digest(a.astype(">i4")) == tensor_digest(a)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("width", [1, 3, 192, 3000])
def test_a_growing_tensors_digest_is_its_tensor_digest(dtype, width, fresh_rng):
    """A cache grown by a few rows at a time: each digest, from the growth of the one before it (or
    from none), is ``tensor_digest``'s, across chunk boundaries and multi-chunk appends."""
    from veracity.exact.trace import fast_digest, grown_digest

    dt = np.dtype(dtype)
    grown = fresh_rng.integers(-(1 << 40), 1 << 40, size=(1, 120, width))  # cast as astype does
    growth, rows = None, 0
    while rows < 120:
        rows = min(120, rows + int(fresh_rng.integers(1, 25)))
        want = tensor_digest(grown[:, :rows].astype(dt))
        assert fast_digest(grown[:, :rows], dt) == want
        assert grown_digest(grown[:, :rows], dt)[0] == want
        digest, growth = grown_digest(grown[:, :rows], dt, growth)
        assert digest == want
    assert fast_digest(np.int64(7), dt) == tensor_digest(np.array(7, dtype=dt))


def test_float_tensors_are_never_committed():
    import pytest

    with pytest.raises(TypeError):
        tensor_digest(np.zeros(3, dtype=np.float32))


def test_merkle_root_commits_to_every_record_and_their_order():
    leaves = [leaf_hash(i // 2, f"op{i}", hashlib.sha256(bytes([i])).digest()) for i in range(7)]
    root = merkle_root(leaves)
    assert merkle_root(leaves[:-1]) != root
    swapped = leaves[:2] + [leaves[3], leaves[2]] + leaves[4:]
    assert merkle_root(swapped) != root
    changed = list(leaves)
    changed[5] = leaf_hash(2, "op5", hashlib.sha256(b"other").digest())
    assert merkle_root(changed) != root
    l, r = leaves[0], leaves[1]
    assert merkle_root([l, r]) == hashlib.sha256(b"\x01" + l + r).digest()
    assert merkle_root([l]) == l


def test_background_hashing_gives_the_same_root():
    arrays = [np.arange(i * 10, dtype=np.int32) for i in range(1, 20)]
    roots = []
    for background in (False, True):
        t = Trace(background=background)
        for i, a in enumerate(arrays):
            t.record(i // 3, f"op{i}", lambda a=a: a, nbytes=(1 << 30) if background else 0)
        roots.append(t.root())
        t.close()
    assert roots[0] == roots[1]


def test_output_hash_is_ordered():
    d = [tensor_digest(np.array([i], dtype=np.int32)) for i in range(3)]
    assert output_hash(d) != output_hash(d[::-1])


def test_a_stored_trace_round_trips_to_its_root_and_locates_a_difference(digits):
    from veracity.exact.trace import (
        decode_records,
        encode_records,
        first_difference,
        records_root,
    )
    from veracity.workloads.infer import infer

    items = [digits.parse({"pixels": [i % 17] * 64}) for i in range(5)]
    result = infer(digits, items, backend="numpy")
    blob = encode_records(result.records)
    back = decode_records(blob)
    assert back == result.records and records_root(back) == result.trace_root
    assert first_difference(back, result.records) is None
    altered = list(back)
    altered[3] = type(altered[3])(altered[3].step, altered[3].op, bytes(32))
    assert first_difference(back, altered) == 3 and records_root(altered) != result.trace_root
    assert first_difference(back, back[:2]) == 2
    with pytest.raises(ValueError):
        decode_records(b'{"step": 0, "op": "x", "digest": "00"}\n')
