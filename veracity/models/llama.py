"""SmolLM2 (and any Llama-architecture GGUF) in exact integers: the forward pass with a KV cache and
greedy decoding, over the file's weights as stored, every op an ``Exec`` op (``exact.llm`` defines
them): traced, with a program from a shape-only run, the same bits on every backend.

* **Embedding**: the Q8_0 table's rows (``QEMBED``).
* **The residual stream** is wide (``llm.WIDE_MAX``, 2**31 in ``ACT_FRAC`` bits): a few of an LLM's
  channels grow to tens of thousands (SmolLM2's reach 24,874 by block 15), far past ``ACT_MAX``.
* **RMSNorm** (``WRMSNORM``): the input rescaled to 26 bits, an integer square root, the gain in
  ``ACT_FRAC + NORM_STD_SHIFT`` bits (epsilon 1e-5 is below its resolution).
* **Linears**: ``exact.blockq`` on the stored quants (``BLINEAR``).
* **RoPE**: adjacent pairs (llama.cpp's "normal" mode, which the GGUF's Q and K rows are permuted
  for), cos and sin from mpmath tables.
* **Attention** (grouped-query): exact int64 dots, base-2 scores, 16-bit probabilities, the context
  ``round(sum p v / sum p)``; the K and V caches are records (``KV_APPEND``), grown each step.
* **SwiGLU**: the gate in ``GELU_FRAC`` bits through the SiLU table, times the up projection.
* **Generation**: the logits in rows of 2,048 (the LM head is the tied Q8_0 embedding), each row's
  maximum, then the largest (``ROW_MAX``, ``PICK``): every token a pass reads is a record.

A job's program (fixed before it runs) has ``max_tokens`` passes per item; once a stop token (EOS or
the template's end of turn) is picked, every later pick is that token, so the output follows from
the answer and a provider serving a request stops computing there (``serve``); the text ends at
the first stop token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError, ModelError
from veracity.exact import blockq, llm, spec
from veracity.exact.execute import Exec, StepIO, make_backend
from veracity.exact.llm import BlockWeights
from veracity.exact.program import MAX_OUTPUTS
from veracity.exact.spec import ACT_FRAC, GELU_FRAC, I16_MAX
from veracity.models.gguf import BlockTensor, GGUFFile, read_gguf
from veracity.models.gguf_text import ChatTemplate, GGUFTokenizer

DEFAULT_MAX_TOKENS = 64
# what a pass shares with the others (``Exec.step``'s ``io``): a later pass reads its K and V caches and its
# token (the first pass's caches are its roped K rows and its V rows), and it reads the previous pass's
# token (the embedding, and the pick's previous token) and caches (grown by a row)
PASS_IO = StepIO(frozenset({"k_cache", "v_cache", "token"}), frozenset({"tokens", "k_cache", "v_cache", "token"}))
FIRST_PASS_IO = StepIO(frozenset({"k_rope", "v", "token"}), frozenset({"tokens", "token"}))


def _block(t: BlockTensor) -> BlockWeights:
    if t.q is None or t.d is None:
        raise ModelError(f"{t.name} is not a quantized matrix")
    blockq.check_range(t.q, t.d, t.m)
    return BlockWeights(t.q, t.d, t.m, t.name)


@dataclass(frozen=True)
class Layer:
    attn_norm: np.ndarray
    q: BlockWeights
    k: BlockWeights
    v: BlockWeights
    o: BlockWeights
    ffn_norm: np.ndarray
    gate: BlockWeights
    up: BlockWeights
    down: BlockWeights


def _gain(t: BlockTensor) -> np.ndarray:
    if t.values is None:
        raise ModelError(f"{t.name} should be F32 norm gains")
    return spec.to_fixed(t.values.astype(np.float64), ACT_FRAC + spec.NORM_STD_SHIFT, limit=1 << 30)


class Decoder:
    """One sequence's decoding on an ``Exec``: its K and V cache records per block and its position."""

    def __init__(self, model: "ExactLlama", ex: Exec) -> None:
        self.model, self.ex = model, ex
        self.caches: list[tuple[Any, Any] | None] = [None] * len(model.layers)
        self.position = 0

    def feed(self, tokens: Any, every_position: bool = False) -> Any:
        """One pass over the token ids record ``tokens`` [1, T] at the next T positions: the logits
        record of the last position [1, R, W] (of every position with ``every_position``, untraced
        use only). One trace step."""
        with self.ex.step("pass"):
            return self._pass(tokens, every_position)

    def next_token(self, tokens: Any, prev: Any = None, stops: tuple[int, ...] = ()) -> Any:
        """One pass and its greedy pick, in one trace step: the next token record [1, 1] (``prev``
        and ``stops``: ``Exec.pick``'s). A pass is a coarse step (``exact.levels``): what a later
        pass reads of it is its K and V caches and its token, not its logits or residuals."""
        with self.ex.step("pass", PASS_IO if self.position else FIRST_PASS_IO):
            logits = self._pass(tokens)
            with self.ex.scope("next"):
                return self.ex.pick("token", logits, prev, stops)

    def _pass(self, tokens: Any, every_position: bool = False) -> Any:
        m, ex = self.model, self.ex
        t = int(tokens.shape[-1])
        start = self.position
        if start + t > m.context:
            raise InputError(f"the sequence would pass the context of {m.context} tokens")
        with ex.scope("embed"):
            x = ex.qembed("tokens", m.embed, tokens)
        for i, layer in enumerate(m.layers):
            with ex.scope(f"block.{i}"):
                h = ex.wrmsnorm("attn_norm", x, layer.attn_norm)
                q, k, v = ex.block_linears(("q", "k", "v"), h, (layer.q, layer.k, layer.v))
                q = ex.rope("q_rope", q, start, m.head_dim, m.rope)
                k = ex.rope("k_rope", k, start, m.head_dim, m.rope)
                cache = self.caches[i]
                if cache is not None:
                    k, v = ex.kv_append("k_cache", cache[0], k), ex.kv_append("v_cache", cache[1], v)
                self.caches[i] = (k, v)
                ctx = ex.gqa("attn", q, k, ex.transpose("vt", v), m.heads, m.kv_heads)
                x = ex.resid_add("res1", x, ex.block_linear("o", ctx, layer.o, out_max=llm.WIDE_MAX))
                h = ex.wrmsnorm("ffn_norm", x, layer.ffn_norm)
                g = ex.block_linear("gate", h, layer.gate, GELU_FRAC, I16_MAX)
                f = ex.silu_gate("swiglu", g, ex.block_linear("up", h, layer.up))
                x = ex.resid_add("res2", x, ex.block_linear("down", f, layer.down, out_max=llm.WIDE_MAX))
        self.position += t
        with ex.scope("head"):
            last = x if every_position else ex.last_row("last", x)
            return ex.block_linear("logits", ex.wrmsnorm("norm", last, m.out_norm), m.head)


class ExactLlama:
    """A Llama-architecture GGUF on exact integer ops: a job model (``parse``, ``run``, ``present``)
    and ``generate``/``chat`` for direct use."""

    name = "smollm2"
    default_max_tokens = DEFAULT_MAX_TOKENS

    def __init__(self, f: GGUFFile) -> None:
        a = "llama"
        self.file = f
        self.layers_n = int(f.need(f"{a}.block_count"))
        self.hidden = int(f.need(f"{a}.embedding_length"))
        self.heads = int(f.need(f"{a}.attention.head_count"))
        self.kv_heads = int(f.need(f"{a}.attention.head_count_kv"))
        self.head_dim = self.hidden // self.heads
        if self.hidden > 1024:  # 26-bit rows: the RMSNorm's int64 sum of squares holds 1,024 of them
            raise ModelError(f"{f.path.name} is {self.hidden} wide; the exact RMSNorm takes rows of at most 1024 "
                             "(a wider model needs a narrower rescale)")
        self.rope_base = float(f.need(f"{a}.rope.freq_base"))
        self.context = min(int(f.meta.get(f"{a}.context_length", llm.CONTEXT)), llm.CONTEXT)
        t = f.tensors
        emb = t["token_embd.weight"]
        if emb.kind != "Q8_0":
            raise ModelError(f"token_embd.weight is {emb.kind}; the exact embedding reads Q8_0 tables")
        self.embed = _block(emb)
        self.head = _block(t["output.weight"]) if "output.weight" in t else self.embed  # tied
        self.layers = [Layer(
            _gain(t[f"blk.{i}.attn_norm.weight"]), _block(t[f"blk.{i}.attn_q.weight"]),
            _block(t[f"blk.{i}.attn_k.weight"]), _block(t[f"blk.{i}.attn_v.weight"]),
            _block(t[f"blk.{i}.attn_output.weight"]), _gain(t[f"blk.{i}.ffn_norm.weight"]),
            _block(t[f"blk.{i}.ffn_gate.weight"]), _block(t[f"blk.{i}.ffn_up.weight"]),
            _block(t[f"blk.{i}.ffn_down.weight"])) for i in range(self.layers_n)]
        self.out_norm = _gain(t["output_norm.weight"])
        self.rope = llm.rope_table(self.head_dim, self.rope_base)
        self.tokenizer = GGUFTokenizer.from_gguf(f)
        self.template = ChatTemplate.from_gguf(f)
        named = [self.tokenizer.specials.get(s) for s in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>")]
        # generation stops at EOS or the template's end of turn (a PICK names at most two)
        self.stops = tuple(dict.fromkeys([self.tokenizer.eos, *(i for i in named if i is not None)]))[:2]

    @classmethod
    def from_gguf(cls, path: str | Path) -> "ExactLlama":
        return cls(read_gguf(path))

    def exact_constants(self) -> dict[bytes, np.ndarray]:
        """Every constant a record names, by digest (``exact.program.model_constants``)."""
        from veracity.exact import program as prog

        found: dict[bytes, np.ndarray] = {}

        def add(digests: tuple[bytes, ...], tensors: tuple[np.ndarray, ...]) -> None:
            found.update(zip(digests, tensors))

        for w in [self.embed, self.head] + [getattr(L, n) for L in self.layers
                                            for n in ("q", "k", "v", "o", "gate", "up", "down")]:
            add(prog.block_consts(w), w.tensors())
        for g in [self.out_norm] + [x for L in self.layers for x in (L.attn_norm, L.ffn_norm)]:
            add(prog.row_consts(g), prog.row_tensors(g))
        for tables in (self.rope, llm.exp2_tables()):
            add(prog.tables_consts(tables), prog.tables_tensors(tables))
        add(prog.lut_consts(spec.silu_lut()), prog.lut_tensors(spec.silu_lut()))
        return found

    # job interface ------------------------------------------------------------------------
    def prompt_ids(self, rec: dict[str, Any]) -> list[int]:
        """The token ids of an input: ``{"messages": [...]}`` through the file's chat template, or a
        raw ``{"prompt": "..."}``."""
        if "messages" in rec:
            msgs = rec["messages"]
            if (not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in msgs)):
                raise InputError('"messages" must be a non-empty list of {"role": ..., "content": "..."} objects')
            try:
                text = self.template.render(msgs)
            except Exception as exc:  # the file's own template refuses (e.g. roles out of order)
                raise InputError(f"the chat template refused the messages: {exc}") from None
        elif isinstance(rec.get("prompt"), str) and rec["prompt"]:
            text = rec["prompt"]
        else:
            raise InputError(f'{self.name} needs "messages" (a chat) or "prompt" (a non-empty string)')
        return self.tokenizer.encode(text)

    def parse(self, rec: dict[str, Any]) -> tuple[list[int], int]:
        ids = self.prompt_ids(rec)
        n = rec.get("max_tokens", self.default_max_tokens)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_OUTPUTS:
            raise InputError(f'"max_tokens" must be an integer from 1 to {MAX_OUTPUTS}')
        if len(ids) + n > self.context:
            raise InputError(f"input too long: {len(ids)} prompt tokens plus max_tokens {n} exceed the context of "
                             f"{self.context}")
        return ids, n

    @staticmethod
    def outputs_of(item: tuple[list[int], int]) -> int:
        """Output records a parsed item makes: one per generated token."""
        return item[1]

    def flops_of(self, item: tuple[list[int], int]) -> float:
        """2 x the multiply-adds of a parsed item's run (each pass's linears, its LM head row and its
        attention), as ``planner.program_flops`` counts its program, without building it: what a
        provider weighs a lease request's replay by before it serves it."""
        ids, n = item
        linears = sum(w.q.size for layer in self.layers
                      for w in (layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down))
        attention = 4.0 * self.layers_n * self.heads * self.head_dim  # scores and context, per (query, key)
        flops, start = 0.0, 0
        for t in [len(ids)] + [1] * (n - 1):
            flops += 2.0 * t * linears + 2.0 * self.head.q.size + attention * t * (start + t)
            start += t
        return flops

    def answer(self, tokens: list[int]) -> tuple[list[int], str]:
        """The tokens up to the first stop token, and why generation ended there."""
        for i, tok in enumerate(tokens):
            if tok in self.stops:
                return tokens[:i], "stop"
        return tokens, "length"

    def present(self, out: np.ndarray) -> dict[str, Any]:
        tokens = [int(i) for i in out]
        kept, reason = self.answer(tokens)
        return {"text": self.tokenizer.decode(kept), "finish_reason": reason, "tokens": tokens}

    def unpresent(self, shown: Any) -> np.ndarray:
        return np.array(shown["tokens"], dtype=np.int64)

    def run(self, ex: Exec, items: list[tuple[list[int], int]],
            answered: Callable[[int, np.ndarray], None] | None = None) -> list[np.ndarray]:
        """Greedy generation of exactly ``n`` tokens per item: the prompt is an input record (one
        prefill pass), each pass's next token a record, and the next pass reads it. ``answered(k,
        output)`` hears item ``k``'s output at its first stop token (every later token is that
        one: ``Exec.pick``), before its remaining passes run."""
        outs = []
        for k, (ids, n) in enumerate(items):
            with ex.step("prompt"):
                tokens = ex.input("ids", np.array([ids]), index=True)
            dec = Decoder(self, ex)
            generated: list[int] = []
            prev = None
            told = False
            for _ in range(n):
                tokens = prev = dec.next_token(tokens, prev, self.stops)
                generated.append(int(ex.output(tokens).reshape(-1)[0]))
                if answered is not None and not told and (generated[-1] in self.stops or len(generated) == n):
                    answered(k, np.array(generated + [generated[-1]] * (n - len(generated)), dtype=np.int64))
                    told = True
            outs.append(np.array(generated, dtype=np.int64))
        return outs

    def serve(self, item: tuple[list[int], int], backend: str = "torch") -> np.ndarray:
        """A parsed item's output integers, as ``run`` gives them, computed only up to the first stop
        token (after it every token is that stop token): how a provider answers a request at once."""
        ids, n = item
        out = self.generate(ids, n, backend=backend)
        return np.array(out + [out[-1]] * (n - len(out)), dtype=np.int64)

    # direct use -----------------------------------------------------------------------------
    def generate(self, prompt_ids: list[int], max_tokens: int, stop: tuple[int, ...] | None = None,
                 backend: str = "torch") -> list[int]:
        """Greedy decoding (untraced): the prompt as one step (prefill), then one step per token, until
        a stop token (the file's EOS and the template's end-of-turn by default) or ``max_tokens``."""
        if len(prompt_ids) + max_tokens > self.context:
            raise InputError(f"{len(prompt_ids)} prompt tokens plus max_tokens {max_tokens} exceed the context of "
                             f"{self.context}")
        stops = set(self.stops if stop is None else stop)
        ex = Exec(make_backend(backend))
        dec = Decoder(self, ex)
        tokens = ex.index(np.array([prompt_ids]))
        out: list[int] = []
        while len(out) < max_tokens:
            tokens = dec.next_token(tokens, None if not out else tokens, self.stops)
            out.append(int(ex.to_numpy(tokens).reshape(-1)[0]))
            if out[-1] in stops:
                break
        return out

    def logits(self, ids: list[int], backend: str = "torch") -> np.ndarray:
        """Teacher-forced logits [T, V] at every position, in ``ACT_FRAC`` bits (one untraced pass)."""
        ex = Exec(make_backend(backend))
        rows = ex.to_numpy(Decoder(self, ex).feed(ex.index(np.array([ids])), every_position=True))
        return rows.reshape(len(ids), -1)[:, :self.tokenizer.vocab_size]

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = DEFAULT_MAX_TOKENS) -> str:
        ids = self.tokenizer.encode(self.template.render(messages))
        return self.tokenizer.decode(self.answer(self.generate(ids, max_tokens))[0])
