# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title LlamaReferee
@notice Phase three of a dispute over a Llama-family model (`veracity/models/llama.py`, SmolLM2):
        recompute the one element the game located from rows of agreed earlier records and rows
        of the record's constants (proven against the digests in its descriptor), with
        `LlamaOneStep`, and hand the value to `Disputes`. One entry point for the Q8_0 embedding,
        the block-quantized linear (the LM head's logits laid out in rows of 2,048), the wide
        RMSNorm, RoPE, the KV cache, the residual add and the SiLU gate (the attention and
        generation records: `LlamaAttentionReferee`; two contracts for the size limit).
"""

from interfaces import IDisputes
from interfaces import ILlamaOneStep
import tensors

K_QEMBED: constant(uint8) = 30  # op kinds (`veracity/exact/program.py`)
K_BLINEAR: constant(uint8) = 31
K_WRMSNORM: constant(uint8) = 32
K_ROPE: constant(uint8) = 33
K_KV_APPEND: constant(uint8) = 34
K_RESID_ADD: constant(uint8) = 38
K_SILU_GATE: constant(uint8) = 39

LOGIT_ROW: constant(uint256) = 2048  # a wider linear output is laid out [T, rows, LOGIT_ROW]

onestep: public(immutable(ILlamaOneStep))
deployer: immutable(address)
disputes: public(IDisputes)


@deploy
def __init__(onestep_: ILlamaOneStep):
    onestep = onestep_
    deployer = msg.sender


@external
def set_disputes(disputes_: IDisputes):
    """
    @notice Set once, by the deployer, to the Disputes contract this referee judges for.
    @param disputes_ The Disputes contract.
    """
    assert msg.sender == deployer, "referee: only the deployer sets the disputes contract"
    assert self.disputes.address == empty(address), "referee: the disputes contract is already set"
    self.disputes = disputes_


@internal
@view
def _judging(order_id: uint256, desc: tensors.OpDesc) -> tensors.Judging:
    h: bytes32 = empty(bytes32)
    record: uint256 = 0
    element: uint256 = 0
    agreed: bytes32 = empty(bytes32)
    h, record, element, agreed = staticcall self.disputes.judging(order_id)
    assert keccak256(abi_encode(desc)) == h, "referee: that is not the record's descriptor"
    return tensors.Judging(record=record, element=element, agreed=agreed)


@internal
@view
def _block_linear(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
                  rows: DynArray[tensors.TensorRow, 2], consts: DynArray[tensors.TensorRow, 3]) -> int256:
    """y[t, n]: row t of the input, row n of the quants and of the block scales (and minimums)."""
    q: tensors.TensorRow = consts[0]
    out_max: int256 = desc.params[1]
    big: uint256 = q.dims[0]  # the matrix's output channels
    per: uint256 = tensors._last(desc.dims)
    if big > LOGIT_ROW:
        per = desc.dims[1] * desc.dims[2]
        assert tensors._last(desc.dims) == LOGIT_ROW, "referee: a wide output is laid out in rows of 2048"
    t: uint256 = j.element // per
    n: uint256 = j.element % per
    if n >= big:
        return -(out_max + 1)  # the padding after the last logit
    assert q.dtype == 1 and consts[1].dtype == 4, "referee: wrong constant dtypes"
    k: uint256 = q.dims[1]
    assert tensors._last(rows[0].dims) == k, "referee: the input's width is not the matrix's"
    x: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], t)
    m: Bytes[tensors.ROW_BYTES] = b""
    if len(desc.consts) == 3:
        m = tensors._const_row(desc, 2, consts[2], n)
    return staticcall onestep.block_linear(x, tensors._itemsize(rows[0].dtype), tensors._const_row(desc, 0, q, n),
                                           tensors._const_row(desc, 1, consts[1], n), m, len(desc.consts) == 3, k,
                                           desc.params[0], out_max)


@internal
@view
def _qembed(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
            rows: DynArray[tensors.TensorRow, 2], consts: DynArray[tensors.TensorRow, 3]) -> int256:
    """y[0, p, c]: the token id at position p of the ids record, then its row of the Q8_0 table."""
    h: uint256 = tensors._last(desc.dims)
    p: uint256 = j.element // h
    c: uint256 = j.element % h
    w: uint256 = tensors._last(rows[0].dims)
    token: uint256 = convert(tensors._at(tensors._input_row(j, desc, 0, refs[0], rows[0], p // w), rows[0], p % w), uint256)
    assert consts[0].dtype == 1, "referee: the table's quants are int8"
    qv: int256 = tensors._at(tensors._const_row(desc, 0, consts[0], token), consts[0], c)
    dv: int256 = tensors._at(tensors._const_row(desc, 1, consts[1], token), consts[1], c // 32)
    return staticcall onestep.qembed(qv, dv)


@internal
@view
def _rope(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
          rows: DynArray[tensors.TensorRow, 2], consts: DynArray[tensors.TensorRow, 3]) -> int256:
    """y[0, t, c]: the pair (c even, c odd) of row t, rotated by position params[0] + t (its row
    of the cos and sin tables, column (c % head_dim) // 2)."""
    assert tensors._same(rows[0].dims, desc.dims), "referee: the input's shape is not the output's"
    width: uint256 = tensors._last(desc.dims)
    t: uint256 = j.element // width
    c: uint256 = j.element % width
    pos: uint256 = convert(desc.params[0], uint256) + t
    col: uint256 = (c % convert(desc.params[1], uint256)) // 2
    x: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], t)
    first: uint256 = c - c % 2
    cv: int256 = tensors._at(tensors._const_row(desc, 0, consts[0], pos), consts[0], col)
    sv: int256 = tensors._at(tensors._const_row(desc, 1, consts[1], pos), consts[1], col)
    return staticcall onestep.rope(tensors._at(x, rows[0], first), tensors._at(x, rows[0], first + 1), cv, sv,
                                   c % 2 == 1)


@internal
@pure
def _kv_append(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
               rows: DynArray[tensors.TensorRow, 2]) -> int256:
    """y[0, s, c]: the cache's row s, or the new rows' row s - S0 (both inputs proven, so both
    lengths are the committed ones)."""
    width: uint256 = tensors._last(desc.dims)
    s: uint256 = j.element // width
    c: uint256 = j.element % width
    old: uint256 = rows[0].dims[1]
    assert old + rows[1].dims[1] == desc.dims[1], "referee: the cache and the new rows do not make the output"
    cache: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], min(s, old - 1))
    new: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 1, refs[1], rows[1], s - min(s, old))
    if s < old:
        return tensors._at(cache, rows[0], c)
    return tensors._at(new, rows[1], c)


@external
def judge(order_id: uint256, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
          rows: DynArray[tensors.TensorRow, 2], consts: DynArray[tensors.TensorRow, 3], index: uint256):
    """
    @notice Judge the located element of a Llama-family record: `refs` and `rows` prove the rows of
            its input records the op reads (in the descriptor's input order), `consts` the rows of
            its constants (in the descriptor's order), `index` the probability table entry.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param refs The input records' links to the agreed chain value, in input order.
    @param rows The rows of the input records the op reads, with their chunk proofs.
    @param consts The rows of the constants the op reads, with their chunk proofs.
    @param index The exp2 table's entry (probabilities only).
    """
    j: tensors.Judging = self._judging(order_id, desc)
    assert len(refs) == len(rows) and len(rows) >= len(desc.inputs), "referee: give a row of every input"
    assert len(consts) >= len(desc.consts), "referee: give a row of every constant"
    k: uint8 = desc.kind
    y: int256 = 0
    if k == K_BLINEAR:
        y = self._block_linear(j, desc, refs, rows, consts)
    elif k == K_QEMBED:
        y = self._qembed(j, desc, refs, rows, consts)
    elif k == K_WRMSNORM:
        assert tensors._same(rows[0].dims, desc.dims), "referee: the input's shape is not the output's"
        h: uint256 = tensors._last(desc.dims)
        xn: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], j.element // h)
        gain: int256 = tensors._at(tensors._const_row(desc, 0, consts[0], 0), consts[0], j.element % h)
        y = staticcall onestep.wrmsnorm(xn, tensors._itemsize(rows[0].dtype), h, j.element % h, gain)
    elif k == K_ROPE:
        y = self._rope(j, desc, refs, rows, consts)
    elif k == K_KV_APPEND:
        y = self._kv_append(j, desc, refs, rows)
    elif k == K_RESID_ADD:
        y = staticcall onestep.resid_add(tensors._input_element(j, desc, 0, refs[0], rows[0]),
                                         tensors._input_element(j, desc, 1, refs[1], rows[1]))
    elif k == K_SILU_GATE:
        g: int256 = tensors._input_element(j, desc, 0, refs[0], rows[0])
        at: uint256 = convert(g + 2**15, uint256)
        entry: int256 = tensors._at(tensors._const_row(desc, 0, consts[0], at // 256), consts[0], at % 256)
        y = staticcall onestep.silu_gate(g, at, entry, tensors._input_element(j, desc, 1, refs[1], rows[1]))
    else:
        raise "referee: not a Llama-family record (attention and generation: LlamaAttentionReferee)"
    extcall self.disputes.judged(order_id, y)
