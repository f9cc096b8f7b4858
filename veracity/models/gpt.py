"""A small GPT-style decoder on exact ops, with greedy generation (char-level, nanoGPT-shaped).

The float model (``FloatGPT``) is a pre-LayerNorm causal transformer trained on a small text that
ships with Veracity (``data/tiny_corpus.txt``); ``ExactGPT`` imports its state dict (or any with
the same keys) and generates greedily, token by token, one trace step per block call.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from veracity.errors import InputError, ModelError
from veracity.exact.execute import Exec
from veracity.exact.spec import (
    ACT_FRAC,
    GELU_FRAC,
    I16_MAX,
    QLinear,
    QNorm,
    quantize_linear,
    quantize_norm,
    to_fixed,
)
from veracity.models.weights import StateDict, load_safetensors, need

LOG2E = 1.4426950408889634
DATA = Path(__file__).parent / "data"
WEIGHTS = Path(__file__).parent / "weights" / "tiny_gpt.safetensors"


@dataclass(frozen=True)
class GPTConfig:
    vocab: str  # the characters, in token-id order
    block: int = 128
    layers: int = 2
    heads: int = 4
    embd: int = 128


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.embd)
        self.c_attn = nn.Linear(cfg.embd, 3 * cfg.embd)
        self.c_proj = nn.Linear(cfg.embd, cfg.embd)
        self.ln_2 = nn.LayerNorm(cfg.embd)
        self.c_fc = nn.Linear(cfg.embd, 4 * cfg.embd)
        self.c_fc_proj = nn.Linear(4 * cfg.embd, cfg.embd)
        self.heads = cfg.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.c_fc_proj(F.gelu(self.c_fc(self.ln_2(x))))


class FloatGPT(nn.Module):
    """The float architecture: token + position embeddings, pre-LN blocks, final LN, LM head."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(len(cfg.vocab), cfg.embd)
        self.wpe = nn.Embedding(cfg.block, cfg.embd)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.embd)
        self.lm_head = nn.Linear(cfg.embd, len(cfg.vocab), bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def train_float(text: str, cfg: GPTConfig, steps: int = 600, batch: int = 32, ctx: int = 64,
                seed: int = 0) -> FloatGPT:
    """Train the float model on ``text`` (next-character prediction, AdamW)."""
    torch.manual_seed(seed)
    data = torch.tensor([cfg.vocab.index(c) for c in text])
    model = FloatGPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(steps):
        ix = torch.randint(len(data) - ctx - 1, (batch,))
        x = torch.stack([data[i:i + ctx] for i in ix])
        y = torch.stack([data[i + 1:i + ctx + 1] for i in ix])
        loss = F.cross_entropy(model(x).reshape(-1, len(cfg.vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def float_generate(model: FloatGPT, prompt: str, max_tokens: int) -> str:
    ids = [model.cfg.vocab.index(c) for c in prompt]
    with torch.no_grad():
        for _ in range(max_tokens):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return "".join(model.cfg.vocab[i] for i in ids[len(prompt):])


@dataclass(frozen=True)
class GPTLayer:
    ln1: QNorm
    qkv: QLinear
    proj: QLinear
    ln2: QNorm
    fc: QLinear
    fc_proj: QLinear


class ExactGPT:
    """Greedy generation on exact ops. Output per item: the generated token ids (int32)."""

    name = "tiny-gpt"
    default_max_tokens = 32

    def __init__(self, cfg: GPTConfig, wte: np.ndarray, wpe: np.ndarray, layers: list[GPTLayer],
                 ln_f: QNorm, head: QLinear) -> None:
        self.cfg, self.wte, self.wpe, self.layers, self.ln_f, self.head = cfg, wte, wpe, layers, ln_f, head

    @classmethod
    def from_state_dict(cls, state: StateDict, cfg: GPTConfig) -> "ExactGPT":
        c, d = cfg.embd, cfg.embd // cfg.heads
        qscale = np.ones(3 * c)
        qscale[:c] = LOG2E / float(np.sqrt(np.float64(d)))

        def norm(p: str) -> QNorm:
            return quantize_norm(need(state, p + ".weight", (c,)), need(state, p + ".bias", (c,)))

        def lin(p: str, n: int, k: int, scale: Any = 1.0, **kw: Any) -> QLinear:
            w = need(state, p + ".weight", (n, k))
            b = state.get(p + ".bias")
            return quantize_linear(w * np.reshape(scale, (-1, 1)), None if b is None else b * scale,
                                   kw.pop("frac_in", ACT_FRAC), kw.pop("frac_out", ACT_FRAC), **kw)

        layers = [GPTLayer(
            ln1=norm(f"h.{i}.ln_1"),
            qkv=lin(f"h.{i}.c_attn", 3 * c, c, qscale),
            proj=lin(f"h.{i}.c_proj", c, c),
            ln2=norm(f"h.{i}.ln_2"),
            fc=lin(f"h.{i}.c_fc", 4 * c, c, frac_out=GELU_FRAC, out_max=I16_MAX),
            fc_proj=lin(f"h.{i}.c_fc_proj", c, 4 * c, frac_in=GELU_FRAC),
        ) for i in range(cfg.layers)]
        return cls(cfg, to_fixed(need(state, "wte.weight", (len(cfg.vocab), c)), ACT_FRAC),
                   to_fixed(need(state, "wpe.weight", (cfg.block, c)), ACT_FRAC), layers,
                   norm("ln_f"), lin("lm_head", len(cfg.vocab), c))

    @classmethod
    def load(cls, path: str | Path = WEIGHTS) -> "ExactGPT":
        """Load a safetensors file whose metadata holds the config (as ``save`` writes it)."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            raise ModelError(f"cannot read tiny-gpt weights {path}: {exc}") from None
        if "config" not in meta:
            raise ModelError(f"{path} has no tiny-gpt config in its metadata")
        return cls.from_state_dict(load_safetensors(path), GPTConfig(**json.loads(meta["config"])))

    # job interface ------------------------------------------------------------------------
    def parse(self, rec: dict[str, Any]) -> tuple[list[int], int]:
        text = rec.get("text")
        if not isinstance(text, str) or not text:
            raise InputError('tiny-gpt needs "text": a non-empty prompt string')
        n = rec.get("max_tokens", self.default_max_tokens)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError('"max_tokens" must be a positive integer')
        unknown = sorted(set(text) - set(self.cfg.vocab))
        if unknown:
            raise InputError(f"tiny-gpt's vocabulary has no {''.join(unknown)!r}: it knows lowercase "
                             f"letters, spaces and .,:;'- only")
        if len(text) + n > self.cfg.block:
            raise InputError(f"input too long: {len(text)} characters plus max_tokens {n} exceeds "
                             f"tiny-gpt's context of {self.cfg.block}")
        return [self.cfg.vocab.index(ch) for ch in text], n

    def present(self, out: np.ndarray) -> str:
        return "".join(self.cfg.vocab[int(i)] for i in out)

    @staticmethod
    def outputs_of(item: tuple[list[int], int]) -> int:
        """Output records a parsed item makes: one per generated token."""
        return item[1]

    def unpresent(self, shown: Any) -> np.ndarray:
        """The token ids ``present`` showed as text."""
        return np.array([self.cfg.vocab.index(ch) for ch in shown], dtype=np.int64)

    def logits(self, ex: Exec, ids: list[int]) -> np.ndarray:
        """Last-position logits for one sequence (a pass on its own, the ids taken as given)."""
        with ex.step("prompt"):
            tokens = ex.input("ids", np.array([ids]), index=True)
        return ex.to_numpy(self._pass(ex, tokens, len(ids)))[0, 0]

    def _pass(self, ex: Exec, tokens: Any, t: int) -> Any:
        """One forward pass over the ``t`` tokens so far (a record): its last position's logits
        record [1, 1, V]. One trace step per block."""
        with ex.step("input"):
            positions = ex.input("positions", np.arange(t)[None, :], index=True)
            valid = ex.input("mask", np.ones((1, t), dtype=np.int64))
        with ex.step("embed"):
            x = ex.add("sum", ex.embedding("wte", self.wte, tokens), ex.embedding("wpe", self.wpe, positions))
        for i, layer in enumerate(self.layers):
            with ex.step(f"block.{i}"):
                qkv = ex.linear("qkv", ex.layernorm("ln1", x, layer.ln1), layer.qkv)
                a = ex.attention("attn", qkv, valid, self.cfg.heads, causal=True)
                x = ex.add("res1", x, ex.linear("proj", a, layer.proj))
                f = ex.gelu("gelu", ex.linear("fc", ex.layernorm("ln2", x, layer.ln2), layer.fc))
                x = ex.add("res2", x, ex.linear("fc_proj", f, layer.fc_proj))
        with ex.step("head"):
            return ex.linear("logits", ex.layernorm("ln_f", ex.last_row("last", x), self.ln_f), self.head)

    def run(self, ex: Exec, items: list[tuple[list[int], int]]) -> list[np.ndarray]:
        """Greedy generation. The prompt is an input record; each pass's next token is a record
        (the argmax of its logits, ties to the lowest id), and the next pass's ids are the
        previous ids with it appended: every token a pass reads is a record a dispute can judge."""
        outs = []
        for ids, n in items:
            with ex.step("prompt"):
                tokens = ex.input("ids", np.array([ids]), index=True)
            generated = []
            for s in range(n):
                logits = self._pass(ex, tokens, len(ids) + s)
                with ex.step("next"):
                    token = ex.argmax("token", logits)
                    generated.append(int(ex.output(token).reshape(-1)[0]))
                    if s + 1 < n:
                        tokens = ex.append("ids", tokens, token)
            outs.append(np.array(generated, dtype=np.int64))
        return outs


def save(model: FloatGPT, path: str | Path = WEIGHTS) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"config": json.dumps(asdict(model.cfg))})


def corpus() -> str:
    return (DATA / "tiny_corpus.txt").read_text()


def corpus_config(text: str) -> GPTConfig:
    return GPTConfig(vocab="".join(sorted(set(text))))


if __name__ == "__main__":
    text = corpus()
    m = train_float(text, corpus_config(text), steps=1500)
    save(m)
    print(f"wrote {WEIGHTS}; sample: {float_generate(m, 'the provider ', 60)!r}")
