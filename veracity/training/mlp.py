"""Exact training: every value an optimizer step computes is an integer, so a checkpoint's hash is
the same on any machine, thread count or backend, and a training step can be re-executed and
disputed like an inference op.

The digits MLP's step (``mlp_step``), all in integers:

* **Master weights and optimizer state** are int64 fixed point (``W_FRAC`` fractional bits).
* **Forward**: each layer's master weights are quantized per output channel to int8 (the
  inference op set's per-row quantizer: a max, a 12-bit rescale and a reciprocal, all exact),
  activations per row (per sample); the GEMM runs on the int8 operands (``gemm``: int64 in
  NumPy, or float32 in torch, exact because every partial sum is an integer below 2**24 for
  contractions up to 1040), and the integer accumulator is rescaled to ``ACT_FRAC`` by a rounding
  division; ReLU; logits.
* **Loss gradient**: softmax cross-entropy, with exp from a table (``exp_table``, computed with
  mpmath): ``dz = p / sum(p) - onehot`` in ``ACT_FRAC``.
* **Backward**: ``dW = dz^T x`` (contracting over the batch, operands quantized per row of the
  transposes), ``dx = dz W`` (contracting over the outputs, the weights quantized per input
  column), the ReLU mask, bias gradients as exact integer sums; each gradient is clipped
  elementwise in integers.
* **Update**: SGD (``mu_num = 0``), SGD with momentum, ``v = v * mu_num >> MU_SHIFT + g;
  W -= v * lr_num >> LR_SHIFT``, or Adam, ``m = b1 m + (1 - b1) g; s = b2 s + (1 - b2) g^2;
  W -= lr m / (isqrt(s) + eps)`` with an integer square root (no bias correction: a warm start).
* **Data order**: the epoch's permutation from a PCG64 generator seeded by (seed, epoch), which
  NumPy specifies bit for bit on every platform.

A checkpoint is the state's tensors in canonical form (``checkpoint_bytes``); its hash
(``checkpoint_hash``) is what a training job commits. A job of N steps split into work units of K
steps, each starting from the previous unit's checkpoint, ends at the same hash as the unsplit
job, because the state carries everything a step reads (the step counter included).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from veracity.exact.integer import (
    ACT_FRAC,
    LR_SHIFT,
    MU_SHIFT,
    OPT_CODES,
    W_FRAC,
    SGDConfig,
    batch_indices,
    exp_table_digest,
    loss_pair,
    qmatmul,
    update,
)
from veracity.exact.trace import tensor_digest
from veracity.training.checkpoint import pack_tensors, unpack_tensors
from veracity.training.tape import NULL_TAPE, StepRecorder, Tape

PIX_FRAC = 4  # pixels 0..16 are value * 16


@dataclass
class MLPState:
    """Master weights and biases (``W_FRAC``), momenta, and the step counter."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    vw: list[np.ndarray] = field(default_factory=list)  # momentum, or Adam's first moment
    vb: list[np.ndarray] = field(default_factory=list)
    sw: list[np.ndarray] = field(default_factory=list)  # Adam's second moment (W_FRAC * 2 bits)
    sb: list[np.ndarray] = field(default_factory=list)
    step: int = 0

    @classmethod
    def init(cls, sizes: tuple[int, ...] = (64, 128, 64, 10), seed: int = 0) -> "MLPState":
        """He-uniform weights drawn from a seeded PCG64 (bit for bit on every platform), zero biases."""
        rng = np.random.Generator(np.random.PCG64(seed))
        ws = [rng.integers(-(1 << W_FRAC), 1 << W_FRAC, (b, a)) * int(np.sqrt(6 / a) * 1024) >> 10
              for a, b in zip(sizes, sizes[1:])]
        bs = [np.zeros(b, dtype=np.int64) for b in sizes[1:]]
        zeros = lambda ts: [np.zeros_like(t) for t in ts]  # noqa: E731
        return cls(ws, bs, zeros(ws), zeros(bs), zeros(ws), zeros(bs), 0)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The layer widths, input first (read from the weights' shapes)."""
        return tuple(int(d) for d in (self.weights[0].shape[-1], *(w.shape[0] for w in self.weights)))

    def tensors(self) -> list[np.ndarray]:
        return [*self.weights, *self.biases, *self.vw, *self.vb, *self.sw, *self.sb,
                np.array([self.step], dtype=np.int64)]

    def copy(self) -> "MLPState":
        cp = lambda ts: [t.copy() for t in ts]  # noqa: E731
        return replace(self, weights=cp(self.weights), biases=cp(self.biases), vw=cp(self.vw), vb=cp(self.vb),
                       sw=cp(self.sw), sb=cp(self.sb))


def checkpoint_bytes(state: MLPState) -> bytes:
    """The state as a blob (a checkpoint's CID is this blob's; ``pack_tensors``)."""
    return pack_tensors(state.tensors())


def load_checkpoint(blob: bytes) -> MLPState:
    """The MLP state a checkpoint blob holds; ValueError (what is wrong) for bytes that are not one."""
    ts = unpack_tensors(blob)
    if len(ts) % 6 != 1 or ts[-1].shape != (1,):
        raise ValueError("malformed: not six groups of state tensors and a step counter")
    n = (len(ts) - 1) // 6
    ws, bs, vw, vb, sw, sb = (ts[k * n:(k + 1) * n] for k in range(6))
    state = MLPState(ws, bs, vw, vb, sw, sb, step=int(ts[-1][0]))
    if n < 1 or any(w.ndim != 2 or 0 in w.shape for w in state.weights) or \
            [t.shape for t in state.tensors()] != [t.shape for t in MLPState.init(state.sizes).tensors()]:
        raise ValueError("malformed: the layers' weights, biases and moments do not chain into one MLP")
    if any(int(np.abs(t).max(initial=0)) >= 1 << 44 for t in state.tensors()[:-1]) or \
            any(int(t.min(initial=0)) < 0 for t in (*state.sw, *state.sb)) or not 0 <= state.step < 1 << 32:
        raise ValueError("values out of range: |weights and moments| < 2**44, second moments >= 0")
    return state


def checkpoint_hash(state: MLPState) -> bytes:
    """sha256 over the tensor digests of the state (independent of the blob's container)."""
    return hashlib.sha256(b"".join(tensor_digest(t) for t in state.tensors())).digest()


def forward(state: MLPState, pixels: np.ndarray, backend: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Activations of every layer's input (``ACT_FRAC``; the pixels in ``PIX_FRAC``) and the logits."""
    acts = [np.asarray(pixels, dtype=np.int64)]
    frac = PIX_FRAC
    h = acts[0]
    for i, (w, b) in enumerate(zip(state.weights, state.biases)):
        z = qmatmul(h, frac, w, W_FRAC, ACT_FRAC, backend) + (b >> (W_FRAC - ACT_FRAC))
        frac = ACT_FRAC
        if i < len(state.weights) - 1:
            h = np.maximum(z, 0)
            acts.append(h)
        else:
            return acts, z
    raise AssertionError("unreachable")


def state_tensors(state: "MLPState") -> list[tuple[str, np.ndarray]]:
    """The state's tensors by record name: ``state.w0``, ``state.b0``, ``state.m0`` (the weights'
    momentum or first moment), ``state.mb0``, ``state.s0`` (second moment), ``state.sb0``, ..."""
    groups = (("w", state.weights), ("b", state.biases), ("m", state.vw), ("mb", state.vb), ("s", state.sw),
              ("sb", state.sb))
    return [(f"state.{name}{i}", t) for name, ts in groups for i, t in enumerate(ts)]


def update_params(cfg: SGDConfig, batch: int) -> dict[str, tuple[int, int]]:
    """The two parameters each update record's descriptor carries (the contract reads two)."""
    code = OPT_CODES[cfg.optimizer]
    grad = batch | cfg.clip << 16  # the batch mean and the clip, applied to the summed gradient
    first = cfg.b1_num if cfg.optimizer == "adam" else cfg.mu_num
    return {"moment": (code | first << 8, grad), "second": (code | cfg.b2_num << 8, grad),
            "weight": (code | cfg.lr_num << 8, cfg.eps)}


def mlp_step(state: MLPState, pixels: np.ndarray, labels: np.ndarray, cfg: SGDConfig, backend: str = "numpy",
             tape: Tape = NULL_TAPE) -> MLPState:
    """One optimizer step on a batch (a new state; ``state`` is not changed). With a tape, every
    op is a record: the batch (inputs), each layer's GEMM and ReLU, the exp rows and the loss
    gradient, the transposes the backward GEMMs contract over, the weight and bias gradients, the
    ReLU mask, and each state tensor's update (its moment, second moment, then the tensor)."""
    from veracity.exact import program as P

    s = replace(state, weights=list(state.weights), biases=list(state.biases), vw=list(state.vw),
                vb=list(state.vb), sw=list(state.sw), sb=list(state.sb))  # updates make new arrays
    step, n, t = s.step + 1, len(s.weights), tape
    on = t.on  # an untraced step builds no record arguments
    ix = t.input(step, "batch.x", pixels) if on else -1
    iy = t.input(step, "batch.y", labels) if on else -1
    acts, ids = [np.asarray(pixels, dtype=np.int64)], [ix]
    frac, h, ih = PIX_FRAC, acts[0], ix
    for i, (w, b) in enumerate(zip(s.weights, s.biases)):  # forward
        z = qmatmul(h, frac, w, W_FRAC, ACT_FRAC, backend) + (b >> (W_FRAC - ACT_FRAC))
        iz = t.rec(P.QMM, step, f"fwd.{i}.z", z, (ih, t.at.get(f"state.w{i}", -1), t.at.get(f"state.b{i}", -1)),
                   params=(ACT_FRAC - frac - W_FRAC, W_FRAC - ACT_FRAC)) if on else -1
        if i < n - 1:
            h = np.maximum(z, 0)
            ih = t.rec(P.RELU, step, f"fwd.{i}.relu", h, (iz,)) if on else -1
            acts.append(h)
            ids.append(ih)
            frac = ACT_FRAC
    p, dz = loss_pair(z, labels, backend)  # ACT_FRAC; the mean over the batch is folded into the update
    ip = t.rec(P.EXP_ROWS, step, "loss.exp", p, (iz,), consts=(exp_table_digest(),)) if on else -1
    idz = t.rec(P.LOSS_GRAD, step, "loss.dz", dz, (ip, iy)) if on else -1
    ups = update_params(cfg, len(labels)) if on else {}
    for i in reversed(range(n)):  # backward
        x, fx = acts[i], PIX_FRAC if i == 0 else ACT_FRAC
        idzt = t.rec(P.TRANSPOSE, step, f"bwd.{i}.dz_t", dz.T, (idz,)) if on else -1
        ixt = t.rec(P.TRANSPOSE, step, f"bwd.{i}.x_t", x.T, (ids[i],)) if on else -1
        gw = qmatmul(dz.T, ACT_FRAC, x.T, fx, W_FRAC, backend)  # [out, in]: contraction over the batch
        igw = t.rec(P.QMM, step, f"bwd.{i}.gw", gw, (idzt, ixt),
                    params=(W_FRAC - ACT_FRAC - fx, -1)) if on else -1
        gb = dz.sum(axis=0) << (W_FRAC - ACT_FRAC)
        igb = t.rec(P.ROW_SUM, step, f"bwd.{i}.gb", gb, (idzt,), params=(W_FRAC - ACT_FRAC,)) if on else -1
        if i > 0:
            wt = s.weights[i].T
            iwt = t.rec(P.TRANSPOSE, step, f"bwd.{i}.w_t", wt, (t.at.get(f"state.w{i}", -1),)) if on else -1
            dx = qmatmul(dz, ACT_FRAC, wt, W_FRAC, ACT_FRAC, backend)  # over the outputs
            idx = t.rec(P.QMM, step, f"bwd.{i}.dx", dx, (idz, iwt), params=(-W_FRAC, -1)) if on else -1
            dz = np.where(acts[i] > 0, dx, 0)
            idz = t.rec(P.RELU_MASK, step, f"bwd.{i}.dz", dz, (idx, ids[i])) if on else -1
        for (wn, mn, sn), (ws, v, sq), g, ig in ((("w", "m", "s"), (s.weights, s.vw, s.sw), gw, igw),
                                                (("b", "mb", "sb"), (s.biases, s.vb, s.sb), gb, igb)):
            ws[i], v[i], sq[i] = update(ws[i], v[i], sq[i], g, len(labels), cfg, backend)
            StepRecorder(t, step).update((f"{mn}{i}", f"{sn}{i}", f"{wn}{i}"), (v[i], sq[i], ws[i]), ig, ups)
    s.step += 1
    return s


def train(state: MLPState, pixels: np.ndarray, labels: np.ndarray, steps: int, cfg: SGDConfig,
          backend: str = "numpy", progress: Any = None, tape: Tape = NULL_TAPE) -> MLPState:
    """``steps`` steps from ``state`` (which carries its step counter, so a work unit resumes)."""
    for _ in range(steps):
        idx = batch_indices(len(labels), state.step, cfg)
        state = mlp_step(state, pixels[idx], labels[idx], cfg, backend, tape)
        if progress:
            progress(state.step)
    return state


def predict(state: MLPState, pixels: np.ndarray, backend: str = "numpy") -> np.ndarray:
    return np.argmax(forward(state, pixels, backend)[1], axis=1)


def float_update(p: Any, v: Any, sq: Any, g: Any, cfg: SGDConfig) -> None:
    """``update``'s optimizer in float32 torch, in place (the float references' step): the clip,
    then SGD with momentum, or Adam without bias correction, with the same constants."""
    g = g.clamp(-cfg.clip / (1 << W_FRAC), cfg.clip / (1 << W_FRAC))
    lr = cfg.lr_num / (1 << LR_SHIFT)
    if cfg.optimizer == "adam":
        b1, b2 = cfg.b1_num / (1 << MU_SHIFT), cfg.b2_num / (1 << MU_SHIFT)
        v.mul_(b1).add_(g, alpha=1 - b1)
        sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.sub_(lr * v / (sq.sqrt() + cfg.eps / (1 << W_FRAC)))
    else:
        v.mul_(cfg.mu_num / (1 << MU_SHIFT)).add_(g)
        p.sub_(lr * v)


def train_float(state: MLPState, pixels: np.ndarray, labels: np.ndarray, steps: int, cfg: SGDConfig) -> list[Any]:
    """The same MLP, initial weights, data order and optimizer, in float32 torch: the
    reference an exact run's accuracy is compared with. Returns [(W, b), ...] as float arrays."""
    import torch

    ws = [torch.tensor(w / (1 << W_FRAC), dtype=torch.float32, requires_grad=True) for w in state.weights]
    bs = [torch.tensor(b / (1 << W_FRAC), dtype=torch.float32, requires_grad=True) for b in state.biases]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in (*ws, *bs)]
    x_all = torch.tensor(pixels / (1 << PIX_FRAC), dtype=torch.float32)
    y_all = torch.tensor(labels, dtype=torch.int64)
    for step in range(state.step, state.step + steps):
        idx = torch.from_numpy(batch_indices(len(labels), step, cfg))
        h = x_all[idx]
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = h @ w.T + b
            if i < len(ws) - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, y_all[idx])
        grads = torch.autograd.grad(loss, [*ws, *bs])
        with torch.no_grad():
            for p, (v, sq), g in zip((*ws, *bs), moments, grads):
                float_update(p, v, sq, g, cfg)
    return [(w.detach().numpy(), b.detach().numpy()) for w, b in zip(ws, bs)]


def predict_float(params: list[Any], pixels: np.ndarray) -> np.ndarray:
    h = pixels / (1 << PIX_FRAC)
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = np.maximum(h, 0)
    return np.argmax(h, axis=1)

