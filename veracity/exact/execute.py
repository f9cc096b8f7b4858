"""The op interface models are written against: a backend plus an optional trace.

Each method runs one exact op on the backend and records the output's digest under the current
step, so a model's code is the same for the torch and NumPy backends, traced or not.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from veracity.exact import program as prog
from veracity.exact import spec
from veracity.exact.spec import I16_MAX, QLinear, QNorm
from veracity.exact.trace import Trace, fast_digest, grown_digests, tensor_digest

I32, I16, U8, I64 = np.dtype(np.int32), np.dtype(np.int16), np.dtype(np.uint8), np.dtype(np.int64)
NOT_GROWN = -2  # a record that does not grow another by appended rows (``Exec._hash_due``)
HASH_BATCH = 512  # a coarse run's exported records hashed together (``Exec._hash_due``): ~8 decoded tokens'
_first, _second = itemgetter(0), itemgetter(1)


def _flush(ex: "Exec") -> Callable[[], None]:
    """What hashes ``ex``'s exported records before its trace is read (``Trace.before_read``),
    while ``ex`` lives (it does it itself when it dies): the trace does not keep it alive."""
    ref = weakref.ref(ex)

    def flush() -> None:
        live = ref()
        if live is not None and live._due:
            live._hash_due()
    return flush


class StepIO(NamedTuple):
    """What a step shares with the others, where the model knows it (``Exec.step``): the ops (their
    names inside the step's scopes: ``"k_cache"``) whose records a later step may read, and those
    that may read a record of an earlier step."""

    exports: frozenset[str]
    reads: frozenset[str]


NO_IO = StepIO(frozenset(), frozenset())

BACKENDS = ("torch", "torch-eager", "numpy")


def make_backend(name: str, device: str = "cpu") -> Any:
    """'torch' (fast: fused C kernels on CPU when a C compiler is present, else eager torch),
    'torch-eager' (plain torch ops, CPU or GPU) or 'numpy' (the int64 reference)."""
    if name == "torch" and device == "cpu":
        from veracity.exact import ops_native

        if ops_native.available():
            return ops_native.NativeBackend()
    if name in ("torch", "torch-eager"):
        from veracity.exact.ops_torch import TorchBackend

        return TorchBackend(device)
    if name == "numpy":
        from veracity.exact.ops_numpy import NumpyBackend

        return NumpyBackend()
    from veracity.errors import UsageError

    raise UsageError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")


class Exec:
    """Runs exact ops on ``backend``, recording each output in ``trace`` (when given) and, when
    ``program`` is a list, each op's descriptor (``exact.program``) in it.

    ``coarse``: the trace holds only the coarse records (``exact.levels``): a record is exported when
    an op of a later step first reads it, or when it is a job output, and hashed with the others
    exported by then at the end of a step once there are ``HASH_BATCH``, or before the trace is
    read; the rest cost nothing. Each record is noted as it is made (so a later read finds it),
    and each op's inputs looked up among the noted records of earlier steps, unless its step
    names the ops that share records with other steps (``step``'s ``io``): then only those."""

    def __init__(self, backend: Any, trace: Trace | None = None,
                 tamper: Callable[[int, str, Any], Any] | None = None,
                 program: list[prog.OpDesc] | None = None, coarse: bool = False) -> None:
        self.b = backend
        self.trace = trace
        self.coarse = coarse
        # coarse: id(tensor) -> (record index, step, name, dtype, weak reference, the record it grows), while it lives
        self._live: dict[int, tuple[int, int, str, np.dtype, Any, int]] = {}
        self._due: list[tuple[tuple[int, int, str, np.dtype, Any, int], Any]] = []  # (entry, tensor): exported
        # (its entry gone from ``_live``), not hashed yet
        self._io = NO_IO  # the current step's ``io``, in a coarse run
        self._io_ops: frozenset[str] = frozenset()  # its exports and reads
        # its ops among them so far: (op, record, inputs, the record it grows, dtype, prefix, index), seen to
        # at the step's end (``_settle_io``)
        self._io_log: list[tuple[str, Any, tuple[Any, ...], Any, np.dtype, str, int]] = []
        self._grown: dict[int, Any] = {}  # a hashed KV cache's growth (``trace.Growth``, or its backend's)
        # adversaries and dispute replays set this: (op index, op name, output) -> output
        self.tamper = tamper
        self.program = program
        self._where: dict[int, tuple[int, Any]] = {}  # id(tensor) -> (record index, tensor)
        self.outputs: list[int] = []  # the records that are the job's outputs (with ``program``)
        self.ops = 0
        self._last: tuple[Any, int] | None = None  # the latest record's tensor and index
        self.step_index = -1
        self._prefix = ""
        if trace is not None and coarse:
            trace.before_read(_flush(self))

    def __del__(self) -> None:
        if getattr(self, "_due", None):  # exported records not hashed yet: into the trace, which lives on
            self._hash_due()

    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Op names inside are prefixed with ``name`` (a block of a decoded token's pass), within
        the current step."""
        before = self._prefix
        self._prefix = name + "."
        try:
            yield
        finally:
            self._prefix = before

    @contextmanager
    def step(self, name: str, io: StepIO | None = None) -> Iterator[None]:
        """One trace step (a layer call); op names inside are prefixed with ``name``. ``io``: the ops
        whose records a later step may read and those that may read an earlier step's, where the
        model knows them (a decoded token's pass: ``models.llama.PASS_IO``); a coarse run then
        notes only the first and looks up only the second's inputs (``_rec``), and the step's
        other ops cost it nothing. A record a later step read that its step did not export would
        be missing from the coarse trace: the model tests compare it with the program's coarse
        records (``exact.levels``)."""
        self.step_index += 1
        self._prefix = name + "."
        if io is not None and self.coarse and self.trace is not None:
            self._io, self._io_ops = io, io.exports | io.reads
            if self.tamper is None and self.program is None:
                self._rec = self._rec_io  # type: ignore[method-assign]  # this step's ops: ``_rec``'s lean twin
        if len(self._live) > 4096:  # forget the records that died
            self._live = {k: v for k, v in self._live.items() if v[4]() is not None}
        try:
            yield
        finally:
            self._prefix = ""
            self.__dict__.pop("_rec", None)
            if self._io_log:
                self._settle_io()
            self._io, self._io_ops = NO_IO, frozenset()
            if len(self._due) >= HASH_BATCH:
                self._hash_due()

    def _rec(self, op: str, x: Any, dtype: np.dtype, kind: int = 0, inputs: tuple[Any, ...] = (),
             consts: Callable[[], tuple[bytes, ...]] | None = None, params: tuple[int, ...] = (),
             grows: Any = None) -> Any:
        if self.tamper is not None:
            x = self.tamper(self.ops, self._prefix + op, x)
        if self.program is not None:
            self._describe(op, x, dtype, kind, inputs, consts() if consts else (), params)
        self._last = (x, self.ops)
        self.ops += 1
        if self.trace is not None:
            if self._io is not NO_IO:  # a coarse step naming its io: its other ops cost nothing
                if op in self._io_ops:
                    self._io_log.append((op, x, inputs, grows, dtype, self._prefix, self.ops - 1))
            elif not self.coarse:
                self._record(self.ops - 1, self._prefix + op, x, dtype)
            else:
                g = NOT_GROWN if grows is None else self._index_of(grows)  # (before its entry goes)
                self._read(inputs)
                self._note(x, self.ops - 1, self._prefix + op, dtype, g)
        return x

    def _rec_io(self, op: str, x: Any, dtype: np.dtype, kind: int = 0, inputs: tuple[Any, ...] = (),
                consts: Callable[[], tuple[bytes, ...]] | None = None, params: tuple[int, ...] = (),
                grows: Any = None) -> Any:
        """``_rec`` in a coarse step naming its ``io``, with no ``tamper`` and no ``program`` (``step``
        makes it the step's ``_rec``): the same, in fewer steps."""
        self._last = (x, self.ops)
        self.ops += 1
        if op in self._io_ops:
            self._io_log.append((op, x, inputs, grows, dtype, self._prefix, self.ops - 1))
        return x

    def _read(self, inputs: tuple[Any, ...]) -> None:
        """Export each of ``inputs`` that is a noted record of an earlier step (``_export``)."""
        live, step = self._live, self.step_index
        for t in inputs:
            hit = live.get(id(t))
            # an entry of this step is the input's own (a live tensor's id is its own) or a dead
            # record's, when the input is no record: neither is exported by this step
            if hit is not None and hit[1] < step and hit[4]() is t:
                del live[id(t)]
                self._due.append((hit, t))

    def _record(self, index: int, name: str, x: Any, dtype: np.dtype) -> None:
        """Hash record ``index`` (a trace of every op: its large records on the trace's thread)."""
        assert self.trace is not None
        b = self.b
        self.trace.record(self.step_index, name, lambda: b.canonical(x, dtype), int(np.prod(x.shape)) * dtype.itemsize,
                          index)

    def _index_of(self, t: Any) -> int:
        """The record ``t`` is (a coarse run's live records), or -1."""
        hit = self._live.get(id(t))
        return hit[0] if hit is not None and hit[4]() is t else -1

    def _note(self, x: Any, index: int, name: str, dtype: np.dtype, grows: int) -> None:
        """A coarse run's bookkeeping of record ``x`` (``_rec``: unless its step's ``io`` does not
        export its op, ``_settle_io``; ``grows``: the index of the record it grows): noted weakly,
        so a dead tensor's entry is never matched (and is dropped at a step's start once there are
        many)."""
        try:
            ref: Any = weakref.ref(x)
        except TypeError:  # not weakly referable: kept alive instead
            ref = (lambda x=x: x)
        self._live[id(x)] = (index, self.step_index, name, dtype, ref, grows)

    def _settle_io(self) -> None:
        """What ``_rec`` and ``_note`` do for each op of the step's ``io`` so far, in order, together
        (away from the ops, as ``_hash_due`` is): the earlier steps' records read are exported, the
        records exported noted. ``_io_log`` holds what they read, so the records live till then."""
        log, self._io_log = self._io_log, []
        exports, reads = self._io
        made = []
        for op, x, inputs, grows, dtype, prefix, index in log:
            g = NOT_GROWN if grows is None else self._index_of(grows)  # (before its entry goes)
            if op in reads:
                self._read(inputs)
            if op in exports:
                made.append((x, index, prefix + op, dtype, g))
        if made:
            self._note_all(made)

    def _note_all(self, made: list[tuple[Any, int, str, np.dtype, int]]) -> None:
        """``_note`` of each (record, index, name, dtype, the record it grows), of this step."""
        xs, indices, names, dtypes, grows = zip(*made)
        try:
            refs = list(map(weakref.ref, xs))
        except TypeError:  # one not weakly referable
            for entry in made:
                self._note(*entry)
            return
        self._live.update(zip(map(id, xs), zip(indices, repeat(self.step_index), names, dtypes, refs, grows)))

    def _export(self, t: Any) -> None:
        """Hash record ``t`` once, if it is a live record (a coarse record is one a later step reads,
        which ``_read`` exports as this does, or an output): its entry goes into ``_due``, hashed
        later (``_hash_due``)."""
        hit = self._live.get(id(t))
        if hit is not None and hit[4]() is t:
            del self._live[id(t)]
            self._due.append((hit, t))

    def _hash_due(self) -> None:
        """Hash the records exported since the last call, inline: a coarse trace's few records are
        cheaper to hash than a hashing thread is to run beside the compute threads
        (``bench/exact_vs_native.py``); several steps' together, away from the ops: between them
        the same Python took twice as long, and at each step's end, its code and data gone from
        the caches by then, 0.3 to 0.4 ms a decoded token more than in batches (``bench/llm.py``).
        They are hashed by
        ``fast_digest``, or those of one shape held as int64 NumPy arrays together by the backend's
        ``grown_digests`` where it has one (the native backend's: decoded tokens); records that
        grow an earlier one by appended rows (KV caches: ``grows``, that record's index, -1 for the
        first) by ``grown_digests`` (``trace``'s without the backend's), a step's at a time, each
        going on from the one it grew from (``_hash_grown``)."""
        assert self.trace is not None
        due, self._due = self._due, []
        grown: dict[int, list[tuple[Any, Any]]] = {}  # by step
        shaped: dict[tuple[tuple[int, ...], np.dtype], list[tuple[Any, Any]]] = {}
        together = hasattr(self.b, "grown_digests")
        for hit, x in due:
            if hit[5] != NOT_GROWN:
                grown.setdefault(hit[1], []).append((hit, x))
            elif together and type(x) is np.ndarray and x.dtype == I64 and x.flags.c_contiguous:
                shaped.setdefault((x.shape, hit[3]), []).append((hit, x))
            else:
                self.trace.add(hit[1], hit[2], fast_digest(self._array(x, hit[3]), hit[3]), hit[0])
        for alike in shaped.values():
            self._hash_grown(alike, keep=False)
        for records in grown.values():
            self._hash_grown(records)

    def _hash_grown(self, due: list[tuple[tuple[int, int, str, np.dtype, Any, int], Any]], keep: bool = True) -> None:
        """Hash records by the backend's ``grown_digests`` (``trace``'s without one): each going on
        from the growth of the record it grew from, if one was kept, and keeping its own (its
        whole chunks' Merkle peaks and its open chunk's hash) with ``keep``, so the one grown from
        it next hashes only the rows after them."""
        assert self.trace is not None
        hits, xs = zip(*due)
        indices, steps, names, dtypes, _, grows = zip(*hits)
        prior = list(map(self._grown.pop, grows, repeat(None)))
        if self.tamper is not None:  # a cheat may have altered the rows a cache kept
            prior = [None] * len(due)
        arrays = list(xs) if all(map(isinstance, xs, repeat(np.ndarray))) else list(map(self._array, xs, dtypes))
        got = getattr(self.b, "grown_digests", grown_digests)(arrays, list(dtypes), prior)
        if keep:
            self._grown.update(zip(indices, map(_second, got)))
        self.trace.add_all(zip(indices, steps, names, map(_first, got)))

    def _array(self, x: Any, dtype: np.dtype) -> np.ndarray:
        """Record ``x`` as a NumPy array to hash as ``dtype`` (a Llama-family record is one already)."""
        return x if isinstance(x, np.ndarray) else self.b.canonical(x, dtype)

    def _describe(self, op: str, x: Any, dtype: np.dtype, kind: int, inputs: tuple[Any, ...],
                  consts: tuple[bytes, ...], params: tuple[int, ...]) -> None:
        assert self.program is not None
        seen = self._record_of(x)
        if seen is not None:
            raise AssertionError(f"op {self._prefix + op} returned the tensor of record {seen}: "
                                 "each record must be a new tensor, or its readers would name the wrong one")
        refs = tuple(prog.NO_INPUT if (i := self._record_of(t)) is None else i for t in inputs)
        self.program.append(prog.OpDesc(kind, self.step_index, self._prefix + op, prog.dtype_code(dtype),
                                        tuple(x.shape), refs, consts, params))
        self._where[id(x)] = (self.ops, x)

    def _record_of(self, x: Any) -> int | None:
        """The record ``x`` is (in a program run), or None for a view, a slice or a constant."""
        hit = self._where.get(id(x))
        return hit[0] if hit is not None and hit[1] is x else None

    def input(self, op: str, a: np.ndarray, dtype: np.dtype = I32, index: bool = False) -> Any:
        """A job input (pixels, token ids, a mask, positions) as a trace record, so later ops read
        it as they read any record; its descriptor carries the digest the client computed from the
        inputs it posted. ``index``: the tensor indexes a table (token ids)."""
        arr = np.asarray(a)
        return self._rec(op, self.b.index(arr) if index else self.b.tensor(arr), dtype, prog.INPUT,
                         consts=lambda: (tensor_digest(arr.astype(dtype)),))

    def tensor(self, a: np.ndarray) -> Any:
        return self.b.tensor(a)

    def constant(self, a: np.ndarray) -> Any:
        """A model constant on the backend, converted once per backend (weights, tables)."""
        return self.b.constant(a)

    def index(self, a: np.ndarray) -> Any:
        return self.b.index(a)

    def output(self, x: Any) -> np.ndarray:
        """A job output: its integers. ``x`` must be the latest record; its index is noted in
        ``outputs`` (the program marks those records, and the committed output root is over
        their digests, ``trace.outputs_root``)."""
        if self._last is None or self._last[0] is not x:
            raise AssertionError("a job output must be the record just made")
        self.outputs.append(self._last[1])
        if self.coarse and self.trace is not None:
            if self._io_log:
                self._settle_io()
            if self._index_of(x) < 0:
                raise AssertionError("a job output must be noted: its op among its step's io exports")
            self._export(x)
        return self.to_numpy(x)

    def to_numpy(self, x: Any, dtype: np.dtype = I32) -> np.ndarray:
        return np.asarray(self.b.canonical(x, dtype)).astype(np.int64)

    def linear(self, op: str, x: Any, lin: QLinear) -> Any:
        return self._rec(op, self.b.linear(x, lin), I16 if lin.out_max <= I16_MAX else I32, prog.LINEAR, (x,),
                         lambda: prog.linear_consts(lin), (lin.out_max,))

    def add(self, op: str, a: Any, b: Any) -> Any:
        return self._rec(op, self.b.add(a, b), I32, prog.ADD, (a, b))

    def relu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.relu(x), I32, prog.RELU, (x,))

    def gelu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.gelu(x), I16, prog.GELU, (x,), lambda: prog.lut_consts(spec.gelu_lut()))

    def silu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.silu(x), I16, prog.SILU, (x,), lambda: prog.lut_consts(spec.silu_lut()))

    def rmsnorm(self, op: str, x: Any, norm: QNorm) -> Any:
        return self._rec(op, self.b.rmsnorm(x, norm), I32, prog.RMSNORM, (x,), lambda: prog.norm_consts(norm))

    def layernorm(self, op: str, x: Any, norm: QNorm) -> Any:
        return self._rec(op, self.b.layernorm(x, norm), I32, prog.LAYERNORM, (x,), lambda: prog.norm_consts(norm))

    def embedding(self, op: str, table: np.ndarray, ids: Any) -> Any:
        """Rows of ``table`` (a model constant, as a NumPy array) at ``ids`` (an index record)."""
        return self._rec(op, self.b.embedding(self.b.constant(table), ids), I32, prog.EMBEDDING, (ids,),
                         lambda: prog.table_consts(table))

    def attention(self, op: str, qkv: Any, key_valid: Any, heads: int, causal: bool) -> Any:
        """Multi-head attention from the fused projection ``qkv`` ([B, T, 3H]: q, k, v side by
        side) and the key mask record: scores, softmax, V transposed per head, and the context
        with the heads merged back ([B, T, H]). Each is a record whose inputs are whole records,
        so a dispute can judge any element of any of them."""
        b = self.b
        h = qkv.shape[-1] // 3
        qh, kh, vh = (b.split_heads(qkv[..., j * h:(j + 1) * h], heads) for j in range(3))
        z, p, psum = b.scores_softmax(qh, kh, key_valid, causal)
        z = self._rec(op + ".scores", z, I16, prog.SCORES, (qkv, key_valid), params=(heads, int(causal)))
        p = self._rec(op + ".probs", p, U8, prog.PROBS, (z,), lambda: prog.lut_consts(spec.exp2_lut()))
        psum = self._rec(op + ".probsum", psum, I32, prog.PROBSUM, (p,))
        vt = self._rec(op + ".vt", b.transpose_last(vh), I32, prog.VT, (qkv,), params=(heads,))
        ctx = b.merge_heads(b.attention_context(p, psum, vh, key_valid))
        return self._rec(op + ".context", ctx, I32, prog.CONTEXT, (p, psum, vt, key_valid), params=(heads,))

    def argmax(self, op: str, x: Any) -> Any:
        """The index of each row's largest value (ties: the lowest index): [..., V] -> [...]."""
        return self._rec(op, self.b.argmax(x), I32, prog.ARGMAX, (x,))

    def append(self, op: str, tokens: Any, token: Any) -> Any:
        """Token ids [B, T] with one more column [B, 1] appended (a generated token)."""
        return self._rec(op, self.b.append(tokens, token), I32, prog.APPEND, (tokens, token))

    def last_row(self, op: str, x: Any) -> Any:
        """x[:, -1:, :], the last position of each sequence, as a record."""
        return self._rec(op, x[:, -1:, :], I32, prog.SELECT_LAST, (x,))

    def mean_pool(self, op: str, h: Any, mask: Any) -> Any:
        ht = self._rec(op + ".ht", self.b.transpose_last(h), I32, prog.TRANSPOSE, (h,))
        return self._rec(op, self.b.mean_pool(h, mask), I32, prog.MEAN_POOL, (ht, mask))

    def l2_normalize(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.l2_normalize(x), I32, prog.L2_NORMALIZE, (x,))

    # the Llama family (``exact.llm``) --------------------------------------------------------------
    def qembed(self, op: str, w: Any, ids: Any) -> Any:
        """Rows of a Q8_0 table (``llm.BlockWeights``) at ``ids`` (an index record) [1, T, H]."""
        return self._rec(op, self.b.qembed(w, ids), I32, prog.QEMBED, (ids,), lambda: prog.block_consts(w))

    def block_linear(self, op: str, x: Any, w: Any, frac_out: int = spec.ACT_FRAC,
                     out_max: int = spec.ACT_MAX) -> Any:
        """x [1, T, K] times a block-quantized matrix [N, K] (``exact.blockq``) -> [1, T, N] (or, wider
        than ``llm.LOGIT_ROW``, [T, rows, LOGIT_ROW])."""
        return self._blinear(op, self.b.block_linear(x, w, frac_out, out_max), x, w, frac_out, out_max)

    def _blinear(self, op: str, y: Any, x: Any, w: Any, frac_out: int, out_max: int) -> Any:
        return self._rec(op, y, I16 if out_max <= I16_MAX else I32, prog.BLINEAR, (x,), partial(prog.block_consts, w),
                         (frac_out, out_max))

    def block_linears(self, ops: tuple[str, ...], x: Any, ws: tuple[Any, ...]) -> list[Any]:
        """Several block linears of one input (attention's q, k and v), each its own record, in
        order: a backend may run them as one matrix (the native one does: one pass over x)."""
        fused = getattr(self.b, "block_linears", None)
        ys = fused(x, ws, spec.ACT_FRAC, spec.ACT_MAX) if fused is not None else \
            [self.b.block_linear(x, w, spec.ACT_FRAC, spec.ACT_MAX) for w in ws]
        return [self._blinear(op, y, x, w, spec.ACT_FRAC, spec.ACT_MAX) for op, y, w in zip(ops, ys, ws)]

    def wrmsnorm(self, op: str, x: Any, gain: np.ndarray) -> Any:
        return self._rec(op, self.b.wrmsnorm(x, gain), I32, prog.WRMSNORM, (x,), lambda: prog.row_consts(gain))

    def rope(self, op: str, x: Any, start: int, head_dim: int, table: tuple[np.ndarray, np.ndarray]) -> Any:
        """x [1, T, C] rotated for positions ``start``.. (a program parameter: it follows from shapes)."""
        return self._rec(op, self.b.rope(x, start, head_dim, table), I32, prog.ROPE, (x,),
                         lambda: prog.tables_consts(table), (start, head_dim))

    def kv_append(self, op: str, cache: Any, new: Any) -> Any:
        """The cache [1, S, C] with the new rows appended: its first rows are ``cache``'s."""
        return self._rec(op, self.b.kv_append(cache, new), I32, prog.KV_APPEND, (cache, new), grows=cache)

    def transpose(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.transpose_last(x), I32, prog.TRANSPOSE, (x,))

    def gqa(self, op: str, q: Any, k: Any, vt: Any, heads: int, kv_heads: int) -> Any:
        """Grouped-query attention of q [1, T, H*D] over the caches (K [1, S, Hkv*D], V transposed
        [1, Hkv*D, S]): scores, probabilities and the context, each a record."""
        from veracity.exact import llm

        b = self.b
        z = self._rec(op + ".scores", b.gqa_scores(q, k, heads, kv_heads), I32, prog.GQA_SCORES, (q, k),
                      params=(heads, kv_heads))
        p = self._rec(op + ".probs", b.gqa_probs(z), I32, prog.GQA_PROBS, (z,),
                      lambda: prog.tables_consts(llm.exp2_tables()))
        return self._rec(op + ".context", b.gqa_context(p, vt, heads, kv_heads), I32, prog.GQA_CONTEXT, (p, vt),
                         params=(heads, kv_heads))

    def resid_add(self, op: str, a: Any, b: Any) -> Any:
        return self._rec(op, self.b.resid_add(a, b), I32, prog.RESID_ADD, (a, b))

    def silu_gate(self, op: str, g: Any, u: Any) -> Any:
        return self._rec(op, self.b.silu_gate(g, u), I32, prog.SILU_GATE, (g, u),
                         lambda: prog.lut_consts(spec.silu_lut()))

    def pick(self, op: str, logits: Any, prev: Any = None, stops: tuple[int, ...] = ()) -> Any:
        """The next token [T, 1] from logits rows [T, R, W]: each row's maximum, then the largest; once
        the previous token record ``prev`` is one of ``stops`` (at most two), that token again."""
        if len(stops) > 2:
            raise ValueError("a generation names at most two stop tokens")
        m = self._rec(op + ".rows", self.b.row_max(logits), I32, prog.ROW_MAX, (logits,))
        inputs = (m,) if prev is None else (m, prev)
        return self._rec(op, self.b.pick(m, prev, stops), I32, prog.PICK, inputs, params=tuple(stops))
