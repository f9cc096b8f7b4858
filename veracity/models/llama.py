"""SmolLM2 (and any Llama-architecture GGUF) in exact integers: the forward pass with a KV cache and
greedy decoding, over the file's weights as stored.

This is the reference in plain integer NumPy (the dots of the block-quantized linears as exact
float32 GEMMs through torch): the next step makes each op an ``Exec`` op with its record, its
descriptor and its referee, as the other models' ops are. Every value is an integer in fixed point
(``ACT_FRAC`` bits unless said):

* **Embedding**: the Q8_0 table's rows, ``round(d * q * 2**-24 * 2**12)``.
* **The residual stream** is wide (``WIDE_MAX``, 2**31 in ``ACT_FRAC`` bits): a few of an LLM's
  channels grow to tens of thousands (SmolLM2's reach 24,874 by block 15), far past ``ACT_MAX``.
* **RMSNorm**: the input rescaled to ``RMS_BITS`` bits, an integer square root, the gain in
  ``ACT_FRAC + NORM_STD_SHIFT`` bits (epsilon 1e-5 is below its resolution).
* **Linears**: ``exact.blockq.block_linear`` on the stored quants.
* **RoPE**: adjacent pairs (llama.cpp's "normal" mode, which the GGUF's Q and K rows are permuted
  for), cos and sin from ``rope_table`` (mpmath, ``ROPE_FRAC`` bits).
* **Attention** (grouped-query): exact int64 dots q.k, base-2 scores with ``Z_FRAC`` bits
  (log2(e) / sqrt(head_dim) as a rational), 16-bit probabilities from an mpmath exp2 table (the
  op set's 8-bit one loses an LLM's small attention weights: 5% error per block), and the context
  ``round(sum p v / sum p)``.
* **SwiGLU**: the gate in ``GELU_FRAC`` bits through the SiLU table, times the up projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from veracity.errors import InputError, ModelError
from veracity.exact import blockq, spec
from veracity.exact.ops_numpy import bitlen, isqrt, round_div
from veracity.exact.spec import ACT_FRAC, ACT_MAX, GELU_FRAC, I16_MAX
from veracity.models.gguf import HALF_FRAC, BlockTensor, GGUFFile, read_gguf
from veracity.models.gguf_text import ChatTemplate, GGUFTokenizer

ROPE_FRAC = 15
WIDE_MAX = (1 << 31) - 1  # the residual stream's range (ACT_FRAC bits): LLMs grow a few huge channels
RMS_BITS = 26  # the RMSNorm reads its input rescaled to this many bits: sum of squares < 2**62
LOG2E_FRAC = 16
LOG2E = 94548  # round(log2(e) * 2**16)
Z_FRAC = 10  # attention scores: base-2 logits with 10 fractional bits
P_BITS = 16  # probabilities: round(65535 * 2**-u), u the score's distance below its row's max
P_MAX = (1 << P_BITS) - 1


@lru_cache(maxsize=1)
def exp2_table() -> np.ndarray:
    """round(P_MAX * 2**(-u / 2**Z_FRAC)) for u in [0, 18 * 2**Z_FRAC), computed with mpmath; it
    ends in zeros, so masked keys (u at the end) get no weight."""
    import mpmath

    mpmath.mp.dps = 40
    n = 18 << Z_FRAC
    out = np.array([int(mpmath.floor(P_MAX * mpmath.power(2, -mpmath.mpf(u) / (1 << Z_FRAC)) + mpmath.mpf("0.5")))
                    for u in range(n)], dtype=np.int64)
    assert out[-1] == 0
    return out


@lru_cache(maxsize=8)
def rope_table(head_dim: int, base: float, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """round(cos(p * theta_i) * 2**ROPE_FRAC) and sin, theta_i = base**(-2i / head_dim), [positions,
    head_dim / 2], computed with mpmath (the same on every machine)."""
    import mpmath

    mpmath.mp.dps = 40
    half = head_dim // 2
    thetas = [mpmath.power(mpmath.mpf(base), -mpmath.mpf(2 * i) / head_dim) for i in range(half)]
    one = mpmath.mpf(1 << ROPE_FRAC)
    cos = np.zeros((positions, half), dtype=np.int64)
    sin = np.zeros((positions, half), dtype=np.int64)
    for p in range(positions):
        for i, th in enumerate(thetas):
            cos[p, i] = int(mpmath.floor(mpmath.cos(p * th) * one + mpmath.mpf("0.5")))
            sin[p, i] = int(mpmath.floor(mpmath.sin(p * th) * one + mpmath.mpf("0.5")))
    return cos, sin


def rope(x: np.ndarray, positions: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs of x [T, H, D] by each row's position."""
    c, s = cos[positions][:, None, :], sin[positions][:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = round_div(a * c - b * s, np.int64(1 << ROPE_FRAC))
    out[..., 1::2] = round_div(a * s + b * c, np.int64(1 << ROPE_FRAC))
    return out


@dataclass(frozen=True)
class Linear:
    q: np.ndarray
    d: np.ndarray
    m: np.ndarray | None
    prepared: Any = None  # the quants as the GEMM's operand (``blockq.prepare``), made once

    @classmethod
    def of(cls, t: BlockTensor) -> "Linear":
        if t.q is None or t.d is None:
            raise ModelError(f"{t.name} is not a quantized matrix")
        blockq.check_range(t.q, t.d, t.m)
        return cls(t.q, t.d, t.m, blockq.prepare(t.q))

    def __call__(self, x: np.ndarray, frac_out: int = ACT_FRAC, out_max: int = ACT_MAX) -> np.ndarray:
        return blockq.block_linear(x, self.q, self.d, self.m, ACT_FRAC, frac_out, out_max, backend="torch",
                                   prepared=self.prepared)


@dataclass(frozen=True)
class Layer:
    attn_norm: np.ndarray
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    ffn_norm: np.ndarray
    gate: Linear
    up: Linear
    down: Linear


def _gain(t: BlockTensor) -> np.ndarray:
    if t.values is None:
        raise ModelError(f"{t.name} should be F32 norm gains")
    return spec.to_fixed(t.values.astype(np.float64), ACT_FRAC + spec.NORM_STD_SHIFT, limit=1 << 30)


class ExactLlama:
    """A Llama-architecture GGUF on exact integer ops; ``generate`` decodes greedily."""

    def __init__(self, f: GGUFFile) -> None:
        a = "llama"
        self.file = f
        self.layers_n = int(f.need(f"{a}.block_count"))
        self.hidden = int(f.need(f"{a}.embedding_length"))
        self.heads = int(f.need(f"{a}.attention.head_count"))
        self.kv_heads = int(f.need(f"{a}.attention.head_count_kv"))
        self.head_dim = self.hidden // self.heads
        self.rope_base = float(f.need(f"{a}.rope.freq_base"))
        self.context = int(f.meta.get(f"{a}.context_length", 2048))
        t = f.tensors
        emb = t["token_embd.weight"]
        if emb.q is None or emb.d is None:
            raise ModelError("token_embd.weight must be a quantized table")
        self.embed_q, self.embed_d = emb.q, emb.d
        self.head = Linear.of(t.get("output.weight", emb))  # tied: the embedding is the LM head
        self.layers = [Layer(
            _gain(t[f"blk.{i}.attn_norm.weight"]), Linear.of(t[f"blk.{i}.attn_q.weight"]),
            Linear.of(t[f"blk.{i}.attn_k.weight"]), Linear.of(t[f"blk.{i}.attn_v.weight"]),
            Linear.of(t[f"blk.{i}.attn_output.weight"]), _gain(t[f"blk.{i}.ffn_norm.weight"]),
            Linear.of(t[f"blk.{i}.ffn_gate.weight"]), Linear.of(t[f"blk.{i}.ffn_up.weight"]),
            Linear.of(t[f"blk.{i}.ffn_down.weight"])) for i in range(self.layers_n)]
        self.out_norm = _gain(t["output_norm.weight"])
        self.tokenizer = GGUFTokenizer.from_gguf(f)
        self.template = ChatTemplate.from_gguf(f)
        self._silu = spec.silu_lut()

    @classmethod
    def from_gguf(cls, path: str | Path) -> "ExactLlama":
        return cls(read_gguf(path))

    # ops -----------------------------------------------------------------------------------
    def embed(self, ids: np.ndarray) -> np.ndarray:
        w = self.embed_q[ids].astype(np.int64) * np.repeat(self.embed_d[ids], blockq.BLOCK, axis=-1)
        return round_div(w, np.int64(1 << (HALF_FRAC - ACT_FRAC)))

    @staticmethod
    def norm(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """RMSNorm of the wide residual stream: x rescaled to ``RMS_BITS`` bits (a massive channel
        must not wipe out the others' precision, as 15 bits would), D = isqrt(mean(ds^2) * 2**8)
        (16 times the RMS), out = round(ds * gain / D) in ``ACT_FRAC`` bits."""
        e = np.maximum(0, bitlen(np.abs(x).max(axis=-1, keepdims=True)) - RMS_BITS)
        ds = (x + ((np.int64(1) << e) >> 1)) >> e
        ms = (ds * ds).sum(axis=-1, keepdims=True) // x.shape[-1]
        den = np.maximum(isqrt(ms << (2 * spec.NORM_STD_SHIFT)), 1)
        return np.clip(round_div(ds * gain, den), -ACT_MAX, ACT_MAX)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
        """q [T, H, D] at positions start.., k and v [S, Hkv, D] (the cache, this step's rows last)."""
        t, s = q.shape[0], k.shape[0]
        group = self.heads // self.kv_heads
        kk = np.repeat(k, group, axis=1)  # [S, H, D]
        vv = np.repeat(v, group, axis=1)
        dot = np.einsum("thd,shd->hts", q, kk)  # exact: |q|, |k| < 2**23, D = 64: < 2**52
        z = round_div(dot, np.int64(1 << (2 * ACT_FRAC - Z_FRAC)))
        # log2(e) / sqrt(D) as the rational LOG2E / 2**16 / 8 (D = 64)
        root = int(round(self.head_dim ** 0.5))
        z = round_div(z * LOG2E, np.int64(root << LOG2E_FRAC))
        causal = (np.arange(s)[None, :] <= (start + np.arange(t))[:, None])  # [T, S]
        table = exp2_table()
        zmax = np.where(causal[None], z, np.iinfo(np.int64).min).max(axis=-1, keepdims=True)
        u = np.where(causal[None], np.minimum(zmax - z, len(table) - 1), len(table) - 1)
        p = table[u]  # [H, T, S] in 0..65535
        num = np.einsum("hts,shd->thd", p, vv)
        return np.clip(round_div(num, p.sum(axis=-1).T[..., None]), -ACT_MAX, ACT_MAX)

    def swiglu(self, layer: Layer, h: np.ndarray) -> np.ndarray:
        g = layer.gate(h, GELU_FRAC, I16_MAX)
        s = self._silu[g + (1 << 15)]  # GELU_FRAC bits
        return np.clip(round_div(s * layer.up(h), np.int64(1 << GELU_FRAC)), -WIDE_MAX, WIDE_MAX)

    def forward(self, ids: np.ndarray, cache: list[tuple[np.ndarray, np.ndarray]], start: int) -> np.ndarray:
        """Logits [T, V] of tokens ``ids`` at positions start.., appending their K and V to ``cache``."""
        t = len(ids)
        cos, sin = rope_table(self.head_dim, self.rope_base, -(-(start + t) // 256) * 256)  # grown in steps
        pos = start + np.arange(t)
        x = self.embed(np.asarray(ids))
        for i, layer in enumerate(self.layers):
            h = self.norm(x, layer.attn_norm)
            q = rope(layer.q(h).reshape(t, self.heads, self.head_dim), pos, cos, sin)
            k = rope(layer.k(h).reshape(t, self.kv_heads, self.head_dim), pos, cos, sin)
            v = layer.v(h).reshape(t, self.kv_heads, self.head_dim)
            if i < len(cache):
                k, v = np.concatenate([cache[i][0], k]), np.concatenate([cache[i][1], v])
                cache[i] = (k, v)
            else:
                cache.append((k, v))
            ctx = self.attention(q, k, v, start).reshape(t, self.hidden)
            x = np.clip(x + layer.o(ctx, out_max=WIDE_MAX), -WIDE_MAX, WIDE_MAX)
            ffn = layer.down(self.swiglu(layer, self.norm(x, layer.ffn_norm)), out_max=WIDE_MAX)
            x = np.clip(x + ffn, -WIDE_MAX, WIDE_MAX)
        return self.head(self.norm(x, self.out_norm))

    def generate(self, prompt_ids: list[int], max_tokens: int, stop: tuple[int, ...] = ()) -> list[int]:
        """Greedy decoding: the prompt as one step (prefill), then one step per token, until a stop
        token (the file's EOS by default) or ``max_tokens``."""
        if len(prompt_ids) + max_tokens > self.context:
            raise InputError(f"{len(prompt_ids)} prompt tokens plus max_tokens {max_tokens} exceed the context of "
                             f"{self.context}")
        stops = set(stop) | {self.tokenizer.eos}
        cache: list[tuple[np.ndarray, np.ndarray]] = []
        logits = self.forward(np.array(prompt_ids), cache, 0)[-1]
        out: list[int] = []
        while len(out) < max_tokens:
            token = int(np.argmax(logits))
            out.append(token)
            if token in stops:
                break
            logits = self.forward(np.array([token]), cache, len(prompt_ids) + len(out) - 1)[-1]
        return out

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = 64) -> str:
        ids = self.tokenizer.encode(self.template.render(messages))
        return self.tokenizer.decode(self.generate(ids, max_tokens))
