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
from veracity.exact import spec
from veracity.exact.trace import tensor_digest
from veracity.training import checkpoint as CK
from veracity.training import lora as FT

ACT, W, G = spec.ACT_FRAC, X.W_FRAC, FT.G
PROB = 16  # attention probabilities
SCALE_SHIFT = 16


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


def _gelu(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GELU of ACT_FRAC values through the GELU_FRAC table; returns (ACT_FRAC out, table index)."""
    idx = np.clip(X.round_shift(h, 1, -(ACT - spec.GELU_FRAC)), -(1 << 15), (1 << 15) - 1) + (1 << 15)
    return spec.gelu_lut().astype(np.int64)[idx] << (ACT - spec.GELU_FRAC), idx


def _norm_params(state: GPTState, name: str) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm gain (ACT_FRAC + 4 bits, as the op set reads it) and bias (ACT_FRAC) from masters."""
    g = X.round_shift(state.params[name + ".g"], 1, -(W - ACT - spec.NORM_STD_SHIFT))
    return g, X.round_shift(state.params[name + ".b"], 1, -(W - ACT))


def _linear(x: np.ndarray, state: GPTState, name: str, backend: str, bias: bool = True) -> np.ndarray:
    y = X.qmatmul(x, ACT, state.params[name + ".w"], W, ACT, backend)
    return y + X.round_shift(state.params[name + ".b"], 1, -(W - ACT)) if bias else y


def _linear_back(dy: np.ndarray, x: np.ndarray, state: GPTState, name: str, grads: dict[str, np.ndarray],
                 backend: str, bias: bool = True) -> np.ndarray:
    """dx (G) for y = x W^T + b, accumulating dW and db (W_FRAC) over the tokens."""
    grads[name + ".w"] = X.qmatmul(dy.T, G, x.T, ACT, W, backend)
    if bias:
        grads[name + ".b"] = dy.sum(axis=0) << (W - G)
    return X.qmatmul(dy, G, state.params[name + ".w"].T, W, G, backend)


def _norm_back(dz: np.ndarray, cache: FT.NormCache, gamma: np.ndarray, name: str,
               grads: dict[str, np.ndarray], backend: str = "numpy") -> np.ndarray:
    xhat = X.round_shift(cache.ds, cache.den, spec.NORM_STD_SHIFT + ACT)
    grads[name + ".g"] = X.round_shift((dz * xhat).sum(axis=0), 1, -ACT) << (W - G)
    grads[name + ".b"] = dz.sum(axis=0) << (W - G)
    return FT.layernorm_backward(dz, gamma, cache, backend)


def _attention(qkv: np.ndarray, heads: int, backend: str) -> tuple[np.ndarray, list[Any]]:
    """Causal attention per sequence and head: the context [B, T, C] and what the backward reads."""
    b, t, c3 = qkv.shape
    c, hd = c3 // 3, c3 // 3 // heads
    scale = int(round((1 << SCALE_SHIFT) / np.sqrt(np.float64(hd))))
    causal = np.tril(np.ones((t, t), dtype=bool))
    out = np.zeros((b, t, c), dtype=np.int64)
    saved = []
    for bi in range(b):
        for h in range(heads):
            q = qkv[bi, :, h * hd:(h + 1) * hd]
            k = qkv[bi, :, c + h * hd:c + (h + 1) * hd]
            v = qkv[bi, :, 2 * c + h * hd:2 * c + (h + 1) * hd]
            s = X.round_shift(X.qmatmul(q, ACT, k, ACT, ACT, backend) * scale, 1, -SCALE_SHIFT)
            e = X.exp_rows(np.where(causal, s, -(1 << 40)))
            p = X.round_shift(e, e.sum(axis=1, keepdims=True), PROB)
            out[bi, :, h * hd:(h + 1) * hd] = X.qmatmul(p, PROB, v.T, ACT, ACT, backend)
            saved.append((q, k, v, p))
    return out, saved


def _attention_back(do: np.ndarray, saved: list[Any], heads: int, backend: str, shape: tuple[int, ...]) -> np.ndarray:
    """d(qkv) [B, T, 3C] (G) from d(context) [B, T, C] (G)."""
    b, t, c3 = shape
    c, hd = c3 // 3, c3 // 3 // heads
    scale = int(round((1 << SCALE_SHIFT) / np.sqrt(np.float64(hd))))
    dqkv = np.zeros(shape, dtype=np.int64)
    for n, (q, k, v, p) in enumerate(saved):
        bi, h = divmod(n, heads)
        dout = do[bi, :, h * hd:(h + 1) * hd]
        dv = X.qmatmul(p.T, PROB, dout.T, G, G, backend)  # [keys, hd]
        dp = X.qmatmul(dout, G, v, ACT, G, backend)  # [queries, keys]
        r = X.round_shift((p * dp).sum(axis=1, keepdims=True), 1, -PROB)
        ds = X.round_shift(p * (dp - r), 1, -PROB)
        ds = X.round_shift(ds * scale, 1, -SCALE_SHIFT)
        dqkv[bi, :, h * hd:(h + 1) * hd] = X.qmatmul(ds, G, k.T, ACT, G, backend)
        dqkv[bi, :, c + h * hd:c + (h + 1) * hd] = X.qmatmul(ds.T, G, q.T, ACT, G, backend)
        dqkv[bi, :, 2 * c + h * hd:2 * c + (h + 1) * hd] = dv
    return dqkv


# the step ----------------------------------------------------------------------------------------
def forward(state: GPTState, ids: np.ndarray, heads: int, backend: str, keep: bool = False) -> tuple[np.ndarray, Any]:
    """Logits [B*T, V] (ACT_FRAC) for token windows ``ids`` [B, T], and what the backward reads."""
    b, t = ids.shape
    p = state.params
    x = X.round_shift(p["wte"][ids] + p["wpe"][np.arange(t)][None], 1, -(W - ACT)).reshape(b * t, -1)
    cache: dict[str, Any] = {}
    for i in range(sum(1 for k in p if k.endswith(".ln1.g"))):
        g1, b1 = _norm_params(state, f"h{i}.ln1")
        a, cache[f"h{i}.ln1"] = FT.layernorm(x, g1, b1, backend)
        qkv = _linear(a, state, f"h{i}.attn", backend)
        ctx, cache[f"h{i}.att"] = _attention(qkv.reshape(b, t, -1), heads, backend)
        ctx = ctx.reshape(b * t, -1)
        x = x + _linear(ctx, state, f"h{i}.proj", backend)
        g2, b2 = _norm_params(state, f"h{i}.ln2")
        a2, cache[f"h{i}.ln2"] = FT.layernorm(x, g2, b2, backend)
        hfc = _linear(a2, state, f"h{i}.fc", backend)
        f, idx = _gelu(hfc)
        x = x + _linear(f, state, f"h{i}.fc_proj", backend)
        cache[f"h{i}.acts"] = (a, (b, t, qkv.shape[-1]), ctx, a2, f, idx)
    gf, bf = _norm_params(state, "ln_f")
    z, cache["ln_f"] = FT.layernorm(x, gf, bf, backend)
    cache["z"] = z
    return X.qmatmul(z, ACT, p["head.w"], W, ACT, backend), cache


def gpt_step(state: GPTState, ids: np.ndarray, targets: np.ndarray, cfg: X.SGDConfig, heads: int,
             backend: str = "numpy") -> GPTState:
    """One optimizer step on windows ``ids`` [B, T] predicting ``targets`` [B, T]."""
    s = state.copy()
    b, t = ids.shape
    logits, cache = forward(s, ids, heads, backend)
    grads: dict[str, np.ndarray] = {}
    dlogits = X.loss_pair(logits, targets.reshape(-1), backend)[1] << (G - ACT)
    grads["head.w"] = X.qmatmul(dlogits.T, G, cache["z"].T, ACT, W, backend)
    dz = X.qmatmul(dlogits, G, s.params["head.w"].T, W, G, backend)
    gf, _ = _norm_params(s, "ln_f")
    dx = _norm_back(dz, cache["ln_f"], gf, "ln_f", grads, backend)
    for i in reversed(range(sum(1 for k in s.params if k.endswith(".ln1.g")))):
        a, qkv_shape, ctx, a2, f, idx = cache[f"h{i}.acts"]
        df = _linear_back(dx, f, s, f"h{i}.fc_proj", grads, backend)
        dh = X.round_shift(df * gelu_slope()[idx], 1, -ACT)
        da2 = _linear_back(dh, a2, s, f"h{i}.fc", grads, backend)
        g2, _ = _norm_params(s, f"h{i}.ln2")
        dx = dx + _norm_back(da2, cache[f"h{i}.ln2"], g2, f"h{i}.ln2", grads, backend)
        dctx = _linear_back(dx, ctx, s, f"h{i}.proj", grads, backend)
        dqkv = _attention_back(dctx.reshape(b, t, -1), cache[f"h{i}.att"], heads, backend, qkv_shape)
        da = _linear_back(dqkv.reshape(b * t, -1), a, s, f"h{i}.attn", grads, backend)
        g1, _ = _norm_params(s, f"h{i}.ln1")
        dx = dx + _norm_back(da, cache[f"h{i}.ln1"], g1, f"h{i}.ln1", grads, backend)
    dx = (dx << (W - G)).reshape(b, t, -1)
    grads["wte"] = np.zeros_like(s.params["wte"])
    np.add.at(grads["wte"], ids.reshape(-1), dx.reshape(b * t, -1))
    grads["wpe"] = np.zeros_like(s.params["wpe"])
    grads["wpe"][:t] = dx.sum(axis=0)
    for k in s.params:
        s.params[k], s.m[k], s.s[k] = X.update(s.params[k], s.m[k], s.s[k], grads[k], b * t, cfg, backend)
    s.step += 1
    return s


def windows(data: np.ndarray, step: int, batch: int, ctx: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``step``'s windows of the corpus and their next characters: offsets from a PCG64
    seeded by (seed, step), so a work unit draws the same windows the unsplit job would."""
    starts = np.random.Generator(np.random.PCG64([seed, step])).integers(0, len(data) - ctx - 1, batch)
    rows = starts[:, None] + np.arange(ctx)[None]
    return data[rows], data[rows + 1]


def train(state: GPTState, data: np.ndarray, steps: int, cfg: X.SGDConfig, heads: int, ctx: int,
          backend: str = "numpy", progress: Any = None) -> GPTState:
    for _ in range(steps):
        ids, targets = windows(data, state.step, cfg.batch, ctx, cfg.seed)
        state = gpt_step(state, ids, targets, cfg, heads, backend)
        if progress:
            progress(state.step)
    return state


def loss(state: GPTState, ids: np.ndarray, targets: np.ndarray, heads: int) -> float:
    """Mean cross-entropy (nats) of the exact model on windows, for reports and tests."""
    z = forward(state, ids, heads, "numpy")[0] / (1 << ACT)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(logp)), targets.reshape(-1)].mean())
