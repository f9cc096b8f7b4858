"""A job's program: what each trace record is, fixed before anything runs.

The trace says *what values* a provider computed; the program says *what each record must be*:
its op kind, its step and name, its dtype and dims, which earlier records are its inputs, the
digests of the constants it reads (weights, requantization), and its parameters. The client
computes the program with a shape-only dry run (``ShapeBackend``: no arithmetic, milliseconds)
and posts its root and length with the order; providers recompute it before they bid and decline
an order whose program is not the one their model gives. So every record of a committed trace has
a descriptor both sides of a dispute agree on, and the referee knows, for the one element in
dispute, which op to recompute and where its inputs are proven.

Descriptor hash ``keccak256(abi_encode(desc))`` with ``desc`` the tuple ``(uint8 kind, uint256
step, string op, uint8 dtype, uint256[] dims, uint256[] inputs, bytes32[] consts, int256[]
params, uint256 output, uint256 outputs)`` (the struct ``OpDesc`` of ``contracts/tensors.vy``);
program root: the trace format's Merkle tree (``exact.trace.merkle_root``) over the descriptor
hashes, in record order. ``output`` numbers the job's output records (1 for the first, 0 for a
record that is not an output) and ``outputs`` is, on each of them, how many there are: so the
program fixes which records the committed output root (``trace.outputs_root``) must hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from veracity.errors import InputError
from veracity.exact.trace import CODE_DTYPES, DTYPE_CODES, merkle_root, tensor_digest


class OpKind(IntEnum):
    """A record's op kind, numbered as the contracts number it (``contracts/tensors.vy``)."""

    INPUT = 1
    LINEAR = 2
    ADD = 3
    RELU = 4
    GELU = 5
    SILU = 6
    LAYERNORM = 7
    RMSNORM = 8
    EMBEDDING = 9
    SCORES = 10
    PROBS = 11
    PROBSUM = 12
    CONTEXT = 13
    MEAN_POOL = 14
    L2_NORMALIZE = 15
    TRANSPOSE = 16  # layout: a tensor with its last two axes swapped
    VT = 17  # the heads' V transposed
    ARGMAX = 18  # generation: the next token
    APPEND = 19  # the ids grown by it
    SELECT_LAST = 20  # the last position
    STATE = 21  # a state tensor after an optimizer step (a program of state records only: none now; kept numbered)
    QMM = 22  # training (the digits MLP's step, every op a record; judged by TrainReferee)
    EXP_ROWS = 23
    LOSS_GRAD = 24
    ROW_SUM = 25
    RELU_MASK = 26
    MOMENT = 27
    SECOND = 28
    WEIGHT = 29
    QEMBED = 30  # the Llama family (``exact.llm``): a Q8_0 embedding row
    BLINEAR = 31  # a block-quantized linear (GGUF weights as stored)
    WRMSNORM = 32  # RMSNorm of the wide residual stream
    ROPE = 33
    KV_APPEND = 34
    GQA_SCORES = 35
    GQA_PROBS = 36
    GQA_CONTEXT = 37
    RESID_ADD = 38
    SILU_GATE = 39
    ROW_MAX = 40  # generation over a wide vocabulary: each logits row's maximum, then the pick
    PICK = 41
    STEP = 42  # a coarse record (``exact.levels``): a dispute goes on inside its step's op-level trace
    RESCALE = 43  # training the tiny GPT (``training.gpt.gpt_step``): round_shift(x, 1, shift)
    SUM = 44  # an unclipped residual add
    EMBED_SUM = 45  # token and position embedding rows from the state's tables
    LN_REC = 46  # LayerNorm with gamma and beta read from records
    XHAT = 47  # LayerNorm's normalized input
    LN_BWD = 48  # LayerNorm's backward
    COL_DOT = 49  # a gain's gradient: a dot product over the tokens
    HEAD_SPLIT = 50  # layout: one part's heads [B*H, T, d] of a [B*T, parts*H*d] tensor
    HEAD_MERGE = 51  # layout: heads back into rows of tokens
    T_SCORES = 52  # causal attention scores, scaled
    ROW_NORM = 53  # each row over its sum (the attention probabilities)
    SOFTMAX_BWD = 54  # the attention softmax's backward, scaled
    GELU_T = 55  # GELU of a training activation through the int16 table
    GELU_GRAD = 56  # GELU's slope times the gradient
    SCATTER_ADD = 57  # an embedding table's gradient: rows summed by the index each token names
    SEG_MEAN = 58  # fine-tuning MiniLM (``training.lora.lora_step``): the mean over each sentence's tokens
    SEG_SPREAD = 59  # the mean's backward: each sentence's gradient over its count, on each of its tokens
    ROW_QSCALE = 60  # each row's int8 quantization scale (rescaled max, shift)
    QSCALE_MUL = 61  # rows times a scale record's rows: (x * max) << shift
    QUANT_T = 62  # each row's int8 values, transposed
    QMM_INT8W = 63  # a GEMM whose second operand is int8 values already (quantized per row of x only)
    QMM_W2 = 64  # a GEMM whose second operand's rows are stored in two halves ([N, 2, K/2]: rows past a chunk)


# the kinds by name, as the rest of the code reads them (``prog.LINEAR``)
(INPUT, LINEAR, ADD, RELU, GELU, SILU, LAYERNORM, RMSNORM, EMBEDDING, SCORES, PROBS, PROBSUM, CONTEXT, MEAN_POOL,
 L2_NORMALIZE, TRANSPOSE, VT, ARGMAX, APPEND, SELECT_LAST, STATE, QMM, EXP_ROWS, LOSS_GRAD, ROW_SUM, RELU_MASK,
 MOMENT, SECOND, WEIGHT, QEMBED, BLINEAR, WRMSNORM, ROPE, KV_APPEND, GQA_SCORES, GQA_PROBS, GQA_CONTEXT, RESID_ADD,
 SILU_GATE, ROW_MAX, PICK, STEP, RESCALE, SUM, EMBED_SUM, LN_REC, XHAT, LN_BWD, COL_DOT, HEAD_SPLIT, HEAD_MERGE,
 T_SCORES, ROW_NORM, SOFTMAX_BWD, GELU_T, GELU_GRAD, SCATTER_ADD, SEG_MEAN, SEG_SPREAD, ROW_QSCALE, QSCALE_MUL, QUANT_T,
 QMM_INT8W, QMM_W2) = tuple(OpKind)
KIND_NAMES = {k: k.name.lower() for k in OpKind}
NO_INPUT = 2**256 - 1  # an input that is not a whole earlier record (a view, a slice, a constant)
DESC_ABI = "(uint8,uint256,string,uint8,uint256[],uint256[],bytes32[],int256[],uint256,uint256)"


@dataclass(frozen=True)
class OpDesc:
    kind: int
    step: int
    op: str
    dtype: int  # trace.DTYPE_CODES
    dims: tuple[int, ...]
    inputs: tuple[int, ...] = ()  # record indices (NO_INPUT where the input is not a record)
    consts: tuple[bytes, ...] = ()  # digests of constant tensors
    params: tuple[int, ...] = ()
    output: int = 0  # 1 + this record's place among the job's outputs; 0: not an output
    outputs: int = 0  # on an output record: how many outputs the job has

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.kind, self.step, self.op, self.dtype, list(self.dims), list(self.inputs),
                list(self.consts), list(self.params), self.output, self.outputs)

    def hash(self) -> bytes:
        from eth_utils import keccak

        return keccak(encode_desc(self))


def _word(v: int) -> bytes:
    return (v % (1 << 256)).to_bytes(32, "big")


def encode_desc(d: OpDesc) -> bytes:
    """``abi_encode(desc)`` of the contracts' ``OpDesc`` (``eth_abi.encode([DESC_ABI], [d.as_tuple()])``,
    written out: a program of 20,000 records hashes ten times faster). A dynamic tuple: its
    offset, the heads (static fields in place, dynamic ones as offsets into the tuple), the tails."""
    op = d.op.encode()
    tails = [_word(len(op)) + op + bytes(-len(op) % 32),
             *(_word(len(xs)) + b"".join(_word(int(v)) for v in xs) for xs in (d.dims, d.inputs, d.params)),
             _word(len(d.consts)) + b"".join(bytes(c) for c in d.consts)]
    dims, inputs, params, consts = tails[1], tails[2], tails[3], tails[4]
    tails = [tails[0], dims, inputs, consts, params]  # in field order: op, dims, inputs, consts, params
    at, offsets = 10 * 32, []
    for t in tails:
        offsets.append(at)
        at += len(t)
    heads = [_word(d.kind), _word(d.step), _word(offsets[0]), _word(d.dtype), _word(offsets[1]), _word(offsets[2]),
             _word(offsets[3]), _word(offsets[4]), _word(d.output), _word(d.outputs)]
    return _word(32) + b"".join(heads) + b"".join(tails)


def program_root(program: list[OpDesc]) -> bytes:
    return merkle_root([d.hash() for d in program])


def mark_outputs(program: list[OpDesc], indices: list[int]) -> list[OpDesc]:
    """The program with records ``indices`` (in output order) marked as the job's outputs."""
    from dataclasses import replace

    out = list(program)
    for j, i in enumerate(indices):
        if out[i].output:
            raise AssertionError(f"record {i} ({out[i].op}) is named as an output twice")
        out[i] = replace(out[i], output=j + 1, outputs=len(indices))
    return out


def output_records(program: list[OpDesc]) -> list[int]:
    """The indices of a program's output records, in output order."""
    marked = sorted((d.output, i) for i, d in enumerate(program) if d.output)
    return [i for _, i in marked]


# constants, as the referee reads them: each a tensor named by its digest -------------------------
_CONSTS: dict[tuple[str, int], tuple[Any, tuple[bytes, ...]]] = {}


def linear_tensors(lin: Any) -> tuple[np.ndarray, ...]:
    """A linear's constants: the int8 weights [N, K]; per output channel (mult, shift, bias) as
    int32 [N, 3]; and, for a smoothed linear, the per-input-channel multipliers as int32 [1, K]."""
    w = np.asarray(lin.weight, dtype=np.int8)
    req = np.stack([lin.mult, lin.shift, lin.bias], axis=1).astype(np.int32)
    if lin.smooth is None:
        return w, req
    return w, req, np.asarray(lin.smooth, dtype=np.int32)[None, :]


def norm_tensors(norm: Any) -> tuple[np.ndarray, ...]:
    """A norm's constants: per channel (gamma, beta) as int32 [H, 2]."""
    return (np.stack([norm.gamma, norm.beta], axis=1).astype(np.int32),)


def table_tensors(table: np.ndarray) -> tuple[np.ndarray, ...]:
    """An embedding table as int32 [V, H]."""
    return (np.asarray(table, dtype=np.int32),)


def lut_tensors(lut: np.ndarray) -> tuple[np.ndarray, ...]:
    """A 65536-entry int16 table as [256, 256] (entry i: row i // 256, column i % 256), or the
    exp2 table as uint8 [1, 1024]."""
    if lut.size == 1 << 16:
        return (np.asarray(lut, dtype=np.int16).reshape(256, 256),)
    return (np.asarray(lut, dtype=np.uint8)[None, :],)


def _digests(kind: str, obj: Any, tensors: Any) -> tuple[bytes, ...]:
    hit = _CONSTS.get((kind, id(obj)))
    if hit is None or hit[0] is not obj:
        hit = (obj, tuple(tensor_digest(t) for t in tensors(obj)))
        _CONSTS[(kind, id(obj))] = hit
    return hit[1]


def block_consts(w: Any) -> tuple[bytes, ...]:
    """A block-quantized matrix's constants (``llm.BlockWeights.tensors``)."""
    return _digests("block", w, lambda o: o.tensors())


def row_tensors(v: np.ndarray) -> tuple[np.ndarray, ...]:
    """A per-channel vector (a norm's gain) as int32 [1, H]."""
    return (np.asarray(v, dtype=np.int32)[None, :],)


def row_consts(v: np.ndarray) -> tuple[bytes, ...]:
    return _digests("row", v, row_tensors)


def tables_tensors(tables: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Tables (RoPE's cos and sin [P, D/2]; the 16-bit exp2 table as [rows, 1024]) as int32."""
    return tuple(np.asarray(t, dtype=np.int32).reshape(-1, 1024) if t.ndim == 1 else np.asarray(t, dtype=np.int32)
                 for t in tables)


def tables_consts(tables: tuple[np.ndarray, ...]) -> tuple[bytes, ...]:
    return _digests("tables", tables, tables_tensors)


def linear_consts(lin: Any) -> tuple[bytes, ...]:
    return _digests("linear", lin, linear_tensors)


def norm_consts(norm: Any) -> tuple[bytes, ...]:
    return _digests("norm", norm, norm_tensors)


def table_consts(table: np.ndarray) -> tuple[bytes, ...]:
    return _digests("table", table, table_tensors)


def lut_consts(lut: np.ndarray) -> tuple[bytes, ...]:
    return _digests("lut", lut, lut_tensors)


_MODEL_CONSTS: dict[int, tuple[Any, dict[bytes, np.ndarray]]] = {}


def model_constants(model: Any) -> dict[bytes, np.ndarray]:
    """Every constant tensor a model's records may name, by digest (weights, norms, tables, LUTs);
    built once per model object."""
    hit = _MODEL_CONSTS.get(id(model))
    if hit is None or hit[0] is not model:
        hit = (model, _collect_constants(model))
        _MODEL_CONSTS[id(model)] = hit
    return hit[1]


def _collect_constants(model: Any) -> dict[bytes, np.ndarray]:
    from veracity.exact import spec
    from veracity.exact.spec import QLinear, QNorm

    found: dict[bytes, np.ndarray] = {}
    seen: set[int] = set()

    def add(digests: tuple[bytes, ...], tensors: tuple[np.ndarray, ...]) -> None:
        found.update(zip(digests, tensors))

    def walk(x: Any, depth: int) -> None:
        if id(x) in seen or depth > 4:
            return
        seen.add(id(x))
        if isinstance(x, QLinear):
            add(linear_consts(x), linear_tensors(x))
        elif isinstance(x, QNorm):
            add(norm_consts(x), norm_tensors(x))
        elif isinstance(x, np.ndarray):
            if x.ndim == 2 and x.dtype.kind == "i":
                add(table_consts(x), table_tensors(x))
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v, depth + 1)
        elif hasattr(x, "__dict__") and not isinstance(x, type):
            for v in vars(x).values():
                walk(v, depth + 1)

    extra = getattr(model, "exact_constants", None)
    if extra is not None:  # a model whose constants are not QLinear/QNorm/tables names them itself
        found.update(extra())
    else:
        walk(model, 0)
    for lut in (spec.gelu_lut(), spec.silu_lut(), spec.exp2_lut()):
        add(lut_consts(lut), lut_tensors(lut))
    return found


def constants(model: Any, desc: OpDesc, table: dict[bytes, np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """The constant tensors a descriptor names by digest, from the model's own weights."""
    have = table if table is not None else model_constants(model)
    missing = [d for d in desc.consts if d not in have]
    if missing:
        raise LookupError(f"the model has no constant with digest {missing[0].hex()[:16]} (record {desc.op!r})")
    return tuple(have[d] for d in desc.consts)


def dtype_code(dtype: np.dtype) -> int:
    return DTYPE_CODES[np.dtype(dtype)]


class ProgramTooLarge(InputError):
    """A job's program has more records than a caller is ready to build (``planner.MAX_PROGRAM_RECORDS``)."""


MAX_ROW, CHUNK_MAX, MAX_LINKS = 2080, 8320, 1024  # the contracts' bounds (OneStep, tensors.vy)
MAX_OUTPUTS = 1024  # output records a result commits on chain (Market.MAX_OUTPUTS)


def check_descriptors(program: list[OpDesc]) -> None:
    """Refuse descriptors larger than the contracts decode (``OpDesc`` in ``tensors.vy``): a record
    whose descriptor cannot be shown can never be opened in a dispute."""
    for d in program:
        if (len(d.dims) > 4 or len(d.inputs) > 4 or len(d.consts) > 3 or len(d.params) > 2
                or len(d.op.encode()) > 64):
            raise InputError(f"record {d.op} has a descriptor larger than a dispute reads (at most 4 dims, "
                             "4 inputs, 3 constants, 2 parameters and a 64-byte name)")


def check_disputable(program: list[OpDesc]) -> None:
    """Refuse a program a dispute could not judge: descriptors larger than the contracts decode,
    rows longer than the referees read, an input further back than the chain links a judgement
    may show, or outputs that a commitment cannot hold (none: no committed digest could be proven
    against a record; more than ``MAX_OUTPUTS``)."""
    check_descriptors(program)
    for i, d in enumerate(program):
        width = d.dims[-1] if d.dims else 1
        most = min(MAX_ROW, CHUNK_MAX // CODE_DTYPES[d.dtype].itemsize)
        if width > most:
            raise InputError(f"record {d.op} has rows of {width} values; disputes read rows of at most {most}")
        far = [j for j in d.inputs if j != NO_INPUT and i - 1 - j > MAX_LINKS]
        if far:
            raise InputError(f"record {d.op} reads record {far[0]}, more than {MAX_LINKS} records back; "
                             "split the job into smaller batches")
    outputs = max((d.outputs for d in program), default=0)
    if outputs == 0:  # its committed output digests could be proven against no record
        raise InputError("the job's program names no output records, so its result could not be checked")
    if outputs > MAX_OUTPUTS:
        raise InputError(f"the job has {outputs} output records; a result commits at most {MAX_OUTPUTS} "
                         "(split it into smaller jobs, or generate fewer tokens)")
