"""Exact training of the tiny GPT (char-level, pre-LayerNorm, causal attention) from scratch, in
integers: a checkpoint's hash is the same on every machine, backend and thread count.

The architecture is ``models.gpt.FloatGPT``'s: token and position embeddings, blocks of
LayerNorm -> fused q/k/v -> causal attention -> projection (residual), LayerNorm -> MLP with GELU
(residual), a final LayerNorm and the LM head. The step (``gpt_step``), with ``exact.integer``'s
primitives:

* **State**: every parameter and its Adam moments in int64 fixed point (``W_FRAC``).
* **Forward**: activations in ``ACT_FRAC``; every linear a per-row int8 GEMM (``train.qmatmul``);
  LayerNorm exactly as the inference op set (``finetune.layernorm``); attention scores scaled
  by ``round(2**16 / sqrt(head_dim))``, the causal softmax from ``train.exp_rows`` (a masked key's
  numerator is the table's last entry, 0), probabilities with 16 fractional bits, the context a
  GEMM over the keys; GELU from the inference op set's int16 table (``spec.gelu_lut``).
* **Backward**, gradients with ``finetune.G`` fractional bits: the loss gradient per position
  (``train.loss_grad``), each linear's ``dx = dy W`` and ``dW = dy^T x`` (contractions over the
  tokens, chunked exactly), the softmax's ``dS = P (dP - sum(P dP))``, GELU's slope from the
  table's central difference, the LayerNorm backward (``finetune.layernorm_backward``) with its
  gamma and beta gradients, and the embeddings' gradients as exact integer scatter-adds.
* **Update**: ``train.update`` (Adam by default) with the batch mean over every predicted token.
* **Data**: windows of the corpus at offsets from a PCG64 seeded by (seed, step).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from veracity.exact import integer as X
from veracity.exact import program as P
from veracity.exact import spec
from veracity.exact.trace import tensor_digest
from veracity.training import checkpoint as CK
from veracity.training import lora as FT
from veracity.training.tape import NULL_TAPE, StepRecorder, Tape

ACT, W, G = spec.ACT_FRAC, X.W_FRAC, FT.G
PROB = 16  # attention probabilities
SCALE_SHIFT = 16
MASKED = -(1 << 40)  # a masked attention score (its exp is the table's last entry, 0)


@dataclass(frozen=True)
class Shape:
    vocab: int
    block: int = 64
    layers: int = 2
    heads: int = 4
    embd: int = 128


@dataclass
class GPTState:
    params: dict[str, np.ndarray]  # W_FRAC
    m: dict[str, np.ndarray] = field(default_factory=dict)
    s: dict[str, np.ndarray] = field(default_factory=dict)
    step: int = 0

    @classmethod
    def init(cls, shape: Shape, seed: int = 0) -> "GPTState":
        """Weights uniform with std 0.02 (as GPT-2's normal init), LayerNorm gain 1 and bias 0, all
        other biases 0; drawn from a seeded PCG64 (bit for bit on every platform)."""
        rng = np.random.Generator(np.random.PCG64(seed))
        c, bound = shape.embd, int(0.02 * np.sqrt(3) * (1 << W))

        def weight(*dims: int) -> np.ndarray:
            return rng.integers(-bound, bound + 1, dims).astype(np.int64)

        zeros = lambda n: np.zeros(n, dtype=np.int64)  # noqa: E731
        ones = lambda n: np.full(n, 1 << W, dtype=np.int64)  # noqa: E731
        p: dict[str, np.ndarray] = {"wte": weight(shape.vocab, c), "wpe": weight(shape.block, c)}
        for i in range(shape.layers):
            p.update({f"h{i}.ln1.g": ones(c), f"h{i}.ln1.b": zeros(c), f"h{i}.attn.w": weight(3 * c, c),
                      f"h{i}.attn.b": zeros(3 * c), f"h{i}.proj.w": weight(c, c), f"h{i}.proj.b": zeros(c),
                      f"h{i}.ln2.g": ones(c), f"h{i}.ln2.b": zeros(c), f"h{i}.fc.w": weight(4 * c, c),
                      f"h{i}.fc.b": zeros(4 * c), f"h{i}.fc_proj.w": weight(c, 4 * c), f"h{i}.fc_proj.b": zeros(c)})
        p.update({"ln_f.g": ones(c), "ln_f.b": zeros(c), "head.w": weight(shape.vocab, c)})
        return cls(p, {k: np.zeros_like(v) for k, v in p.items()}, {k: np.zeros_like(v) for k, v in p.items()}, 0)

    def shape(self, heads: int) -> Shape:
        v, c = self.params["wte"].shape
        layers = sum(1 for k in self.params if k.endswith(".ln1.g"))
        return Shape(v, self.params["wpe"].shape[0], layers, heads, c)

    def tensors(self) -> list[np.ndarray]:
        keys = list(self.params)
        return [*(self.params[k] for k in keys), *(self.m[k] for k in keys), *(self.s[k] for k in keys),
                np.array([self.step], dtype=np.int64)]

    def copy(self) -> "GPTState":
        return replace(self, params={k: v.copy() for k, v in self.params.items()},
                       m={k: v.copy() for k, v in self.m.items()}, s={k: v.copy() for k, v in self.s.items()})


def checkpoint_bytes(state: GPTState) -> bytes:
    return CK.pack_tensors(state.tensors())


def load_checkpoint(blob: bytes, shape: Shape) -> GPTState:
    ts = CK.unpack_tensors(blob)
    keys = list(GPTState.init(shape).params)
    n = len(keys)
    if len(ts) != 3 * n + 1 or [t.shape for t in ts[:n]] != [GPTState.init(shape).params[k].shape for k in keys]:
        raise ValueError(f"not a tiny-GPT checkpoint of this shape ({shape.layers} layers of {shape.embd})")
    return GPTState(dict(zip(keys, ts[:n])), dict(zip(keys, ts[n:2 * n])), dict(zip(keys, ts[2 * n:3 * n])),
                    int(ts[-1][0]))


def checkpoint_hash(state: GPTState) -> bytes:
    return hashlib.sha256(b"".join(tensor_digest(t) for t in state.tensors())).digest()


# pieces ------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def gelu_slope() -> np.ndarray:
    """GELU's slope over the int16 table, from its central difference, in 2**12 fixed point."""
    t = spec.gelu_lut().astype(np.int64)
    d = np.zeros_like(t)
    d[1:-1] = (t[2:] - t[:-2]) << 11  # (t[i+1] - t[i-1]) / 2 steps of the same scale, times 2**12
    return d


@lru_cache(maxsize=None)
def gelu_slope_tensor() -> np.ndarray:
    """The slope table as a dispute shows it: int32 [256, 256] (entry i: row i // 256)."""
    return gelu_slope().astype(np.int32).reshape(256, 256)


@lru_cache(maxsize=None)
def table_digests() -> tuple[bytes, bytes, bytes]:
    """The digests of the exp table, the GELU table and its slope table (constants records name)."""
    from veracity.exact.program import lut_consts

    return X.exp_table_digest(), lut_consts(spec.gelu_lut())[0], tensor_digest(gelu_slope_tensor())


def gelu_index(h: np.ndarray) -> np.ndarray:
    """The GELU table's index of ACT_FRAC values (GELU_FRAC, clipped to 16 bits, offset by 2**15)."""
    return np.clip(X.round_shift(h, 1, -(ACT - spec.GELU_FRAC)), -(1 << 15), (1 << 15) - 1) + (1 << 15)


def _gelu(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GELU of ACT_FRAC values through the GELU_FRAC table; returns (ACT_FRAC out, table index)."""
    idx = gelu_index(h)
    return spec.gelu_lut().astype(np.int64)[idx] << (ACT - spec.GELU_FRAC), idx


def attention_scale(head_dim: int) -> int:
    """Attention scores' scale, round(2**16 / sqrt(head_dim))."""
    return int(round((1 << SCALE_SHIFT) / np.sqrt(np.float64(head_dim))))


def split_heads(x: np.ndarray, b: int, heads: int, part: int, parts: int) -> np.ndarray:
    """Part ``part`` of rows of tokens [B*T, parts*C] as heads [B*heads, T, C/heads]."""
    n, width = x.shape
    hd = width // parts // heads
    return x.reshape(b, n // b, parts, heads, hd)[:, :, part].transpose(0, 2, 1, 3).reshape(b * heads, n // b, hd)


def merge_heads(xs: list[np.ndarray], heads: int) -> np.ndarray:
    """Heads [B*heads, T, d] (one per part) back into rows of tokens [B*T, parts*heads*d]."""
    g, t, hd = xs[0].shape
    b = g // heads
    return np.stack([x.reshape(b, heads, t, hd).transpose(0, 2, 1, 3) for x in xs], axis=2).reshape(b * t, -1)


def _norm_params(state: GPTState, name: str, r: StepRecorder) -> tuple[np.ndarray, np.ndarray, int, int]:
    """LayerNorm gain (ACT_FRAC + 4 bits, as the op set reads it) and bias (ACT_FRAC) from masters,
    and their records."""
    gs, bs = -(W - ACT - spec.NORM_STD_SHIFT), -(W - ACT)
    g = X.round_shift(state.params[name + ".g"], 1, gs)
    b = X.round_shift(state.params[name + ".b"], 1, bs)
    ig = r(P.RESCALE, name + ".gamma", g, (r.state(name + ".g"),), params=(gs,))
    ib = r(P.RESCALE, name + ".beta", b, (r.state(name + ".b"),), params=(bs,))
    return g, b, ig, ib


def _linear(x: np.ndarray, ix: int, state: GPTState, name: str, backend: str, r: StepRecorder,
            bias: bool = True) -> tuple[np.ndarray, int]:
    y = X.qmatmul(x, ACT, state.params[name + ".w"], W, ACT, backend)
    if not bias:
        return y, r(P.QMM, name, y, (ix, r.state(name + ".w")), params=(-W, -1))
    b = X.round_shift(state.params[name + ".b"], 1, -(W - ACT))
    ib = r(P.RESCALE, name + ".bias", b, (r.state(name + ".b"),), params=(-(W - ACT),))
    y = y + b
    return y, r(P.QMM, name, y, (ix, r.state(name + ".w"), ib), params=(-W, 0))


def _linear_back(dy: np.ndarray, idy: int, x: np.ndarray, ix: int, state: GPTState, name: str,
                 grads: dict[str, tuple[np.ndarray, int]], backend: str, r: StepRecorder,
                 bias: bool = True) -> tuple[np.ndarray, int]:
    """dx (G) for y = x W^T + b, and dW and db (W_FRAC) summed over the tokens, into ``grads``."""
    idyt = r(P.TRANSPOSE, name + ".dy_t", lambda: dy.T, (idy,))
    ixt = r(P.TRANSPOSE, name + ".x_t", lambda: x.T, (ix,))
    gw = X.qmatmul(dy.T, G, x.T, ACT, W, backend)
    grads[name + ".w"] = gw, r(P.QMM, name + ".gw", gw, (idyt, ixt), params=(W - G - ACT, -1))
    if bias:
        gb = dy.sum(axis=0) << (W - G)
        grads[name + ".b"] = gb, r(P.ROW_SUM, name + ".gb", gb, (idyt,), params=(W - G,))
    w = state.params[name + ".w"]
    iwt = r(P.TRANSPOSE, name + ".w_t", lambda: w.T, (r.state(name + ".w"),))
    dx = X.qmatmul(dy, G, w.T, W, G, backend)
    return dx, r(P.QMM, name + ".dx", dx, (idy, iwt), params=(-W, -1))


def _norm_back(dz: np.ndarray, idz: int, x: Any, cache: FT.NormCache, gamma: np.ndarray, name: str,
               grads: dict[str, tuple[np.ndarray, int]], backend: str, r: StepRecorder) -> tuple[np.ndarray, int]:
    """dx of a LayerNorm (input record ``x``: (index, gamma's record)), its gain and bias gradients."""
    ix, ig = x
    xhat = X.round_shift(cache.ds, cache.den, spec.NORM_STD_SHIFT + ACT)
    ixh = r(P.XHAT, name + ".xhat", xhat, (ix,))
    idzt = r(P.TRANSPOSE, name + ".dz_t", lambda: dz.T, (idz,))
    ixht = r(P.TRANSPOSE, name + ".xhat_t", lambda: xhat.T, (ixh,))
    gg = X.round_shift((dz * xhat).sum(axis=0), 1, -ACT) << (W - G)
    grads[name + ".g"] = gg, r(P.COL_DOT, name + ".gg", gg, (idzt, ixht), params=(-ACT, W - G))
    gb = dz.sum(axis=0) << (W - G)
    grads[name + ".b"] = gb, r(P.ROW_SUM, name + ".gb", gb, (idzt,), params=(W - G,))
    dx = FT.layernorm_backward(dz, gamma, cache, backend)
    return dx, r(P.LN_BWD, name + ".dx", dx, (idz, ix, ig))


def _heads(g: int, f: Any) -> np.ndarray:
    """``f(n)`` for each of ``g`` heads, stacked."""
    return np.stack([f(n) for n in range(g)])


def _attention(qkv: np.ndarray, iqkv: int, b: int, heads: int, backend: str, r: StepRecorder,
               name: str) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Causal attention per sequence and head: the context [B*T, C], its record, and what the
    backward reads (the heads' q, k, v and probabilities [B*heads, T, d], with their records).
    Each stage is recorded before the next reads it (so an adversary's altered record is what
    the rest of the step computes from)."""
    q, k, v = (split_heads(qkv, b, heads, part, 3) for part in range(3))
    iq, ik, iv = (r(P.HEAD_SPLIT, f"{name}.{part}", x, (iqkv,), params=(j, heads))
                  for j, (part, x) in enumerate((("q", q), ("k", k), ("v", v))))
    g, t, hd = q.shape
    scale = attention_scale(hd)
    causal = np.tril(np.ones((t, t), dtype=bool))
    z = _heads(g, lambda n: np.where(causal, X.round_shift(X.qmatmul(q[n], ACT, k[n], ACT, ACT, backend) * scale, 1,
                                                           -SCALE_SHIFT), MASKED))
    iz = r(P.T_SCORES, name + ".scores", z, (iq, ik), params=(-ACT, scale))
    e = _heads(g, lambda n: X.exp_rows(z[n]))
    ie = r(P.EXP_ROWS, name + ".exp", e, (iz,), consts=(table_digests()[0],))
    p = X.round_shift(e, e.sum(axis=2, keepdims=True), PROB)
    ip = r(P.ROW_NORM, name + ".probs", p, (ie,), params=(PROB,))
    ivt = r(P.TRANSPOSE, name + ".v_t", lambda: v.transpose(0, 2, 1), (iv,))
    ctx = _heads(g, lambda n: X.qmatmul(p[n], PROB, v[n].T, ACT, ACT, backend))
    ich = r(P.QMM, name + ".ctx_heads", ctx, (ip, ivt), params=(-PROB, -1))
    out = merge_heads([ctx], heads)
    saved = {"q": (q, iq), "k": (k, ik), "v": (v, iv), "p": (p, ip), "scale": scale}
    return out, r(P.HEAD_MERGE, name + ".ctx", out, (ich,), params=(heads,)), saved


def _attention_back(do: np.ndarray, ido: int, saved: dict[str, Any], b: int, heads: int, backend: str,
                    r: StepRecorder, name: str) -> tuple[np.ndarray, int]:
    """d(qkv) [B*T, 3C] (G) from d(context) [B*T, C] (G), and its record."""
    (q, iq), (k, ik), (v, iv), (p, ip), scale = saved["q"], saved["k"], saved["v"], saved["p"], saved["scale"]
    dout = split_heads(do, b, heads, 0, 1)
    idh = r(P.HEAD_SPLIT, name + ".dctx_heads", dout, (ido,), params=(0, heads))
    g = dout.shape[0]
    ipt = r(P.TRANSPOSE, name + ".p_t", lambda: p.transpose(0, 2, 1), (ip,))
    idht = r(P.TRANSPOSE, name + ".dctx_t", lambda: dout.transpose(0, 2, 1), (idh,))
    dv = _heads(g, lambda n: X.qmatmul(p[n].T, PROB, dout[n].T, G, G, backend))  # [keys, hd]
    idv = r(P.QMM, name + ".dv", dv, (ipt, idht), params=(-PROB, -1))
    dp = _heads(g, lambda n: X.qmatmul(dout[n], G, v[n], ACT, G, backend))  # [queries, keys]
    idp = r(P.QMM, name + ".dp", dp, (idh, iv), params=(-ACT, -1))
    rs = X.round_shift((p * dp).sum(axis=2, keepdims=True), 1, -PROB)
    ds = X.round_shift(X.round_shift(p * (dp - rs), 1, -PROB) * scale, 1, -SCALE_SHIFT)
    ids = r(P.SOFTMAX_BWD, name + ".ds", ds, (ip, idp), params=(scale,))
    ikt = r(P.TRANSPOSE, name + ".k_t", lambda: k.transpose(0, 2, 1), (ik,))
    dq = _heads(g, lambda n: X.qmatmul(ds[n], G, k[n].T, ACT, G, backend))
    idq = r(P.QMM, name + ".dq", dq, (ids, ikt), params=(-ACT, -1))
    idst = r(P.TRANSPOSE, name + ".ds_t", lambda: ds.transpose(0, 2, 1), (ids,))
    iqt = r(P.TRANSPOSE, name + ".q_t", lambda: q.transpose(0, 2, 1), (iq,))
    dk = _heads(g, lambda n: X.qmatmul(ds[n].T, G, q[n].T, ACT, G, backend))
    idk = r(P.QMM, name + ".dk", dk, (idst, iqt), params=(-ACT, -1))
    dqkv = merge_heads([dq, dk, dv], heads)
    return dqkv, r(P.HEAD_MERGE, name + ".dqkv", dqkv, (idq, idk, idv), params=(heads,))


# the step ----------------------------------------------------------------------------------------
def _layers(state: GPTState) -> int:
    return sum(1 for k in state.params if k.endswith(".ln1.g"))


def forward(state: GPTState, ids: np.ndarray, heads: int, backend: str, r: StepRecorder | None = None,
            inputs: tuple[int, ...] = (-1, -1)) -> tuple[np.ndarray, dict[str, Any]]:
    """Logits [B*T, V] (ACT_FRAC) for token windows ``ids`` [B, T], and what the backward reads
    (with a recorder, every op a record: ``inputs`` are the records of the ids and positions)."""
    r = r if r is not None else StepRecorder(NULL_TAPE, 0)
    b, t = ids.shape
    p = state.params
    shift = -(W - ACT)
    x = X.round_shift(p["wte"][ids] + p["wpe"][np.arange(t)][None], 1, shift).reshape(b * t, -1)
    ix = r(P.EMBED_SUM, "embed", x, (inputs[0], r.state("wte"), r.state("wpe")), params=(t, shift))
    cache: dict[str, Any] = {}
    for i in range(_layers(state)):
        h = f"h{i}"
        g1, b1, ig1, ib1 = _norm_params(state, h + ".ln1", r)
        a, cache[h + ".ln1"] = FT.layernorm(x, g1, b1, backend)
        ia = r(P.LN_REC, h + ".ln1", a, (ix, ig1, ib1))
        cache[h + ".ln1.in"] = (ix, ig1)
        qkv, iqkv = _linear(a, ia, state, h + ".attn", backend, r)
        ctx, ictx, cache[h + ".att"] = _attention(qkv, iqkv, b, heads, backend, r, h + ".attn")
        y, iy = _linear(ctx, ictx, state, h + ".proj", backend, r)
        x = x + y
        ix = r(P.SUM, h + ".resid1", x, (ix, iy))
        g2, b2, ig2, ib2 = _norm_params(state, h + ".ln2", r)
        a2, cache[h + ".ln2"] = FT.layernorm(x, g2, b2, backend)
        ia2 = r(P.LN_REC, h + ".ln2", a2, (ix, ig2, ib2))
        cache[h + ".ln2.in"] = (ix, ig2)
        hfc, ihfc = _linear(a2, ia2, state, h + ".fc", backend, r)
        f, idx = _gelu(hfc)
        i_f = r(P.GELU_T, h + ".gelu", f, (ihfc,), consts=(table_digests()[1],))
        y, iy = _linear(f, i_f, state, h + ".fc_proj", backend, r)
        x = x + y
        ix = r(P.SUM, h + ".resid2", x, (ix, iy))
        cache[h + ".acts"] = ((a, ia), (ctx, ictx), (a2, ia2), (f, i_f), (hfc, ihfc), idx, g1, g2)
    gf, bf, igf, ibf = _norm_params(state, "ln_f", r)
    z, cache["ln_f"] = FT.layernorm(x, gf, bf, backend)
    iz = r(P.LN_REC, "ln_f", z, (ix, igf, ibf))
    cache["ln_f.in"], cache["gf"], cache["z"] = (ix, igf), gf, (z, iz)
    logits, ilog = _linear(z, iz, state, "head", backend, r, bias=False)
    cache["logits"] = ilog
    return logits, cache


def step_inputs(ids: np.ndarray, targets: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """A step's batch as input records: the token ids, the targets and the positions [B*T]."""
    b, t = ids.shape
    return [("batch.ids", ids.reshape(-1)), ("batch.targets", targets.reshape(-1)),
            ("batch.positions", np.tile(np.arange(t, dtype=np.int64), b))]


def gpt_step(state: GPTState, ids: np.ndarray, targets: np.ndarray, cfg: X.SGDConfig, heads: int,
             backend: str = "numpy", tape: Tape = NULL_TAPE) -> GPTState:
    """One optimizer step on windows ``ids`` [B, T] predicting ``targets`` [B, T]. With a tape,
    every op is a record (``exact.program``'s training kinds), each state tensor's update last."""
    from veracity.training.mlp import update_params

    s = state.copy()
    b, t = ids.shape
    r = StepRecorder(tape, s.step + 1)
    i_ids, i_tgt, i_pos = (r.input(op, x) for op, x in step_inputs(ids, targets))
    logits, cache = forward(s, ids, heads, backend, r, (i_ids, i_pos))
    grads: dict[str, tuple[np.ndarray, int]] = {}
    exp_d, gelu_d, slope_d = table_digests()
    if r.on:  # each recorded before the next reads it (untraced: one pass, the same integers)
        pexp = X.exp_rows(logits)
        ipe = r(P.EXP_ROWS, "loss.exp", pexp, (cache["logits"],), consts=(exp_d,))
        dl = X.loss_grad(pexp, targets.reshape(-1))
    else:
        pexp, dl = X.loss_pair(logits, targets.reshape(-1), backend)
        ipe = -1
    idl = r(P.LOSS_GRAD, "loss.grad", dl, (ipe, i_tgt))
    dlogits = dl << (G - ACT)
    idlog = r(P.RESCALE, "loss.dlogits", dlogits, (idl,), params=(G - ACT,))
    z, iz = cache["z"]
    dx, idx_ = _linear_back(dlogits, idlog, z, iz, s, "head", grads, backend, r, bias=False)
    dx, idx_ = _norm_back(dx, idx_, cache["ln_f.in"], cache["ln_f"], cache["gf"], "ln_f", grads, backend, r)
    for i in reversed(range(_layers(s))):
        h = f"h{i}"
        (a, ia), (ctx, ictx), (a2, ia2), (f, i_f), (_, ihfc), idx, g1, g2 = cache[h + ".acts"]
        df, idf = _linear_back(dx, idx_, f, i_f, s, h + ".fc_proj", grads, backend, r)
        dh = X.round_shift(df * gelu_slope()[idx], 1, -ACT)
        idh = r(P.GELU_GRAD, h + ".gelu_grad", dh, (idf, ihfc), consts=(slope_d,))
        da2, ida2 = _linear_back(dh, idh, a2, ia2, s, h + ".fc", grads, backend, r)
        dn, idn = _norm_back(da2, ida2, cache[h + ".ln2.in"], cache[h + ".ln2"], g2, h + ".ln2", grads, backend, r)
        dx = dx + dn
        idx_ = r(P.SUM, h + ".dresid2", dx, (idx_, idn))
        dctx, idctx = _linear_back(dx, idx_, ctx, ictx, s, h + ".proj", grads, backend, r)
        dqkv, idqkv = _attention_back(dctx, idctx, cache[h + ".att"], b, heads, backend, r, h + ".attn")
        da, ida = _linear_back(dqkv, idqkv, a, ia, s, h + ".attn", grads, backend, r)
        dn, idn = _norm_back(da, ida, cache[h + ".ln1.in"], cache[h + ".ln1"], g1, h + ".ln1", grads, backend, r)
        dx = dx + dn
        idx_ = r(P.SUM, h + ".dresid1", dx, (idx_, idn))
    dx = dx << (W - G)
    idx_ = r(P.RESCALE, "embed.dx", dx, (idx_,), params=(W - G,))
    dxt = dx.T
    idxt = r(P.TRANSPOSE, "embed.dx_t", dxt, (idx_,))
    gwte = np.zeros_like(s.params["wte"])
    np.add.at(gwte, ids.reshape(-1), dx)
    grads["wte"] = gwte, r(P.SCATTER_ADD, "wte.grad", gwte, (idxt, i_ids))
    gwpe = np.zeros_like(s.params["wpe"])
    gwpe[:t] = dx.reshape(b, t, -1).sum(axis=0)
    grads["wpe"] = gwpe, r(P.SCATTER_ADD, "wpe.grad", gwpe, (idxt, i_pos))
    ups = update_params(cfg, b * t) if r.on else {}
    for k in s.params:
        g, ig = grads[k]
        s.params[k], s.m[k], s.s[k] = X.update(s.params[k], s.m[k], s.s[k], g, b * t, cfg, backend)
        r.update((f"m.{k}", f"s.{k}", k), (s.m[k], s.s[k], s.params[k]), ig, ups)
    s.step += 1
    return s


def coarse_names(state: GPTState) -> list[str]:
    """The record names a step leaves its state under, in record order (each tensor's first and
    second moment, then the tensor): the step's coarse records (``exact.levels``)."""
    return [name for k in state.params for name in (f"state.m.{k}", f"state.s.{k}", f"state.{k}")]


def coarse_tensors(state: GPTState) -> list[np.ndarray]:
    return [t for k in state.params for t in (state.m[k], state.s[k], state.params[k])]


def windows(data: np.ndarray, step: int, batch: int, ctx: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``step``'s windows of the corpus and their next characters: offsets from a PCG64
    seeded by (seed, step), so a work unit draws the same windows the unsplit job would."""
    starts = np.random.Generator(np.random.PCG64([seed, step])).integers(0, len(data) - ctx - 1, batch)
    rows = starts[:, None] + np.arange(ctx)[None]
    return data[rows], data[rows + 1]


def train(state: GPTState, data: np.ndarray, steps: int, cfg: X.SGDConfig, heads: int, ctx: int,
          backend: str = "numpy", progress: Any = None, tape: Tape = NULL_TAPE) -> GPTState:
    for _ in range(steps):
        ids, targets = windows(data, state.step, cfg.batch, ctx, cfg.seed)
        state = gpt_step(state, ids, targets, cfg, heads, backend, tape)
        if progress:
            progress(state.step)
    return state


def loss(state: GPTState, ids: np.ndarray, targets: np.ndarray, heads: int) -> float:
    """Mean cross-entropy (nats) of the exact model on windows, for reports and tests."""
    z = forward(state, ids, heads, "numpy")[0] / (1 << ACT)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(logp)), targets.reshape(-1)].mean())
