"""Phases two and three of a dispute, off-chain: what a party shows the contracts, and a player.

Phase one (``verify.bisection``) ends at the first record ``k`` the two traces disagree on, with
both agreeing on every record before it. Then (``contracts/Disputes.vy``):

1. **Open**: each party shows record ``k``'s descriptor (proven against the order's program
   root) and its tensor's chunk root; with the agreed chain value they must give back its
   committed chain value. An input record is judged here, by the digest the client posted.
2. **Descend**: each round both reveal the two children of their current node in the tensor's
   chunk tree; the game follows a child where they differ, down to one chunk.
3. **Chunk**: the challenger reveals its chunk, then the provider its own and the challenger's;
   the contract finds the first differing element.
4. **Judge**: anyone shows the element's inputs (rows of agreed earlier records, each proven by
   chain links forward to the agreed chain value, and rows of the descriptor's constants) to the
   ``Referee`` or ``AttentionReferee``, which recomputes the element with ``OneStep``; the
   provider loses unless its element is that value.

``TensorSide`` holds one committed tensor ready to reveal; ``judge_args`` builds a judgement's
call. The player that sends a party's moves is ``client.player.Player`` (this package stays pure).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from veracity.exact import merkle, spec
from veracity.exact import program as prog
from veracity.exact.trace import (
    DTYPE_CODES,
    chunk_leaf,
    leaf_hash,
    tensor_chunks,
)
from veracity.verify.bisection import TraceView

PROVIDER, CHALLENGER = 1, 2


class TensorSide:
    """A committed tensor: its chunks and chunk tree, ready to reveal any node, chunk or row."""

    def __init__(self, tensor: np.ndarray) -> None:
        self.tensor = np.ascontiguousarray(tensor)
        self.chunks = [bytes(c) for c in tensor_chunks(self.tensor)]
        self.tree = merkle.levels([chunk_leaf(c) for c in self.chunks])
        self.root = self.tree[-1][0]
        shape = self.tensor.shape
        self.per = len(self.chunks[0]) // (shape[-1] * self.tensor.dtype.itemsize)

    def children(self, level: int, index: int) -> tuple[bytes, bytes]:
        below = self.tree[level - 1]
        return below[2 * index], below[2 * index + 1]

    def row(self, r: int) -> tuple[Any, ...]:
        """The contract's ``TensorRow`` for row ``r``."""
        ci = r // self.per
        return (DTYPE_CODES[self.tensor.dtype], list(self.tensor.shape), self.root, self.chunks[ci], merkle.prove(self.tree, ci), r)


def record_ref(view: TraceView, k: int, upto: int) -> tuple[Any, ...]:
    """The contract's ``RecordRef`` for record ``k`` read by record ``upto``: its chain link, and
    the leaf hashes of the records between, which hash forward to the agreed chain value."""
    rec = view.records[k]
    prev = view.chain[k - 1] if k > 0 else bytes(32)
    links = [leaf_hash(r.step, r.op, r.digest) for r in view.records[k + 1:upto]]
    return (k, prev, rec.step, rec.op, links)


def desc_proof(program: list[prog.OpDesc], i: int) -> list[bytes]:
    return merkle.prove(merkle.levels([d.hash() for d in program]), i)


EMPTY_ROW: tuple[Any, ...] = (4, [1], bytes(32), b"", [], 0)  # a TensorRow argument the judge does not read
TRAIN_KINDS = (prog.QMM, prog.EXP_ROWS, prog.LOSS_GRAD, prog.ROW_SUM, prog.RELU_MASK, prog.MOMENT, prog.SECOND,
               prog.WEIGHT)
TRAIN_NORM_KINDS = (prog.RESCALE, prog.SUM, prog.LN_REC, prog.XHAT, prog.LN_BWD, prog.COL_DOT, prog.SCATTER_ADD)
TRAIN_ATTENTION_KINDS = (prog.HEAD_SPLIT, prog.HEAD_MERGE, prog.T_SCORES, prog.ROW_NORM, prog.SOFTMAX_BWD,
                         prog.EMBED_SUM, prog.GELU_T, prog.GELU_GRAD)
FINETUNE_KINDS = (prog.SEG_MEAN, prog.SEG_SPREAD, prog.ROW_QSCALE, prog.QSCALE_MUL, prog.QUANT_T, prog.QMM_INT8W,
                  prog.QMM_W2)
GPT_KINDS = TRAIN_NORM_KINDS + TRAIN_ATTENTION_KINDS
STEP_KINDS = GPT_KINDS + FINETUNE_KINDS  # judged by the referees behind the TrainReferee's relay


def qmm_w_row(dims: tuple[int, ...], element: int, w_dims: tuple[int, ...]) -> int:
    """The row of a QMM's second operand that element ``element`` reads: row c of w [N, K], or,
    batched (w [G, N, K], the output [G, M, N]), row N g + c of group g."""
    n = dims[-1]
    if len(w_dims) == 3:
        return element // (dims[-2] * n) * n + element % n
    return element % n


def step_rows(desc: prog.OpDesc, element: int, shape: Callable[[int], tuple[int, ...]],
             value: Callable[[int, int], int]) -> tuple[list[int], list[int], int]:
    """For a tiny-GPT or fine-tuning step's record: (which inputs, the row of each, the table
    entry) its element reads (-1: no table). ``shape(i)`` is input ``i``'s dims, ``value(i, flat)``
    an element."""
    from veracity.verify import onestep_train as og

    dims, kind, ins = desc.dims, desc.kind, desc.inputs
    n = dims[-1]
    r, c = divmod(element, n)
    which = list(range(len(ins)))
    if kind in (prog.RESCALE, prog.SUM, prog.XHAT, prog.ROW_NORM, prog.SOFTMAX_BWD):
        return which, [r] * len(ins), -1
    if kind == prog.EMBED_SUM:
        return which, [0, value(0, r), r % desc.params[0]], -1
    if kind == prog.LN_REC:
        return which, [r, 0, 0], -1
    if kind == prog.LN_BWD:
        return which, [r, r, 0], -1
    if kind == prog.COL_DOT:
        return which, [element, element], -1
    if kind == prog.GELU_T:
        return which, [r], og.gelu_index(value(0, element))
    if kind == prog.GELU_GRAD:
        return which, [r, r], og.gelu_index(value(1, element))
    if kind == prog.SCATTER_ADD:
        return which, [c, 0], -1
    if kind == prog.HEAD_SPLIT:
        return which, [og.head_split_source(dims, element, desc.params[1], desc.params[0])[0]], -1
    if kind == prog.HEAD_MERGE:
        part, row, _ = og.head_merge_source(n, shape(0), element, desc.params[0])
        return [part], [row], -1
    if kind == prog.T_SCORES:
        t_len = dims[-1]
        return which, [element // t_len, element // (t_len * t_len) * t_len + element % t_len], -1
    if kind == prog.SEG_MEAN:
        return which, [c, 0], -1
    if kind == prog.SEG_SPREAD:
        starts = [value(1, k) for k in range(shape(1)[0])]
        return which, [og._segment(starts, r), 0], -1
    if kind in (prog.ROW_QSCALE, prog.QSCALE_MUL):
        return which, [r] * len(ins), -1
    if kind == prog.QUANT_T:
        return which, [c], -1
    if kind == prog.QMM_INT8W:  # y [R, N] or, in halves, [R, 2, N/2]: row r of x, row c of w
        per = int(np.prod(dims[1:]))
        return which, [element // per, element % per], -1
    if kind == prog.QMM_W2:
        return [0, 1, 1], [r, 2 * c, 2 * c + 1], -1
    raise ValueError(f"record {desc.op!r} of kind {kind} is not a training step's record")


LLAMA_KINDS = (prog.QEMBED, prog.BLINEAR, prog.WRMSNORM, prog.ROPE, prog.KV_APPEND, prog.GQA_SCORES, prog.GQA_PROBS,
               prog.GQA_CONTEXT, prog.RESID_ADD, prog.SILU_GATE, prog.ROW_MAX, prog.PICK)
LLAMA_ATTENTION_KINDS = (prog.GQA_SCORES, prog.GQA_PROBS, prog.GQA_CONTEXT, prog.ROW_MAX, prog.PICK)


def llama_judge_args(desc: prog.OpDesc, element: int, side: Callable[[int], TensorSide],
                     const: Callable[[int], TensorSide],
                     rec: Callable[[int, int], tuple[Any, Any]]) -> tuple[str, tuple[Any, ...]]:
    """The LlamaReferee's (or LlamaAttentionReferee's) one judge for a Llama-family record
    (``exact.llm``): the rows of its inputs and constants the element reads, and the exp2 table
    index for a probability."""
    from veracity.exact import llm

    dims, kind, ins = desc.dims, desc.kind, desc.inputs
    n = dims[-1]
    r, c = divmod(element, n)
    rows: list[int] = [r] * len(ins)  # the element's row of each input (elementwise ops)
    consts: list[tuple[Any, ...]] = []
    index = 0
    if kind == prog.BLINEAR:
        big = const(0).tensor.shape[0]
        per = dims[1] * dims[2] if big > llm.LOGIT_ROW else n
        t, ch = divmod(element, per)
        rows = [t]
        consts = [const(k).row(ch) if ch < big else EMPTY_ROW for k in range(len(desc.consts))]
    elif kind == prog.QEMBED:
        ids = side(ins[0]).tensor
        token = int(ids.flat[r])
        rows = [r // ids.shape[-1]]
        consts = [const(0).row(token), const(1).row(token)]
    elif kind == prog.WRMSNORM:
        consts = [const(0).row(0)]
    elif kind == prog.ROPE:
        consts = [const(0).row(desc.params[0] + r), const(1).row(desc.params[0] + r)]
    elif kind == prog.KV_APPEND:
        old = side(ins[0]).tensor.shape[1]
        rows = [min(r, old - 1), r - min(r, old)]
    elif kind == prog.GQA_SCORES:
        _, t, s = (int(v) for v in np.unravel_index(element, dims))
        rows = [t, s]
    elif kind == prog.GQA_PROBS:
        z = side(ins[0]).tensor.reshape(-1, n)[r].astype(np.int64)
        last = len(llm.exp2_table()) - 1
        valid = z != llm.MASKED
        index = last if not valid[c] else min(int(z[valid].max() - z[c]), last)
        consts = [const(0).row(index // 1024)]
    elif kind == prog.GQA_CONTEXT:
        heads, kv_heads = desc.params
        dim = n // heads
        h = c // dim
        t_len = side(ins[0]).tensor.shape[1]
        rows = [h * t_len + r, h // (heads // kv_heads) * dim + c % dim]
    elif kind == prog.SILU_GATE:
        consts = [const(0).row((int(side(ins[0]).tensor.flat[element]) + (1 << 15)) // 256)]
    elif kind == prog.ROW_MAX:
        rows = [r * side(ins[0]).tensor.shape[1] + c // 2]
    elif kind == prog.PICK:
        rows = [element] * len(ins)
    pairs = [rec(i, rr) for i, rr in zip(ins, rows)]
    judge = "llama_attention" if kind in LLAMA_ATTENTION_KINDS else "llama"
    return judge, (desc.as_tuple(), [p[0] for p in pairs], [p[1] for p in pairs], consts, index)


def judge_args(desc: prog.OpDesc, record: int, element: int, view: TraceView, side: Callable[[int], TensorSide],
               const: Callable[[int], TensorSide]) -> tuple[str, tuple[Any, ...]] | None:
    """The referee call that judges ``element`` of a record with ``desc``: (judge, arguments).
    ``side(i)`` is record ``i``'s tensor (an agreed input), ``const(k)`` the descriptor's k-th
    constant. None for a record whose inputs are not whole records (a token id chosen by an
    earlier pass, a row picked from a record), which cannot be judged to one element yet."""
    if any(i == prog.NO_INPUT for i in desc.inputs):
        return None
    dims, kind, ins = desc.dims, desc.kind, desc.inputs
    n = dims[-1]
    r, c = divmod(element, n)

    def ref(i: int) -> tuple[Any, ...]:
        return record_ref(view, i, record)

    def rec(i: int, row: int) -> tuple[Any, Any]:
        return ref(i), side(i).row(row)

    d = desc.as_tuple()
    if kind == prog.LINEAR:
        smooth = const(2).row(0) if len(desc.consts) == 3 else EMPTY_ROW
        return "linear", (d, *rec(ins[0], r), const(0).row(c), const(1).row(c), smooth)
    if kind == prog.RELU:
        return "relu", (d, *rec(ins[0], r))
    if kind == prog.ADD:
        return "add", (d, *rec(ins[0], r), *rec(ins[1], r))
    if kind in (prog.GELU, prog.SILU):
        index = int(side(ins[0]).tensor.flat[element]) + (1 << 15)
        return "lut", (d, *rec(ins[0], r), const(0).row(index // 256))
    if kind in (prog.LAYERNORM, prog.RMSNORM):
        return "norm", (d, *rec(ins[0], r), const(0).row(c))
    if kind == prog.EMBEDDING:
        ids = side(ins[0]).tensor
        token = int(ids.flat[r])
        return "embedding", (d, *rec(ins[0], r // ids.shape[-1]), const(0).row(token))
    if kind == prog.L2_NORMALIZE:
        return "l2_normalize", (d, *rec(ins[0], r))
    if kind == prog.TRANSPOSE:
        p, q = dims[-2], dims[-1]
        return "transpose", (d, *rec(ins[0], element // (p * q) * q + element % q))
    if kind == prog.SCORES:
        b, _, i, j = (int(v) for v in np.unravel_index(element, dims))
        t = dims[-1]
        return "scores", (d, ref(ins[0]), side(ins[0]).row(int(b * t + i)),
                          side(ins[0]).row(int(b * t + j)), *rec(ins[1], int(b)))
    if kind == prog.PROBS:
        z = side(ins[0]).tensor.reshape(-1, n)[r].astype(np.int64)
        u = spec.EXP2_LUT_SIZE - 1 if z[c] == spec.MASKED_SCORE else min(int(z.max() - z[c]), spec.EXP2_LUT_SIZE - 1)
        return "probs", (d, *rec(ins[0], r), const(0).row(0), u)
    if kind == prog.PROBSUM:
        return "probsum", (d, *rec(ins[0], element))
    if kind == prog.VT:
        b, _, _, t = (int(v) for v in np.unravel_index(element, dims))
        return "vt", (d, *rec(ins[0], int(b * dims[3] + t)))
    if kind == prog.CONTEXT:
        b, tok, cc = (int(v) for v in np.unravel_index(element, dims))
        heads = desc.params[0]
        dh = n // heads
        bh = b * heads + cc // dh
        return "context", (d, *rec(ins[0], bh * dims[1] + tok), *rec(ins[1], bh), *rec(ins[2], bh * dh + cc % dh),
                           *rec(ins[3], b))
    if kind == prog.MEAN_POOL:
        return "mean_pool", (d, *rec(ins[0], element), *rec(ins[1], element // n))
    if kind == prog.ARGMAX:
        return "argmax", (d, *rec(ins[0], element))
    if kind == prog.APPEND:
        ids_arg = rec(ins[0], r) if c + 1 < n else (ref(ins[0]), EMPTY_ROW)
        token_arg = rec(ins[1], r) if c + 1 == n else (ref(ins[1]), EMPTY_ROW)
        return "append", (d, *ids_arg, *token_arg)
    if kind == prog.SELECT_LAST:
        t = side(ins[0]).tensor.shape[1]
        return "select_last", (d, *rec(ins[0], r * t + t - 1))
    if kind in LLAMA_KINDS:
        return llama_judge_args(desc, element, side, const, rec)
    if kind in STEP_KINDS:  # the TrainNormReferee's, TrainAttentionReferee's or FinetuneReferee's judge
        which, rows, entry = step_rows(desc, element, lambda i: tuple(side(ins[i]).tensor.shape),
                                      lambda i, f: int(side(ins[i]).tensor.flat[f]))
        pairs = [rec(ins[i], rr) for i, rr in zip(which, rows)]
        table = const(0).row(entry // 256) if entry >= 0 else EMPTY_ROW
        judge = ("train_norm" if kind in TRAIN_NORM_KINDS else "train_attention" if kind in TRAIN_ATTENTION_KINDS
                 else "finetune")
        return judge, (d, [p[0] for p in pairs], [p[1] for p in pairs], table)
    if kind in TRAIN_KINDS:  # the TrainReferee's one judge: a row of each input, and a table row
        table = EMPTY_ROW
        if kind == prog.QMM:  # row r of x, row c of w (of its group, batched), the bias
            rows = [r, qmm_w_row(dims, element, tuple(side(ins[1]).tensor.shape)), 0][:len(ins)]
        elif kind == prog.EXP_ROWS:
            from veracity.verify.onestep import exp_index

            rows = [r]
            table = const(0).row(exp_index([int(v) for v in side(ins[0]).tensor.reshape(-1, n)[r]], c) // 256)
        elif kind == prog.LOSS_GRAD:
            rows = [r, 0]
        elif kind == prog.ROW_SUM:
            rows = [element]
        else:  # elementwise
            rows = [r] * len(ins)
        pairs = [rec(i, rr) for i, rr in zip(ins, rows)]
        return "train", (d, [p[0] for p in pairs], [p[1] for p in pairs], table)
    return None


def recompute(desc: prog.OpDesc, element: int, record: Callable[[int], np.ndarray],
              consts: tuple[np.ndarray, ...]) -> int:
    """What the referees compute for ``element`` of a record with ``desc``, in Python: from its
    input records' tensors (``record(i)``) and its constants, by ``verify.onestep``. A program's
    wiring is right when this gives every record's own values (the tests check it)."""
    from veracity.verify import onestep

    dims, kind, ins, e = desc.dims, desc.kind, desc.inputs, element
    n = dims[-1]
    r, c = divmod(e, n)

    def row(i: int, rr: int) -> list[int]:
        t = record(i)
        return [int(v) for v in t.reshape(-1, t.shape[-1])[rr]]

    def at(i: int) -> int:
        return int(record(i).flat[e])

    if kind in LLAMA_KINDS:
        return recompute_llama(desc, element, record, consts, row, at)
    if kind in STEP_KINDS:
        return recompute_step(desc, element, record, consts, row)
    if kind == prog.LINEAR:
        req = consts[1][c]
        smooth = [int(v) for v in consts[2][0]] if len(consts) == 3 else None
        return onestep.linear(row(ins[0], r), [int(v) for v in consts[0][c]], int(req[0]), int(req[1]), int(req[2]),
                              desc.params[0], smooth)
    if kind == prog.RELU:
        return onestep.relu(at(ins[0]))
    if kind == prog.ADD:
        return onestep.add(at(ins[0]), at(ins[1]))
    if kind in (prog.GELU, prog.SILU):
        index = at(ins[0]) + (1 << 15)
        return onestep.lut(at(ins[0]), index, int(consts[0].flat[index]))
    if kind in (prog.LAYERNORM, prog.RMSNORM):
        return onestep.norm(row(ins[0], r), c, int(consts[0][c, 0]), int(consts[0][c, 1]), kind == prog.LAYERNORM)
    if kind == prog.EMBEDDING:
        token = int(record(ins[0]).flat[r])
        return onestep.embedding([int(v) for v in consts[0][token]], token, token, c)
    if kind == prog.L2_NORMALIZE:
        return onestep.l2_normalize(row(ins[0], r), c)
    if kind == prog.TRANSPOSE:
        p, q = dims[-2], dims[-1]
        return row(ins[0], e // (p * q) * q + e % q)[(e // q) % p]
    if kind in (prog.SCORES, prog.VT, prog.CONTEXT):
        heads = desc.params[0]
        if kind == prog.SCORES:
            qkv = record(ins[0])
            b, hh, i, j = (int(v) for v in np.unravel_index(e, dims))
            h = qkv.shape[-1] // 3
            dh = h // heads
            q_row = [int(v) for v in qkv[b, i, hh * dh:(hh + 1) * dh]]
            k_row = [int(v) for v in qkv[b, j, h + hh * dh:h + (hh + 1) * dh]]
            return onestep.score(q_row, k_row, i, j, int(record(ins[1])[b, j]), bool(desc.params[1]))
        if kind == prog.VT:
            qkv = record(ins[0])
            b, hh, d, t = (int(v) for v in np.unravel_index(e, dims))
            h = qkv.shape[-1] // 3
            return int(qkv[b, t, 2 * h + hh * (h // heads) + d])
        b, tok, cc = (int(v) for v in np.unravel_index(e, dims))
        hh, d = divmod(cc, n // heads)
        p_row = [int(v) for v in record(ins[0])[b, hh, tok]]
        return onestep.context(p_row, int(record(ins[1])[b, hh, tok]), [int(v) for v in record(ins[2])[b, hh, d]],
                               [int(v) for v in record(ins[3])[b]])
    if kind == prog.PROBS:
        z = row(ins[0], r)
        u = spec.EXP2_LUT_SIZE - 1 if z[c] == spec.MASKED_SCORE else min(max(z) - z[c], spec.EXP2_LUT_SIZE - 1)
        return onestep.prob(z, c, u, int(consts[0].flat[u]))
    if kind == prog.PROBSUM:
        return onestep.prob_sum(row(ins[0], e))
    if kind == prog.MEAN_POOL:
        return onestep.mean_pool(row(ins[0], e), row(ins[1], e // n))
    if kind == prog.ARGMAX:
        return int(np.argmax(row(ins[0], e)))
    if kind == prog.APPEND:
        return row(ins[0], r)[c] if c + 1 < n else row(ins[1], r)[0]
    if kind == prog.SELECT_LAST:
        t = record(ins[0]).shape[1]
        return row(ins[0], r * t + t - 1)[c]
    if kind == prog.QMM:
        bias = int(record(ins[2]).flat[c]) if len(ins) == 3 else None
        wr = qmm_w_row(dims, e, record(ins[1]).shape)
        return onestep.qmm(row(ins[0], r), row(ins[1], wr), desc.params[0], bias, desc.params[1])
    if kind == prog.EXP_ROWS:
        return int(consts[0].flat[onestep.exp_index(row(ins[0], r), c)])
    if kind == prog.LOSS_GRAD:
        return onestep.loss_grad(row(ins[0], r), c, int(record(ins[1]).flat[r]))
    if kind == prog.ROW_SUM:
        return sum(row(ins[0], e)) << desc.params[0]
    if kind == prog.RELU_MASK:
        return at(ins[0]) if at(ins[1]) > 0 else 0
    if kind == prog.MOMENT:
        return onestep.moment(at(ins[0]), at(ins[1]), *desc.params)
    if kind == prog.SECOND:
        return onestep.second(at(ins[0]), at(ins[1]), *desc.params)
    if kind == prog.WEIGHT:
        return onestep.weight(at(ins[0]), at(ins[1]), at(ins[2]), *desc.params)
    raise ValueError(f"record {desc.op!r} of kind {desc.kind} is judged by its digest, not element by element")


def recompute_llama(desc: prog.OpDesc, element: int, record: Callable[[int], np.ndarray],
                    consts: tuple[np.ndarray, ...], row: Callable[[int, int], list[int]],
                    at: Callable[[int], int]) -> int:
    """``recompute`` for a Llama-family record, as the LlamaReferee (and LlamaAttentionReferee)
    reads it: the same rows of its inputs (``row(i, r)``, ``at(i)``: the element's own value of
    input ``i``) and constants, by ``verify.onestep_llm``."""
    from veracity.exact import llm
    from veracity.verify import onestep_llm as one

    dims, kind, ins, e = desc.dims, desc.kind, desc.inputs, element
    n = dims[-1]
    r, c = divmod(e, n)

    if kind == prog.BLINEAR:
        big = consts[0].shape[0]
        per = dims[1] * dims[2] if big > llm.LOGIT_ROW else n
        t, ch = divmod(e, per)
        if ch >= big:
            return -(desc.params[1] + 1)
        m = [int(v) for v in consts[2][ch]] if len(consts) == 3 else None
        return one.block_linear(row(ins[0], t), [int(v) for v in consts[0][ch]], [int(v) for v in consts[1][ch]], m,
                                desc.params[0], desc.params[1])
    if kind == prog.QEMBED:
        token = int(record(ins[0]).flat[r])
        return one.qembed(int(consts[0][token, c]), int(consts[1][token, c // 32]))
    if kind == prog.WRMSNORM:
        return one.wrmsnorm(row(ins[0], r), c, int(consts[0][0, c]))
    if kind == prog.ROPE:
        x = row(ins[0], r)
        pos, col, first = desc.params[0] + r, (c % desc.params[1]) // 2, c - c % 2
        return one.rope(x[first], x[first + 1], int(consts[0][pos, col]), int(consts[1][pos, col]), c % 2 == 1)
    if kind == prog.KV_APPEND:
        old = record(ins[0]).shape[1]
        return row(ins[0], r)[c] if r < old else row(ins[1], r - old)[c]
    if kind == prog.GQA_SCORES:
        h, t, s = (int(v) for v in np.unravel_index(e, dims))
        heads, kv_heads = desc.params
        dim = record(ins[0]).shape[-1] // heads
        kvh = h // (heads // kv_heads)
        return one.gqa_score(row(ins[0], t)[h * dim:(h + 1) * dim], row(ins[1], s)[kvh * dim:(kvh + 1) * dim],
                             s + dims[1] <= dims[2] + t)
    if kind == prog.GQA_PROBS:
        z = row(ins[0], r)
        index = one.exp2_index(z, c)
        return one.gqa_prob(z, c, index, int(consts[0].flat[index]))
    if kind == prog.GQA_CONTEXT:
        heads, kv_heads = desc.params
        dim = n // heads
        h = c // dim
        t_len = record(ins[0]).shape[1]
        return one.gqa_context(row(ins[0], h * t_len + r), row(ins[1], h // (heads // kv_heads) * dim + c % dim))
    if kind == prog.RESID_ADD:
        return one.resid_add(at(ins[0]), at(ins[1]))
    if kind == prog.SILU_GATE:
        g = at(ins[0])
        return one.silu_gate(g, g + (1 << 15), int(consts[0].flat[g + (1 << 15)]), at(ins[1]))
    if kind == prog.ROW_MAX:
        rows = record(ins[0]).shape[1]
        return one.row_max(row(ins[0], r * rows + c // 2), c // 2, c % 2)
    if kind == prog.PICK:
        y = one.pick(row(ins[0], e))
        if len(ins) == 2 and at(ins[1]) in desc.params:
            y = at(ins[1])
        return y
    raise ValueError(f"record {desc.op!r} of kind {desc.kind} is not a Llama-family record")


def recompute_step(desc: prog.OpDesc, element: int, record: Callable[[int], np.ndarray],
                  consts: tuple[np.ndarray, ...], row: Callable[[int, int], list[int]]) -> int:
    """``recompute`` for a tiny-GPT or fine-tuning step's record, from the rows ``step_rows`` names
    (what the TrainNormReferee, TrainAttentionReferee and FinetuneReferee read), by
    ``verify.onestep_train``."""
    from veracity.verify import onestep_train as og

    dims, kind, ins, e = desc.dims, desc.kind, desc.inputs, element
    n = dims[-1]
    c = e % n
    which, rows, entry = step_rows(desc, e, lambda i: tuple(record(ins[i]).shape),
                                  lambda i, f: int(record(ins[i]).flat[f]))
    got = [row(ins[i], rr) for i, rr in zip(which, rows)]
    p = desc.params
    if kind == prog.RESCALE:
        return og.rescale(got[0][c], p[0])
    if kind == prog.SUM:
        return got[0][c] + got[1][c]
    if kind == prog.EMBED_SUM:
        return og.embed_sum(got[1], got[2], c, p[1])
    if kind == prog.LN_REC:
        return og.ln_rec(got[0], c, got[1], got[2])
    if kind == prog.XHAT:
        return og.xhat(got[0], c)
    if kind == prog.LN_BWD:
        return og.ln_bwd(got[0], got[1], got[2], c)
    if kind == prog.COL_DOT:
        return og.col_dot(got[0], got[1], p[0], p[1])
    if kind == prog.GELU_T:
        return og.gelu_t(got[0][c], entry, int(consts[0].flat[entry]))
    if kind == prog.GELU_GRAD:
        return og.gelu_grad(got[0][c], got[1][c], entry, int(consts[0].flat[entry]))
    if kind == prog.SCATTER_ADD:
        return og.scatter_add(got[0], got[1], e // n)
    if kind == prog.HEAD_SPLIT:
        return got[0][og.head_split_source(dims, e, p[1], p[0])[1]]
    if kind == prog.HEAD_MERGE:
        return got[0][og.head_merge_source(n, tuple(record(ins[0]).shape), e, p[0])[2]]
    if kind == prog.T_SCORES:
        i, j = divmod(e % (n * n), n)
        return og.t_score(got[0], got[1], i, j, p[0], p[1])
    if kind == prog.ROW_NORM:
        return og.row_norm(got[0], c, p[0])
    if kind == prog.SOFTMAX_BWD:
        return og.softmax_bwd(got[0], got[1], c, p[0])
    if kind == prog.SEG_MEAN:
        return og.seg_mean(got[0], got[1], e // n)
    if kind == prog.SEG_SPREAD:
        return og.seg_spread(got[0], got[1], e // n, c)
    if kind == prog.ROW_QSCALE:
        return og.row_qscale(got[0], c)
    if kind == prog.QSCALE_MUL:
        return og.qscale_mul(got[0][c], got[1])
    if kind == prog.QUANT_T:
        return og.quant_t(got[0], e // n)
    if kind == prog.QMM_INT8W:
        return og.qmm_int8w(got[0], got[1], p[0])
    if kind == prog.QMM_W2:
        return og.qmm(got[0], got[1] + got[2], p[0], None, 0)
    raise ValueError(f"record {desc.op!r} of kind {kind} is not a training step's record")
