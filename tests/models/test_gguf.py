"""GGUF files read as exact integers, and their tokenizer and chat template (SmolLM2's shipped file)."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import dequantize, quantize

from veracity.errors import ModelError
from veracity.models.gguf import HALF_FRAC, decode_tensor, half_units, read_gguf, smollm2_path
from veracity.models.gguf_text import ChatTemplate, GGUFTokenizer

HELD_OUT = [  # text of the project's own, none of it from the model's training prompts
    "Exact arithmetic gives the same bits on any machine, so checking a result is hash equality.",
    "In 2026 the devnet settled 12,345 orders; 3.14159 VRC each, at 99.5% uptime (see docs/security.md).",
    "  Leading spaces,\ttabs\nand newlines\r\n matter.  Ünïcödé, 日本語, emoji 🚀, and café.",
    "def commit(order_id: int) -> bytes:\n    return sha256(b'VXO1' + order_id.to_bytes(4, 'big'))",
    "<|im_start|>user\nWhat is a bisection game?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>tokens like <repo_name> stay whole, but <|im_star t|> does not.",
]


@pytest.fixture(scope="module")
def smollm2():
    return read_gguf(smollm2_path())


def test_every_half_is_an_exact_integer_in_units_of_two_to_the_minus_24():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    finite = np.isfinite(bits.view(np.float16))
    got = half_units(bits[finite]).astype(np.float64) / float(1 << HALF_FRAC)
    assert np.array_equal(got, bits[finite].view(np.float16).astype(np.float64))
    with pytest.raises(ModelError, match="infinite or NaN"):
        half_units(np.array([0x7C00], dtype=np.uint16))


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0", "F16"])
def test_each_block_format_decodes_to_the_weights_gguf_stores(kind, fresh_rng):
    x = fresh_rng.normal(scale=0.05, size=(3, 96)).astype(np.float32)
    raw = quantize(x, GGMLQuantizationType[kind])
    t = decode_tensor("w", kind, (3, 96), raw)
    ref = dequantize(raw, GGMLQuantizationType[kind])
    assert np.array_equal(t.dequantized().astype(np.float32), ref)  # gguf rounds d * q + m to float32
    assert t.exact().dtype == np.int64


def test_the_shipped_file_loads_with_its_weights_as_stored(smollm2):
    assert smollm2.arch == "llama" and smollm2.need("llama.block_count") == 30
    assert smollm2.need("llama.attention.head_count") == 9 and smollm2.need("llama.attention.head_count_kv") == 3
    kinds = {t.kind for t in smollm2.tensors.values()}
    assert kinds == {"Q4_1", "Q8_0", "F32"} and len(smollm2.tensors) == 272
    reader = GGUFReader(str(smollm2_path()))
    for t in reader.tensors:
        if t.name in ("token_embd.weight", "blk.7.ffn_down.weight", "blk.29.attn_k.weight", "output_norm.weight"):
            mine = smollm2.tensors[t.name]
            assert np.array_equal(mine.dequantized().astype(np.float32), dequantize(t.data, t.tensor_type)), t.name
    q = smollm2.tensors["blk.0.attn_q.weight"]
    assert q.shape == (576, 576) and q.q.min() >= 0 and q.q.max() <= 15 and q.d.shape == (576, 18)


def test_the_tokenizer_gives_transformers_ids_and_the_template_its_prompt(smollm2):
    from transformers import AutoTokenizer

    path = smollm2_path()
    ref = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok = GGUFTokenizer.from_gguf(smollm2)
    for text in HELD_OUT:
        ids = tok.encode(text)
        assert ids == ref(text, add_special_tokens=False)["input_ids"], text
        assert tok.decode(ids, skip_special=False) == text
    chat = [{"role": "system", "content": "You answer in one sentence."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"}]
    template = ChatTemplate.from_gguf(smollm2)
    for messages in (chat, chat[1:2]):
        prompt = template.render(messages)
        assert prompt == ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tok.encode(prompt) == ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)[
            "input_ids"]
    assert len(tok.encode(template.render(chat[1:2]))) == 37 and tok.eos == 2


def test_files_veracity_cannot_run_exactly_are_refused_in_one_line(tmp_path):
    other = tmp_path / "other.gguf"
    w = GGUFWriter(str(other), "gpt2")
    w.add_tensor("w", np.zeros((2, 32), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ModelError, match=r"is a 'gpt2' model; Veracity's exact loader reads 'llama'"):
        read_gguf(other)
    q5 = tmp_path / "q5.gguf"
    w = GGUFWriter(str(q5), "llama")
    raw = quantize(np.zeros((2, 32), dtype=np.float32), GGMLQuantizationType.Q5_0)
    w.add_tensor("blk.0.attn_q.weight", raw, raw_dtype=GGMLQuantizationType.Q5_0)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ModelError, match="tensor blk.0.attn_q.weight is stored as Q5_0; Veracity reads F32, F16, "
                                         "Q4_0, Q4_1, Q8_0") as err:
        read_gguf(q5)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="cannot read"):
        read_gguf(tmp_path / "missing.gguf")
