# pragma version ~=0.4.3
"""
@title tensors
@notice What the dispute contracts share about committed tensors and traces (the formats of
        `veracity/exact/trace.py` and `veracity/exact/program.py`): a record's descriptor, a
        tensor's digest from its header and chunk root, its chunk layout, trace leaves, and
        position-binding Merkle proofs. Pure functions only.
"""

MAX_DEPTH: constant(uint256) = 64
MAX_LINKS: constant(uint256) = 1024  # how far back an op's input record may be (`exact/program.py`)
CHUNK_BYTES: constant(uint256) = 8192  # chunks of whole rows
CHUNK_MAX: constant(uint256) = 8320  # one row of MAX_ROW int32 values, when longer than a chunk
ROW_BYTES: constant(uint256) = 8352  # OneStep's row buffers: a chunk and 32 bytes of padding

struct OpDesc:  # a record's descriptor (`veracity/exact/program.py`)
    kind: uint8
    step: uint256
    op: String[64]
    dtype: uint8
    dims: DynArray[uint256, 4]
    inputs: DynArray[uint256, 4]
    consts: DynArray[bytes32, 3]
    params: DynArray[int256, 2]
    output: uint256  # 1 + the record's place among the job's outputs (0: not an output)
    outputs: uint256  # on an output record, how many outputs the job has

struct Judging:  # a game waiting for its judgement, as a referee reads it
    record: uint256  # the disputed record (inputs must come before it)
    element: uint256  # the disputed element's flat index
    agreed: bytes32  # the chain value both parties revealed just before it

struct TensorRow:  # one row of a committed tensor: its chunk, proven against the tensor's chunk root
    dtype: uint8
    dims: DynArray[uint256, 4]
    chunk_root: bytes32
    chunk: Bytes[CHUNK_MAX]
    chunk_proof: DynArray[bytes32, MAX_DEPTH]
    row: uint256

struct RecordRef:  # an earlier record: its chain link, and the leaves after it up to the agreed value
    index: uint256
    prev: bytes32
    step: uint256
    op: String[64]
    links: DynArray[bytes32, MAX_LINKS]  # the leaf hashes of records index + 1 .. record - 1

@internal
@pure
def _proves(root: bytes32, leaf: bytes32, index: uint256, size: uint256, proof: DynArray[bytes32, MAX_DEPTH]) -> bool:
    """Position-binding inclusion proof (`veracity/verify/merkle.py`)."""
    if index >= size:
        return False
    h: bytes32 = leaf
    idx: uint256 = index
    width: uint256 = size
    used: uint256 = 0
    for level: uint256 in range(MAX_DEPTH):
        if width <= 1:
            break
        if idx ^ 1 < width:
            if used >= len(proof):
                return False
            if idx & 1 == 1:
                h = sha256(concat(b"\x01", proof[used], h))
            else:
                h = sha256(concat(b"\x01", h, proof[used]))
            used += 1
        idx = idx >> 1
        width = (width + 1) >> 1
    return used == len(proof) and h == root


@internal
@pure
def _itemsize(dtype: uint8) -> uint256:
    assert dtype >= 1 and dtype <= 5, "disputes: unknown dtype code"
    if dtype <= 2:
        return 1
    if dtype == 3:
        return 2
    if dtype == 4:
        return 4
    return 8


@internal
@pure
def _digest(dtype: uint8, dims: DynArray[uint256, 4], chunk_root: bytes32) -> bytes32:
    """A tensor's digest from its header and chunk root (`veracity/exact/trace.py`, VXT2)."""
    assert len(dims) >= 1, "disputes: a committed tensor has at least one dimension"
    d: uint256[4] = empty(uint256[4])
    for i: uint256 in range(4):
        if i < len(dims):
            assert dims[i] < 2**32, "disputes: a dimension is out of range"
            d[i] = dims[i]
    full: Bytes[22] = concat(b"VXT2", slice(convert(convert(dtype, uint256), bytes32), 31, 1),
                             slice(convert(len(dims), bytes32), 31, 1), slice(convert(d[0], bytes32), 28, 4),
                             slice(convert(d[1], bytes32), 28, 4), slice(convert(d[2], bytes32), 28, 4),
                             slice(convert(d[3], bytes32), 28, 4))
    return sha256(concat(slice(full, 0, 6 + 4 * len(dims)), chunk_root))


@internal
@pure
def _layout(dtype: uint8, dims: DynArray[uint256, 4]) -> (uint256, uint256, uint256, uint256):
    """(row bytes, rows, rows per chunk, chunks), as `trace.chunking`."""
    row: uint256 = dims[len(dims) - 1] * self._itemsize(dtype)
    rows: uint256 = 1
    for i: uint256 in range(3):
        if i + 1 < len(dims):
            rows *= dims[i]
    per: uint256 = max(1, CHUNK_BYTES // max(row, 1))
    return row, rows, per, max(1, (rows + per - 1) // per)


@internal
@pure
def _leaf(step: uint256, op: String[64], digest: bytes32) -> bytes32:
    assert step < 2**32, "disputes: a step is out of range"
    return sha256(concat(b"\x00", slice(convert(step, bytes32), 28, 4), slice(convert(len(op), bytes32), 30, 2), convert(op, Bytes[64]), digest))


@internal
@pure
def _element(buf: Bytes[ROW_BYTES], offset: uint256, size: uint256, signed: bool) -> int256:
    word: bytes32 = extract32(buf, offset)
    if signed:
        return convert(word, int256) >> (256 - 8 * size)
    return convert(convert(word, uint256) >> (256 - 8 * size), int256)


@internal
@pure
def _bitlen(x: uint256) -> uint256:
    n: uint256 = 0
    v: uint256 = x
    for s: uint256 in [128, 64, 32, 16, 8, 4, 2, 1]:
        if v >= 1 << s:
            v = v >> s
            n += s
    if v > 0:
        n += 1
    return n


@internal
@pure
def _row(t: TensorRow, digest: bytes32) -> Bytes[ROW_BYTES]:
    """Row `t.row` of the tensor with `digest`, padded with 32 zero bytes for reading."""
    assert self._digest(t.dtype, t.dims, t.chunk_root) == digest, "referee: that tensor is not the one named"
    row: uint256 = 0
    rows: uint256 = 0
    per: uint256 = 0
    chunks: uint256 = 0
    row, rows, per, chunks = self._layout(t.dtype, t.dims)
    assert t.row < rows, "referee: no such row"
    assert self._proves(t.chunk_root, sha256(concat(b"\x03", t.chunk)), t.row // per, chunks, t.chunk_proof), \
        "referee: the chunk is not in the tensor"
    return concat(slice(t.chunk, (t.row % per) * row, row), empty(bytes32))


@internal
@pure
def _record_row(j: Judging, ref: RecordRef, index: uint256, t: TensorRow) -> Bytes[ROW_BYTES]:
    """Row of an agreed earlier record (`index`). The record is proven by the chain itself: its
    link, then the leaves of every record after it, must hash forward to the chain value both
    parties revealed just before the disputed record, which commits to every record before it.
    (A Merkle proof against a trace root would not do: bisection checks only the leaves it
    queries, so a tree may hold other leaves elsewhere.)"""
    assert ref.index == index and index < j.record, "referee: an input must be an earlier, agreed record"
    assert len(ref.links) == j.record - 1 - index, "referee: give the leaves of every record up to the agreed one"
    digest: bytes32 = self._digest(t.dtype, t.dims, t.chunk_root)
    c: bytes32 = sha256(concat(b"\x02", ref.prev, self._leaf(ref.step, ref.op, digest)))
    for leaf: bytes32 in ref.links:
        c = sha256(concat(b"\x02", c, leaf))
    assert c == j.agreed, "referee: that record is not the one both parties agreed on"
    return self._row(t, digest)


@internal
@pure
def _at(row: Bytes[ROW_BYTES], t: TensorRow, i: uint256) -> int256:
    """Element `i` of a row of tensor `t` (uint8 unsigned, the rest signed)."""
    w: uint256 = self._itemsize(t.dtype)
    return self._element(row, i * w, w, t.dtype != 2)


@internal
@pure
def _part(row: Bytes[ROW_BYTES], t: TensorRow, start: uint256, n: uint256) -> Bytes[ROW_BYTES]:
    """Elements [start, start + n) of a row, then 32 more bytes (the elements after them, or the
    row's padding): a head's slice of a fused projection row, readable as OneStep reads rows."""
    w: uint256 = self._itemsize(t.dtype)
    return slice(row, start * w, n * w + 32)


@internal
@pure
def _last(dims: DynArray[uint256, 4]) -> uint256:
    return dims[len(dims) - 1]


@internal
@pure
def _same(a: DynArray[uint256, 4], b: DynArray[uint256, 4]) -> bool:
    return keccak256(abi_encode(a)) == keccak256(abi_encode(b))


@internal
@pure
def _input_row(j: Judging, desc: OpDesc, which: uint256, ref: RecordRef, t: TensorRow,
        row: uint256) -> Bytes[ROW_BYTES]:
    """Row `row` of input record `which`, proven through the chain to the agreed value."""
    assert t.row == row, "referee: that is not the element's row of an input"
    return self._record_row(j, ref, desc.inputs[which], t)


@internal
@pure
def _const_row(desc: OpDesc, which: uint256, t: TensorRow, row: uint256) -> Bytes[ROW_BYTES]:
    """Row `row` of the record's constant `which`, proven against the digest its descriptor names."""
    assert t.row == row, "referee: that is not the element's row of a constant"
    return self._row(t, desc.consts[which])


@internal
@pure
def _input_element(j: Judging, desc: OpDesc, which: uint256, ref: RecordRef,
                 t: TensorRow) -> int256:
    """Element `j.element` of input `which`, a record of the output's shape."""
    assert self._same(t.dims, desc.dims), "referee: the input's shape is not the output's"
    n: uint256 = self._last(desc.dims)
    return self._at(self._input_row(j, desc, which, ref, t, j.element // n), t, j.element % n)
