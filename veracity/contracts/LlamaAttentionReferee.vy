# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title LlamaAttentionReferee
@notice Phase three of a dispute over a Llama-family model, for its attention and generation
        records: grouped-query scores, probabilities and context, each logits row's maximum and
        the token pick (the rest: `LlamaReferee`; two contracts for the size limit). One entry
        point, as `LlamaReferee`'s.
"""

from interfaces import IDisputes
from interfaces import ILlamaOneStep
import tensors

K_GQA_SCORES: constant(uint8) = 35  # op kinds (`veracity/exact/program.py`)
K_GQA_PROBS: constant(uint8) = 36
K_GQA_CONTEXT: constant(uint8) = 37
K_ROW_MAX: constant(uint8) = 40
K_PICK: constant(uint8) = 41

EXP2_ROW: constant(uint256) = 1024  # the probability table's rows ([18, 1024] int32)

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
def _scores(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
            rows: DynArray[tensors.TensorRow, 2]) -> int256:
    """z[h, t, s]: head h's slice of query row t, its KV head's slice of key row s."""
    tq: uint256 = desc.dims[1]
    sk: uint256 = desc.dims[2]
    h: uint256 = j.element // (tq * sk)
    t: uint256 = (j.element // sk) % tq
    s: uint256 = j.element % sk
    heads: uint256 = convert(desc.params[0], uint256)
    dim: uint256 = tensors._last(rows[0].dims) // heads
    kvh: uint256 = h // (heads // convert(desc.params[1], uint256))
    q: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], t)
    k: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 1, refs[1], rows[1], s)
    assert rows[0].dtype == rows[1].dtype and rows[1].dims[1] == sk, "referee: the key cache is not the scores'"
    return staticcall onestep.gqa_score(tensors._part(q, rows[0], h * dim, dim), tensors._part(k, rows[1], kvh * dim, dim),
                                        tensors._itemsize(rows[0].dtype), dim, s + tq <= sk + t)


@internal
@view
def _probs(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
           rows: DynArray[tensors.TensorRow, 2], consts: DynArray[tensors.TensorRow, 3], index: uint256) -> int256:
    """p[h, t, s]: row (h, t) of the scores and the table's entry `index` (checked against them)."""
    assert tensors._same(rows[0].dims, desc.dims), "referee: the scores' shape is not the output's"
    s: uint256 = tensors._last(desc.dims)
    z: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], j.element // s)
    entry: int256 = tensors._at(tensors._const_row(desc, 0, consts[0], index // EXP2_ROW), consts[0], index % EXP2_ROW)
    return staticcall onestep.gqa_prob(z, tensors._itemsize(rows[0].dtype), s, j.element % s, index, entry)


@internal
@view
def _context(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
             rows: DynArray[tensors.TensorRow, 2]) -> int256:
    """ctx[0, t, (h, i)]: row (h, t) of the probabilities, row (KV head, i) of V transposed."""
    width: uint256 = tensors._last(desc.dims)
    t: uint256 = j.element // width
    c: uint256 = j.element % width
    heads: uint256 = convert(desc.params[0], uint256)
    dim: uint256 = width // heads
    h: uint256 = c // dim
    kvh: uint256 = h // (heads // convert(desc.params[1], uint256))
    tq: uint256 = rows[0].dims[1]
    s: uint256 = tensors._last(rows[0].dims)
    assert tensors._last(rows[1].dims) == s, "referee: V's positions are not the probabilities'"
    p: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], h * tq + t)
    v: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 1, refs[1], rows[1], kvh * dim + c % dim)
    return staticcall onestep.gqa_context(p, tensors._itemsize(rows[0].dtype), v, tensors._itemsize(rows[1].dtype), s)


@internal
@view
def _pick(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
          rows: DynArray[tensors.TensorRow, 2]) -> int256:
    """token[t]: the best of row t's (value, id) pairs; once the previous token (input 1, if any)
    is one of the stop tokens (params), that token again."""
    m: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], j.element)
    y: int256 = staticcall onestep.pick(m, tensors._itemsize(rows[0].dtype), tensors._last(rows[0].dims) // 2)
    if len(desc.inputs) == 2:
        prev: int256 = tensors._input_element(j, desc, 1, refs[1], rows[1])
        for stop: int256 in desc.params:
            if prev == stop:
                y = prev
    return y


@external
def judge(order_id: uint256, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 2],
          rows: DynArray[tensors.TensorRow, 2], consts: DynArray[tensors.TensorRow, 3], index: uint256):
    """
    @notice Judge the located element of a Llama-family attention or generation record: `refs`
            and `rows` prove the rows of its input records the op reads (in the descriptor's
            input order), `consts` the probability table's row, `index` its entry.
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
    if k == K_GQA_SCORES:
        y = self._scores(j, desc, refs, rows)
    elif k == K_GQA_PROBS:
        y = self._probs(j, desc, refs, rows, consts, index)
    elif k == K_GQA_CONTEXT:
        y = self._context(j, desc, refs, rows)
    elif k == K_ROW_MAX:
        pairs: uint256 = tensors._last(desc.dims)
        r: uint256 = (j.element % pairs) // 2
        x: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0],
                                                         (j.element // pairs) * rows[0].dims[1] + r)
        y = staticcall onestep.row_max(x, tensors._itemsize(rows[0].dtype), tensors._last(rows[0].dims), r,
                                       j.element % 2)
    elif k == K_PICK:
        y = self._pick(j, desc, refs, rows)
    else:
        raise "referee: not a Llama-family attention or generation record"
    extcall self.disputes.judged(order_id, y)
