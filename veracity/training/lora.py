"""Exact fine-tuning of the MiniLM encoder: a classification head, and LoRA adapters inside the
encoder's last layer, trained in integers so a checkpoint's hash is the same on every machine.

What trains, and why only there. The adapter is rank ``r`` on the last layer's FFN down-projection
(``ffn_out``, 1536 -> 384): ``x = res + W2 u + B (A u)``, then the layer's LayerNorm, mean pooling
over the sentence's tokens, and the head. Everything before ``u`` (the GELU activations) and
``res`` (the residual) is frozen, so it is computed once per sentence by the exact encoder
(``features``: the same ops and bits as inference) and the step's backward pass needs only the
head, the mean pool, the LayerNorm and the adapter: no backward through attention or GELU.

The step (``lora_step``), all in integers, with ``exact.integer``'s primitives:

* **Forward**: ``v = u A^T`` and ``B v`` as per-row int8 GEMMs (``train.qmatmul``); the LayerNorm
  exactly as the inference op set computes it (``layernorm``), keeping its per-token centre shift,
  scale ``D`` and normalised values for the backward; the mean over each sentence's tokens (a
  rounding division); the head's logits.
* **Backward**: softmax cross-entropy (``train.loss_pair``), the head's gradients, the pooled
  gradient spread over the tokens, the LayerNorm's backward
  ``dx = (g - mean(g) - xhat * mean(g * xhat)) / sigma`` with ``g = gamma * dz`` (every term a
  rounding integer division; ``sigma`` from the forward's integer square root), then the adapter's
  ``dB = dx^T v`` and ``dA = (dx B)^T u`` (contractions over the batch's tokens, chunked exactly).
  Gradients inside the encoder are kept with ``G`` = 20 fractional bits.
* **Update**: ``train.update`` (SGD, momentum or Adam in fixed point) on A, B, the head's weights
  and bias.

``rank = 0`` trains the head alone on the frozen encoder's pooled features: the baseline a LoRA
fine-tune has to beat.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from veracity.exact import integer as X
from veracity.exact import ops_native as N
from veracity.exact import spec
from veracity.exact.ops_numpy import normalize, round_div
from veracity.exact.trace import tensor_digest
from veracity.training import checkpoint as CK
from veracity.training import mlp as MLP

ACT = spec.ACT_FRAC
W = X.W_FRAC
G = 20  # gradients inside the encoder (a pooled gradient spread over ~10 tokens is ~1e-3: 12 bits lose it)


@dataclass(frozen=True)
class Features:
    """The frozen encoder's exact activations at the last layer, tokens of all sentences stacked."""

    res: np.ndarray  # [tokens, hidden] the residual sum before the last LayerNorm (ACT_FRAC)
    u: np.ndarray  # [tokens, intermediate] the last layer's GELU output (GELU_FRAC)
    starts: np.ndarray  # [sentences + 1] each sentence's first token; the last entry is the total
    uq: tuple[np.ndarray, np.ndarray, np.ndarray] = ()  # type: ignore[assignment]  # u per token, int8 values

    def __post_init__(self) -> None:
        if not self.uq:  # frozen, so quantized once (per token: the same bits whatever the batch)
            q, ams, e = X.quantize_rows(self.u)  # int16 storage: the native GEMM's operand type
            object.__setattr__(self, "uq", (q.astype(np.int16), ams, e))

    def sentences(self, idx: np.ndarray, with_u: bool = True) -> "Features":
        """The features of sentences ``idx`` (in that order); ``with_u=False`` leaves out the
        GELU activations themselves (an exact step reads only their int8 form)."""
        lens = self.starts[idx + 1] - self.starts[idx]
        starts = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        rows = np.repeat(self.starts[idx] - starts[:-1], lens) + np.arange(starts[-1])
        return Features(self.res[rows], self.u[rows] if with_u else self.u[:0], starts,
                        tuple(t[rows] for t in self.uq))

    def __len__(self) -> int:
        return len(self.starts) - 1


def features(model: Any, texts: list[str], backend: str = "torch", batch_size: int = 32,
             progress: Callable[[int], None] | None = None) -> Features:
    """Run the exact encoder on ``texts`` and keep, per token, the last layer's residual sum before
    its LayerNorm and its GELU activations (the same bits an ``infer`` job's trace holds)."""
    from veracity.exact.execute import Exec, make_backend

    last = f"layer.{len(model.layers) - 1}."
    kept: dict[str, list[np.ndarray]] = {"res2": [], "gelu": [], "mask": []}

    def hook(_i: int, op: str, x: Any) -> Any:
        name = op.removeprefix(last) if op.startswith(last) else op.removeprefix("input.")
        if name in kept:
            kept[name].append(np.array(x.numpy() if hasattr(x, "numpy") else x, dtype=np.int64))
        return x

    ex = Exec(make_backend("torch" if backend in ("native", "cuda", "torch-eager") else backend), None, hook)
    items = [model.parse({"text": t}) for t in texts]
    for lo in range(0, len(items), batch_size):
        model.run(ex, items[lo:lo + batch_size])
        if progress:
            progress(min(lo + batch_size, len(items)))
    res, u, lens = [], [], []
    for r, g, m in zip(kept["res2"], kept["gelu"], kept["mask"]):
        for b in range(m.shape[0]):
            n = int(m[b].sum())
            res.append(r[b, :n])
            u.append(g[b, :n])
            lens.append(n)
    return Features(np.concatenate(res), np.concatenate(u), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))


# the LayerNorm, forward and backward ---------------------------------------------------------------
@dataclass(frozen=True)
class NormCache:
    ds: np.ndarray  # the centred input shifted right by e (NORM_BITS bits)
    e: np.ndarray  # [tokens, 1] the shift
    den: np.ndarray  # [tokens, 1] D = isqrt(mean(ds^2) * 2**8), about 16 * std(ds)


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, backend: str = "numpy") -> tuple[np.ndarray, NormCache]:
    """The inference op set's LayerNorm (``ops_numpy.layernorm``), keeping what its backward reads
    (the native backend: one C pass per row, ``native.c: vt_layernorm``, the same integers)."""
    if (lib := X.fast(backend)) is not None:
        a = np.ascontiguousarray(x, dtype=np.int64)
        rows, h = a.shape
        out, ds = np.empty_like(a), np.empty_like(a)
        e, den = np.empty((rows, 1), dtype=np.int64), np.empty((rows, 1), dtype=np.int64)
        g, b = np.ascontiguousarray(gamma, dtype=np.int64), np.ascontiguousarray(beta, dtype=np.int64)
        lib.vt_layernorm(a.ctypes.data, rows, h, g.ctypes.data, b.ctypes.data, out.ctypes.data, ds.ctypes.data,
                         e.ctypes.data, den.ctypes.data, N.threads(a.size))
        return out, NormCache(ds, e, den)
    out, ds, e, den = normalize(x - round_div(x.sum(axis=-1, keepdims=True), np.int64(x.shape[-1])), gamma, beta)
    return out, NormCache(ds, e, den)


def layernorm_backward(dz: np.ndarray, gamma: np.ndarray, c: NormCache, backend: str = "numpy") -> np.ndarray:
    """dx from dz (both in the same fixed point): ``(g - mean(g) - xhat * mean(g * xhat)) / sigma``,
    with ``g = gamma * dz``, ``xhat = 16 ds / D`` and ``sigma = D * 2**e / (16 * 2**ACT_FRAC)``
    (the input is ``ACT_FRAC``), in integers."""
    if (lib := X.fast(backend)) is not None:
        d = np.ascontiguousarray(dz, dtype=np.int64)
        rows, h = d.shape
        dx, scratch = np.empty_like(d), np.empty((rows, 2 * h), dtype=np.int64)
        g = np.ascontiguousarray(gamma, dtype=np.int64)
        lib.vt_layernorm_backward(d.ctypes.data, rows, h, g.ctypes.data, np.ascontiguousarray(c.ds, dtype=np.int64).ctypes.data,
                                  np.ascontiguousarray(c.e, dtype=np.int64).ctypes.data, np.ascontiguousarray(c.den, dtype=np.int64).ctypes.data,
                                  dx.ctypes.data, scratch.ctypes.data, N.threads(d.size))
        return dx
    h = dz.shape[-1]
    shift = ACT + spec.NORM_STD_SHIFT  # gamma's fixed point
    g = X.round_shift(dz * gamma, 1, -shift)
    xhat = X.round_shift(c.ds, c.den, spec.NORM_STD_SHIFT + ACT)
    m1 = round_div(g.sum(axis=-1, keepdims=True), np.int64(h))
    m2 = X.round_shift((g * xhat).sum(axis=-1, keepdims=True), h, -ACT)
    t = g - m1 - X.round_shift(xhat * m2, 1, -ACT)
    return X.round_shift(t, c.den, ACT + spec.NORM_STD_SHIFT - c.e)


# the state ---------------------------------------------------------------------------------------
@dataclass
class LoraState:
    """The adapter (A [r, intermediate], B [hidden, r]), the head (w [classes, hidden], b), their
    optimizer moments (m: momentum or Adam's first, s: Adam's second), all ``W_FRAC``, and the step."""

    params: list[np.ndarray]  # A, B, w, b (A and B empty when rank is 0)
    m: list[np.ndarray] = field(default_factory=list)
    s: list[np.ndarray] = field(default_factory=list)
    step: int = 0

    NAMES = ("lora.A", "lora.B", "head.w", "head.b")

    @classmethod
    def init(cls, rank: int, classes: int, hidden: int = 384, intermediate: int = 1536,
             seed: int = 0) -> "LoraState":
        """LoRA's initialisation: A uniform in +-1/sqrt(intermediate), B zero (so the adapter
        starts as the identity), the head uniform in +-1/sqrt(hidden); a seeded PCG64."""
        rng = np.random.Generator(np.random.PCG64(seed))

        def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
            bound = int((1 << W) / np.sqrt(np.float64(fan_in)))
            return rng.integers(-bound, bound + 1, shape).astype(np.int64)

        a = uniform((rank, intermediate), intermediate)
        b = np.zeros((hidden, rank), dtype=np.int64)
        params = [a, b, uniform((classes, hidden), hidden), np.zeros(classes, dtype=np.int64)]
        return cls(params, [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params], 0)

    @property
    def rank(self) -> int:
        return self.params[0].shape[0]

    def tensors(self) -> list[np.ndarray]:
        return [*self.params, *self.m, *self.s, np.array([self.step], dtype=np.int64)]

    def copy(self) -> "LoraState":
        return replace(self, params=[p.copy() for p in self.params], m=[t.copy() for t in self.m],
                       s=[t.copy() for t in self.s])


def checkpoint_bytes(state: LoraState) -> bytes:
    return CK.pack_tensors(state.tensors())


def load_checkpoint(blob: bytes) -> LoraState:
    ts = CK.unpack_tensors(blob)
    if len(ts) != 13 or ts[-1].shape != (1,):
        raise ValueError("malformed: not a LoRA fine-tune checkpoint (A, B, head w and b, two moments each, a step)")
    return LoraState(ts[0:4], ts[4:8], ts[8:12], int(ts[12][0]))


def checkpoint_hash(state: LoraState) -> bytes:
    return hashlib.sha256(b"".join(tensor_digest(t) for t in state.tensors())).digest()


# forward, backward, step -------------------------------------------------------------------------
def mean_pool(z: np.ndarray, starts: np.ndarray) -> np.ndarray:
    counts = np.diff(starts)[:, None]
    return round_div(np.add.reduceat(z, starts[:-1], axis=0), counts)


def forward(state: LoraState, f: Features, gamma: np.ndarray, beta: np.ndarray, backend: str) -> dict[str, Any]:
    a, b, w, hb = state.params
    out: dict[str, Any] = {}
    x = f.res
    if state.rank:
        out["v"] = X.qmatmul(None, spec.GELU_FRAC, a, W, ACT, backend, xq=f.uq)  # [tokens, r]
        x = x + X.qmatmul(out["v"], ACT, b, W, ACT, backend)
    z, out["norm"] = layernorm(x, gamma, beta, backend)
    out["pooled"] = mean_pool(z, f.starts)
    out["logits"] = X.qmatmul(out["pooled"], ACT, w, W, ACT, backend) + (hb >> (W - ACT))
    return out


def _grad_a(dv: np.ndarray, uq: tuple[np.ndarray, np.ndarray, np.ndarray], backend: str) -> np.ndarray:
    """dA = dv^T u over the tokens, with u as its per-token int8 form (computed once): each token's
    scale is folded into dv, whose rows (one per rank) are then quantized, one exact GEMM with the
    int8 u, and one rescale: ``dA ~ sum_t dv[t] * q_u[t] * s_t``."""
    q, ams, e = uq
    dvs = (dv * ams) << e  # [tokens, r]: dv times each token's scale (up to the common 1/127)
    if (lib := X.fast(backend)) is not None:  # u's int8 rows are already dA's transposed operand
        ones = np.ones(q.shape[1], dtype=np.int64)
        out = N.native_qmatmul(lib, dvs.T, None, W - G - spec.GELU_FRAC, wq=(q, ones, ones - 1))
        if out is not None:
            return out
    qd, ad, ed = X.quantize_rows(dvs.T)
    acc = X.gemm(qd, q.T.astype(np.int64 if backend == "numpy" else np.float32), backend)  # [r, intermediate]
    return X.round_shift(acc * ad, spec.QMAX * spec.QMAX, ed + W - G - spec.GELU_FRAC)


def lora_step(state: LoraState, f: Features, labels: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
              cfg: X.SGDConfig, backend: str = "numpy", lora_lr_shift: int = 0) -> LoraState:
    """One optimizer step on a batch of sentences (a new state; ``state`` is not changed)."""
    s = state.copy()
    a, b, w, hb = s.params
    fw = forward(s, f, gamma, beta, backend)
    dlogits = X.loss_pair(fw["logits"], labels, backend)[1]
    grads = [np.zeros_like(a), np.zeros_like(b),
             X.qmatmul(dlogits.T, ACT, fw["pooled"].T, ACT, W, backend),
             dlogits.sum(axis=0) << (W - ACT)]
    if s.rank:
        dpooled = X.qmatmul(dlogits, ACT, w.T, W, G, backend)  # [sentences, hidden]
        counts = np.diff(f.starts)  # the mean's gradient: the same for every token of a sentence
        dz = np.repeat(X.round_shift(dpooled, counts[:, None], 0), counts, axis=0)
        dx = layernorm_backward(dz, gamma, fw["norm"], backend)  # [tokens, hidden]
        grads[1] = X.qmatmul(dx.T, G, fw["v"].T, ACT, W, backend)  # over the tokens
        dv = X.qmatmul(dx, G, b.T, W, G, backend)
        grads[0] = _grad_a(dv, f.uq, backend)
    lora_cfg = replace(cfg, lr_num=max(1, cfg.lr_num >> lora_lr_shift))
    for i, g in enumerate(grads):
        s.params[i], s.m[i], s.s[i] = X.update(s.params[i], s.m[i], s.s[i], g, len(labels), lora_cfg if i < 2 else cfg,
                                                        backend)
    s.step += 1
    return s


def batch_indices(n: int, step: int, cfg: X.SGDConfig) -> np.ndarray:
    return X.batch_indices(n, step, cfg)


def finetune(state: LoraState, f: Features, labels: np.ndarray, gamma: np.ndarray, beta: np.ndarray, steps: int,
             cfg: X.SGDConfig, backend: str = "numpy", progress: Any = None, lora_lr_shift: int = 0) -> LoraState:
    """``steps`` steps from ``state`` (which carries its step counter, so a work unit resumes)."""
    for _ in range(steps):
        idx = X.batch_indices(len(labels), state.step, cfg)
        state = lora_step(state, f.sentences(idx, with_u=False), labels[idx], gamma, beta, cfg, backend, lora_lr_shift)
        if progress:
            progress(state.step)
    return state


def predict(state: LoraState, f: Features, gamma: np.ndarray, beta: np.ndarray, backend: str = "numpy") -> np.ndarray:
    return np.argmax(forward(state, f, gamma, beta, backend)["logits"], axis=1)


# the float32 reference ---------------------------------------------------------------------------
def finetune_float(state: LoraState, f: Features, labels: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                   steps: int, cfg: X.SGDConfig, lora_lr_shift: int = 0) -> tuple[Any, Callable[[Features], np.ndarray]]:
    """The same adapter, head, initialisation, data order, optimizer and learning rates in float32
    torch with autograd, on the same frozen features: the reference for accuracy and speed. Returns the
    trained parameters and a predict function."""
    import torch

    def ten(x: np.ndarray, frac: int) -> Any:
        return torch.tensor(x / (1 << frac), dtype=torch.float32)

    params = [ten(p, W).requires_grad_(True) for p in state.params]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    g_f, b_f = ten(gamma, ACT + spec.NORM_STD_SHIFT), ten(beta, ACT)

    def logits(ff: Features) -> Any:
        a, b, w, hb = params
        x = ten(ff.res, ACT)
        if a.shape[0]:
            x = x + (ten(ff.u, spec.GELU_FRAC) @ a.T) @ b.T
        z = torch.nn.functional.layer_norm(x, (x.shape[-1],), g_f, b_f, eps=1e-12)
        seg = torch.from_numpy(np.repeat(np.arange(len(ff)), np.diff(ff.starts)))
        pooled = torch.zeros(len(ff), z.shape[1]).index_add_(0, seg, z) / torch.from_numpy(
            np.diff(ff.starts)).float()[:, None]
        return pooled @ w.T + hb

    y_all = torch.tensor(labels, dtype=torch.int64)
    lora_cfg = replace(cfg, lr_num=max(1, cfg.lr_num >> lora_lr_shift))
    for step in range(state.step, state.step + steps):
        idx = X.batch_indices(len(labels), step, cfg)
        loss = torch.nn.functional.cross_entropy(logits(f.sentences(idx)), y_all[torch.from_numpy(idx)])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for i, (p, (v, sq), g) in enumerate(zip(params, moments, grads)):
                if g is not None:
                    MLP.float_update(p, v, sq, g, lora_cfg if i < 2 else cfg)

    def predict_f(ff: Features) -> np.ndarray:
        with torch.no_grad():
            return logits(ff).argmax(dim=1).numpy()

    return params, predict_f
