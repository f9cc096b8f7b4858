# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title TrainAttentionReferee
@notice Phase three of a dispute over the tiny GPT's training step (`veracity/training/gpt.py`),
        for attention's ops (the heads split out of rows of tokens and merged back, the causal
        scores from a query row and a key row, the probabilities from a row of exp values, the
        softmax's backward from a row of probabilities and of their gradient), GELU and its
        slope (an input element and a row of the table), and the embedding lookup (the token's
        row of wte, the position's of wpe). The value goes
        to `Disputes` through the TrainReferee. The formulas are `veracity/verify/onestep_train.py`'s.
"""

from interfaces import IDisputes
import tensors
import trainmath

interface ITrainReferee:
    def disputes() -> IDisputes: view
    def relay(order_id: uint256, recomputed: int256): nonpayable

K_HEAD_SPLIT: constant(uint8) = 50  # op kinds (`veracity/exact/program.py`)
K_HEAD_MERGE: constant(uint8) = 51
K_T_SCORES: constant(uint8) = 52
K_ROW_NORM: constant(uint8) = 53
K_SOFTMAX_BWD: constant(uint8) = 54
K_EMBED_SUM: constant(uint8) = 45
K_GELU_T: constant(uint8) = 55
K_GELU_GRAD: constant(uint8) = 56

PROB: constant(int256) = 16  # the probabilities' fixed point, and the scale's
MASKED: constant(int256) = -(1 << 40)
MAX_K: constant(uint256) = 1040
ACT_FRAC: constant(int256) = 12
GELU_FRAC: constant(int256) = 8

train: public(immutable(ITrainReferee))


@deploy
def __init__(train_: ITrainReferee):
    train = train_


@internal
@view
def _judging(order_id: uint256, desc: tensors.OpDesc) -> tensors.Judging:
    h: bytes32 = empty(bytes32)
    record: uint256 = 0
    element: uint256 = 0
    agreed: bytes32 = empty(bytes32)
    h, record, element, agreed = staticcall (staticcall train.disputes()).judging(order_id)
    assert keccak256(abi_encode(desc)) == h, "referee: that is not the record's descriptor"
    return tensors.Judging(record=record, element=element, agreed=agreed)


@internal
@pure
def _same_row(j: tensors.Judging, desc: tensors.OpDesc, which: uint256, ref: tensors.RecordRef,
              t: tensors.TensorRow) -> Bytes[tensors.ROW_BYTES]:
    """The element's row of input `which`, a record of the output's shape."""
    assert tensors._same(t.dims, desc.dims), "referee: the input's shape is not the output's"
    return tensors._input_row(j, desc, which, ref, t, j.element // tensors._last(desc.dims))


@internal
@pure
def _gelu_index(x: int256) -> uint256:
    """The GELU table's entry for an ACT_FRAC value: GELU_FRAC bits, clipped to 16, offset by 2**15."""
    return convert(max(-32768, min(32767, trainmath._round_shift(x, 1, GELU_FRAC - ACT_FRAC))) + 32768, uint256)


@internal
@view
def _entry(desc: tensors.OpDesc, table: tensors.TensorRow, index: uint256) -> int256:
    """Entry `index` of the record's table constant ([256, 256])."""
    assert tensors._last(table.dims) == 256, "referee: the table has rows of 256"
    return tensors._at(tensors._const_row(desc, 0, table, index // 256), table, index % 256)


@external
def judge(order_id: uint256, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 3],
          rows: DynArray[tensors.TensorRow, 3], table: tensors.TensorRow):
    """
    @notice Judge the located element of a tiny-GPT attention record: `refs` and `rows` prove the
            rows of its input records the op reads (`veracity/verify/game.py: step_rows` names
            them; a merge reads one row of the one input its column names); `table` the GELU or
            slope table's row.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param refs The input records' links to the agreed chain value.
    @param rows The rows of the input records the op reads, with their chunk proofs.
    @param table A row of the GELU or slope table (the GELU ops only), with its chunk proof.
    """
    j: tensors.Judging = self._judging(order_id, desc)
    k: uint8 = desc.kind
    n: uint256 = tensors._last(desc.dims)
    c: uint256 = j.element % n
    y: int256 = 0
    if k == K_HEAD_SPLIT:  # [B*H, T, d] from [B*T, parts*H*d]; params (part, heads)
        assert len(desc.dims) == 3 and len(rows) == 1, "referee: a head split reads one row of one input"
        t_len: uint256 = desc.dims[1]
        heads: uint256 = convert(desc.params[1], uint256)
        g: uint256 = j.element // (t_len * n)
        src: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0],
                                                           g // heads * t_len + j.element // n % t_len)
        col: uint256 = convert(desc.params[0], uint256) * heads * n + g % heads * n + c
        assert col < tensors._last(rows[0].dims), "referee: the part is outside the row"
        y = tensors._at(src, rows[0], col)
    elif k == K_HEAD_MERGE:  # [B*T, parts*H*d] from parts [B*H, T, d]; params (heads)
        assert len(rows[0].dims) == 3 and len(rows) == 1, "referee: a merge reads one row of the part's input"
        t_len: uint256 = rows[0].dims[1]
        hd: uint256 = rows[0].dims[2]
        heads: uint256 = convert(desc.params[0], uint256)
        part: uint256 = c // (heads * hd)
        tok: uint256 = j.element // n
        src: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, part, refs[0], rows[0],
                                                           (tok // t_len * heads + c % (heads * hd) // hd) * t_len
                                                           + tok % t_len)
        y = tensors._at(src, rows[0], c % hd)
    elif k == K_T_SCORES:  # [G, T, T] from q, k [G, T, d]; params (shift, scale)
        assert len(rows) == 2, "referee: scores read a query row and a key row"
        i: uint256 = j.element // n % n
        if c > i:
            y = MASKED
        else:
            q: DynArray[int256, MAX_K] = trainmath._row(
                tensors._input_row(j, desc, 0, refs[0], rows[0], j.element // n), rows[0])
            key: DynArray[int256, MAX_K] = trainmath._row(
                tensors._input_row(j, desc, 1, refs[1], rows[1], j.element // (n * n) * n + c), rows[1])
            y = trainmath._round_shift(trainmath._qdot(q, key, desc.params[0]) * desc.params[1], 1, -PROB)
    elif k == K_ROW_NORM:  # x[r, c] / sum(x_r) in params[0] bits
        x: DynArray[int256, MAX_K] = trainmath._row(self._same_row(j, desc, 0, refs[0], rows[0]), rows[0])
        y = trainmath._round_shift(x[c], trainmath._sum(x), desc.params[0])
    elif k == K_SOFTMAX_BWD:  # from row r of p and of dp; params (scale)
        p: DynArray[int256, MAX_K] = trainmath._row(self._same_row(j, desc, 0, refs[0], rows[0]), rows[0])
        dp: DynArray[int256, MAX_K] = trainmath._row(self._same_row(j, desc, 1, refs[1], rows[1]), rows[1])
        rs: int256 = trainmath._round_shift(trainmath._dot(p, dp), 1, -PROB)
        ds: int256 = trainmath._round_shift(p[c] * (dp[c] - rs), 1, -PROB)
        y = trainmath._round_shift(ds * desc.params[0], 1, -PROB)
    elif k == K_EMBED_SUM:  # ids [N], wte [V, C], wpe [P, C]; params (positions, shift)
        r: uint256 = j.element // n
        assert len(rows[0].dims) == 1 and r < rows[0].dims[0], "referee: the ids are one row of every token"
        token: int256 = tensors._at(tensors._input_row(j, desc, 0, refs[0], rows[0], 0), rows[0], r)
        assert token >= 0 and tensors._last(rows[1].dims) == n and tensors._last(rows[2].dims) == n, \
            "referee: the tables' rows are not the output's"
        wte: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 1, refs[1], rows[1], convert(token, uint256))
        wpe: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 2, refs[2], rows[2],
                                                           r % convert(desc.params[0], uint256))
        y = trainmath._round_shift(tensors._at(wte, rows[1], c) + tensors._at(wpe, rows[2], c), 1, desc.params[1])
    elif k == K_GELU_T:
        x: int256 = tensors._input_element(j, desc, 0, refs[0], rows[0])
        y = self._entry(desc, table, self._gelu_index(x)) << convert(ACT_FRAC - GELU_FRAC, uint256)
    elif k == K_GELU_GRAD:
        h: int256 = tensors._input_element(j, desc, 1, refs[1], rows[1])
        slope: int256 = self._entry(desc, table, self._gelu_index(h))
        y = trainmath._round_shift(tensors._input_element(j, desc, 0, refs[0], rows[0]) * slope, 1, -ACT_FRAC)
    else:
        raise "referee: not a tiny-GPT attention record"
    extcall train.relay(order_id, y)
