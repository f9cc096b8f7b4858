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
from veracity.training.tape import NULL_TAPE, StepRecorder, Tape

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


def halves(t: np.ndarray) -> np.ndarray:
    """A tensor with rows of ``intermediate`` values (the adapter A, its moments, its gradient) as a
    record holds it: each row in two halves, [r, 2, intermediate / 2], so a row fits a dispute's chunk."""
    return t.reshape(t.shape[0], 2, t.shape[1] // 2)


def step_inputs(f: Features, labels: np.ndarray, gamma: np.ndarray,
                beta: np.ndarray) -> list[tuple[str, np.ndarray, Any]]:
    """A step's batch as input records (name, tensor, dtype): the frozen features of its sentences'
    tokens (the residual sum, the GELU activations as int16), each sentence's first token, the
    labels, and the LayerNorm's gain and bias (read every step, so a step's own records)."""
    return [("batch.res", f.res, np.int64), ("batch.u", f.u, np.int16), ("batch.starts", f.starts, np.int64),
            ("batch.labels", labels, np.int64), ("norm.gamma", gamma, np.int64), ("norm.beta", beta, np.int64)]


def lora_step(state: LoraState, f: Features, labels: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
              cfg: X.SGDConfig, backend: str = "numpy", lora_lr_shift: int = 0, tape: Tape = NULL_TAPE) -> LoraState:
    """One optimizer step on a batch of sentences (a new state; ``state`` is not changed). With a
    tape (``f`` then holds the GELU activations ``u`` too), every op is a record: the batch, the
    adapter's GEMMs, the LayerNorm, the mean pool, the head, the loss, every backward op (the
    adapter's gradient through u's per-token int8 form: its scales, the scaled gradient, u's int8
    values transposed) and each state tensor's update."""
    from veracity.exact import program as P
    from veracity.training.mlp import update_params

    s = state.copy()
    a, b, w, hb = s.params
    r = StepRecorder(tape, s.step + 1)
    on, at = r.on, r.state
    ids = {name: r.input(name, x, dtype) for name, x, dtype in step_inputs(f, labels, gamma, beta)}
    fw: dict[str, Any] = {}  # the forward (``forward``'s), each op recorded before the next reads it
    x, ix = f.res, ids["batch.res"]
    if s.rank:
        fw["v"] = X.qmatmul(None, spec.GELU_FRAC, a, W, ACT, backend, xq=f.uq)  # [tokens, r]
        iv = r(P.QMM_W2, "lora.v", fw["v"], (ids["batch.u"], at("lora.A")), params=(ACT - spec.GELU_FRAC - W,))
        bv = X.qmatmul(fw["v"], ACT, b, W, ACT, backend)
        ibv = r(P.QMM, "lora.bv", bv, (iv, at("lora.B")), params=(-W, -1))
        x = x + bv
        ix = r(P.SUM, "lora.x", x, (ix, ibv))
    z, fw["norm"] = layernorm(x, gamma, beta, backend)
    iz = r(P.LN_REC, "norm", z, (ix, ids["norm.gamma"], ids["norm.beta"]))
    izt = r(P.TRANSPOSE, "norm.z_t", lambda: z.T, (iz,))
    fw["pooled"] = mean_pool(z, f.starts)
    ipool = r(P.SEG_MEAN, "pool", fw["pooled"], (izt, ids["batch.starts"]))
    fw["logits"] = X.qmatmul(fw["pooled"], ACT, w, W, ACT, backend) + (hb >> (W - ACT))
    ilog = r(P.QMM, "head", fw["logits"], (ipool, at("head.w"), at("head.b")), params=(-W, W - ACT))
    if on:  # each recorded before the next reads it (untraced: one pass, the same integers)
        pexp = X.exp_rows(fw["logits"])
        ipe = r(P.EXP_ROWS, "loss.exp", pexp, (ilog,), consts=(X.exp_table_digest(),))
        dlogits = X.loss_grad(pexp, labels)
    else:
        pexp, dlogits = X.loss_pair(fw["logits"], labels, backend)
        ipe = -1
    idl = r(P.LOSS_GRAD, "loss.grad", dlogits, (ipe, ids["batch.labels"]))
    idlt = r(P.TRANSPOSE, "head.dy_t", lambda: dlogits.T, (idl,))
    ipt = r(P.TRANSPOSE, "head.x_t", lambda: fw["pooled"].T, (ipool,))
    grads = [np.zeros_like(a), np.zeros_like(b),
             X.qmatmul(dlogits.T, ACT, fw["pooled"].T, ACT, W, backend),
             dlogits.sum(axis=0) << (W - ACT)]
    gat = [-1, -1, r(P.QMM, "head.gw", grads[2], (idlt, ipt), params=(W - 2 * ACT, -1)),
           r(P.ROW_SUM, "head.gb", grads[3], (idlt,), params=(W - ACT,))]
    if s.rank:
        iwt = r(P.TRANSPOSE, "head.w_t", lambda: w.T, (at("head.w"),))
        dpooled = X.qmatmul(dlogits, ACT, w.T, W, G, backend)  # [sentences, hidden]
        idp = r(P.QMM, "head.dx", dpooled, (idl, iwt), params=(G - ACT - W, -1))
        counts = np.diff(f.starts)  # the mean's gradient: the same for every token of a sentence
        dz = np.repeat(X.round_shift(dpooled, counts[:, None], 0), counts, axis=0)
        idz = r(P.SEG_SPREAD, "pool.dz", dz, (idp, ids["batch.starts"]))
        dx = layernorm_backward(dz, gamma, fw["norm"], backend)  # [tokens, hidden]
        idx = r(P.LN_BWD, "norm.dx", dx, (idz, ix, ids["norm.gamma"]))
        idxt = r(P.TRANSPOSE, "lora.dx_t", lambda: dx.T, (idx,))
        ivt = r(P.TRANSPOSE, "lora.v_t", lambda: fw["v"].T, (iv,))
        grads[1] = X.qmatmul(dx.T, G, fw["v"].T, ACT, W, backend)  # over the tokens
        gat[1] = r(P.QMM, "lora.gB", grads[1], (idxt, ivt), params=(W - G - ACT, -1))
        ibt = r(P.TRANSPOSE, "lora.B_t", lambda: b.T, (at("lora.B"),))
        dv = X.qmatmul(dx, G, b.T, W, G, backend)
        idv = r(P.QMM, "lora.dv", dv, (idx, ibt), params=(-W, -1))
        if not on:
            grads[0] = _grad_a(dv, f.uq, backend)
        else:  # the same integers (``_grad_a``'s reference path), each stage recorded before the next reads it
            q, ams, e = f.uq
            scale = np.concatenate([ams, e], axis=1)
            isc = r(P.ROW_QSCALE, "lora.u_scale", scale, (ids["batch.u"],))
            dvs = (dv * scale[:, :1]) << scale[:, 1:]
            idvs = r(P.QSCALE_MUL, "lora.dv_scaled", dvs, (idv, isc))
            idvst = r(P.TRANSPOSE, "lora.dv_scaled_t", lambda: dvs.T, (idvs,))
            qt = np.ascontiguousarray(q.T, dtype=np.int64)
            iqt = r(P.QUANT_T, "lora.u_q_t", qt, (ids["batch.u"],), dtype=np.int8)
            qd, ad, ed = X.quantize_rows(dvs.T)
            acc = X.gemm(qd, qt.astype(np.int64 if backend == "numpy" else np.float32), backend)
            grads[0] = X.round_shift(acc * ad, spec.QMAX * spec.QMAX, ed + W - G - spec.GELU_FRAC)
            gat[0] = r(P.QMM_INT8W, "lora.gA", lambda: halves(grads[0]), (idvst, iqt), params=(W - G - spec.GELU_FRAC,))
    lora_cfg = replace(cfg, lr_num=max(1, cfg.lr_num >> lora_lr_shift))
    ups = {False: update_params(cfg, len(labels)), True: update_params(lora_cfg, len(labels))} if on else {}
    for i, g in enumerate(grads):
        s.params[i], s.m[i], s.s[i] = X.update(s.params[i], s.m[i], s.s[i], g, len(labels), lora_cfg if i < 2 else cfg,
                                                        backend)
        if on and (i >= 2 or s.rank):
            name, view = LoraState.NAMES[i], halves if i == 0 else (lambda t: t)
            r.update((f"m.{name}", f"s.{name}", name), (view(s.m[i]), view(s.s[i]), view(s.params[i])), gat[i],
                     ups[i < 2])
    s.step += 1
    return s


def coarse_names(state: LoraState) -> list[str]:
    """The record names a step leaves its state under, in record order (each trained tensor's
    first and second moment, then the tensor; a rank-0 job trains the head alone)."""
    names = LoraState.NAMES if state.rank else LoraState.NAMES[2:]
    return [n for name in names for n in (f"state.m.{name}", f"state.s.{name}", f"state.{name}")]


def coarse_tensors(state: LoraState) -> list[np.ndarray]:
    keep = range(4) if state.rank else range(2, 4)
    view = lambda i, t: halves(t) if i == 0 else t  # noqa: E731
    return [view(i, t) for i in keep for t in (state.m[i], state.s[i], state.params[i])]


def batch_indices(n: int, step: int, cfg: X.SGDConfig) -> np.ndarray:
    return X.batch_indices(n, step, cfg)


def finetune(state: LoraState, f: Features, labels: np.ndarray, gamma: np.ndarray, beta: np.ndarray, steps: int,
             cfg: X.SGDConfig, backend: str = "numpy", progress: Any = None, lora_lr_shift: int = 0,
             tape: Tape = NULL_TAPE) -> LoraState:
    """``steps`` steps from ``state`` (which carries its step counter, so a work unit resumes)."""
    for _ in range(steps):
        idx = X.batch_indices(len(labels), state.step, cfg)
        state = lora_step(state, f.sentences(idx, with_u=tape.on), labels[idx], gamma, beta, cfg, backend,
                          lora_lr_shift, tape)
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
