"""A job's program by a dry run: the model run on a backend that knows only shapes (``ShapeBackend``:
no arithmetic, milliseconds), through the same ``Exec`` as a real run, so every op it records has
the descriptor (``exact.program``) the real run's record must match."""

from __future__ import annotations

from typing import Any

import numpy as np

from veracity.exact.execute import Exec
from veracity.exact.program import OpDesc, ProgramTooLarge, check_disputable, mark_outputs


class Shaped:
    """A tensor of which only the shape is known."""

    __slots__ = ("shape",)

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(d) for d in shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> "Shaped":
        return Shaped(np.broadcast_to(np.empty((), dtype=np.int8), self.shape)[key].shape)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x)) if not isinstance(x, Shaped) else x.shape


class ShapeBackend:
    """Runs a model's code for the shapes of every op output, computing nothing."""

    name = "shape"

    def tensor(self, a: Any) -> Shaped:
        return Shaped(_shape(a))

    constant = index = tensor

    def canonical(self, x: Shaped, dtype: np.dtype) -> np.ndarray:
        return np.zeros(x.shape, dtype=dtype)

    def split_heads(self, x: Shaped, heads: int) -> Shaped:
        b, t, h = x.shape
        return Shaped((b, heads, t, h // heads))

    def argmax(self, x: Shaped) -> Shaped:
        return Shaped(x.shape[:-1])

    def append(self, tokens: Shaped, token: Shaped) -> Shaped:
        return Shaped(tokens.shape[:-1] + (tokens.shape[-1] + token.shape[-1],))

    def transpose_last(self, x: Shaped) -> Shaped:
        return Shaped(x.shape[:-2] + (x.shape[-1], x.shape[-2]))

    def merge_heads(self, x: Shaped) -> Shaped:
        b, nh, t, d = x.shape
        return Shaped((b, t, nh * d))

    def linear(self, x: Shaped, lin: Any) -> Shaped:
        return Shaped(x.shape[:-1] + (lin.weight.shape[0],))

    def add(self, a: Shaped, b: Shaped) -> Shaped:
        return Shaped(np.broadcast_shapes(a.shape, b.shape))

    # every op returns a new object: records are told apart by identity (``Exec._describe``)
    def relu(self, x: Shaped) -> Shaped:
        return Shaped(x.shape)

    gelu = silu = relu

    def rmsnorm(self, x: Shaped, norm: Any) -> Shaped:
        return Shaped(x.shape)

    layernorm = rmsnorm

    def l2_normalize(self, x: Shaped) -> Shaped:
        return Shaped(x.shape)

    def embedding(self, table: Shaped, ids: Shaped) -> Shaped:
        return Shaped(ids.shape + table.shape[1:])

    def scores_softmax(self, q: Shaped, k: Shaped, key_valid: Any, causal: bool) -> tuple[Shaped, ...]:
        b, h, t, _ = q.shape
        return Shaped((b, h, t, k.shape[2])), Shaped((b, h, t, k.shape[2])), Shaped((b, h, t))

    def attention_context(self, p: Shaped, psum: Shaped, v: Shaped, key_valid: Any) -> Shaped:
        return Shaped(p.shape[:-1] + (v.shape[-1],))

    def mean_pool(self, h: Shaped, mask: Any) -> Shaped:
        return Shaped((h.shape[0], h.shape[2]))


    # the Llama family (``exact.llm``)
    def qembed(self, w: Any, ids: Shaped) -> Shaped:
        return Shaped(ids.shape + (w.q.shape[1],))

    def block_linear(self, x: Shaped, w: Any, frac_out: int, out_max: int) -> Shaped:
        from veracity.exact.llm import LOGIT_ROW

        t, n = int(np.prod(x.shape[:-1])), w.q.shape[0]
        return Shaped((t, -(-n // LOGIT_ROW), LOGIT_ROW) if n > LOGIT_ROW else (1, t, n))

    def wrmsnorm(self, x: Shaped, gain: Any) -> Shaped:
        return Shaped(x.shape)

    def rope(self, x: Shaped, start: int, head_dim: int, table: Any) -> Shaped:
        return Shaped(x.shape)

    def kv_append(self, cache: Shaped, new: Shaped) -> Shaped:
        return Shaped((1, cache.shape[1] + new.shape[1], cache.shape[2]))

    def gqa_scores(self, q: Shaped, k: Shaped, heads: int, kv_heads: int) -> Shaped:
        return Shaped((heads, q.shape[1], k.shape[1]))

    def gqa_probs(self, z: Shaped) -> Shaped:
        return Shaped(z.shape)

    def gqa_context(self, p: Shaped, vt: Shaped, heads: int, kv_heads: int) -> Shaped:
        return Shaped((1, p.shape[1], heads * (vt.shape[1] // kv_heads)))

    def resid_add(self, a: Shaped, b: Shaped) -> Shaped:
        return Shaped(a.shape)

    def silu_gate(self, g: Shaped, u: Shaped) -> Shaped:
        return Shaped(g.shape)

    def row_max(self, x: Shaped) -> Shaped:
        return Shaped((x.shape[0], 2 * x.shape[1]))

    def pick(self, m: Shaped, prev: Any, stops: tuple[int, ...]) -> Shaped:
        return Shaped((m.shape[0], 1))


def build(model: Any, items: list[Any], batch_size: int = 32, limit: int | None = None) -> list[OpDesc]:
    """The program of an ``infer`` job: ``model`` on parsed ``items``, batched as providers run it."""
    return build_with_outputs(model, items, batch_size, limit)[0]


def build_with_outputs(model: Any, items: list[Any], batch_size: int = 32,
                       limit: int | None = None) -> tuple[list[OpDesc], list[int]]:
    """The program, and which of its records hold the job's outputs (in item order). Past
    ``limit`` records (checked after each batch) the build stops with ``ProgramTooLarge``."""
    ex = Exec(ShapeBackend(), program=[])
    for lo in range(0, len(items), batch_size):
        model.run(ex, items[lo:lo + batch_size])
        if limit is not None and len(ex.program) > limit:  # type: ignore[arg-type]
            raise ProgramTooLarge(f"its program has more than {limit} records")
    assert ex.program is not None
    program = mark_outputs(ex.program, ex.outputs)
    check_disputable(program)
    return program, ex.outputs


