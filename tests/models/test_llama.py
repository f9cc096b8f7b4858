"""SmolLM2 in exact integers (``models.llama``): the answer the float reference of the same GGUF file
gives (transformers, dequantized, float32), token for token, and its tables computed exactly."""

import numpy as np
import pytest

from veracity.models.gguf import smollm2_path
from veracity.models.llama import P_MAX, ROPE_FRAC, Z_FRAC, ExactLlama, exp2_table, rope, rope_table

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llama():
    return ExactLlama.from_gguf(smollm2_path())


def test_greedy_decoding_gives_the_float_references_answer(llama):
    import torch
    from transformers import AutoModelForCausalLM

    path = smollm2_path()
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ids = llama.tokenizer.encode(llama.template.render(QUESTION))
    want = ref.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    got = llama.generate(ids, 12)
    assert got == want  # the same tokens, EOS included
    assert llama.tokenizer.decode(got) == "The capital of France is Paris."
    assert llama.generate(ids, 12) == got  # and the same again (no state left behind)


def test_rope_and_softmax_tables_are_exact_and_rotate_as_floats_do():
    cos, sin = rope_table(64, 100000.0, 256)
    angles = np.arange(256)[:, None] * 100000.0 ** (-np.arange(0, 64, 2) / 64)
    assert np.abs(cos / (1 << ROPE_FRAC) - np.cos(angles)).max() <= 0.5 / (1 << ROPE_FRAC) + 1e-12
    assert np.abs(sin / (1 << ROPE_FRAC) - np.sin(angles)).max() <= 0.5 / (1 << ROPE_FRAC) + 1e-12
    x = np.random.default_rng(0).integers(-(1 << 20), 1 << 20, size=(5, 3, 64))
    y = rope(x, np.arange(5) + 100, cos, sin)  # a rotation keeps each pair's length (to the tables' 15 bits)
    pairs = lambda v: np.hypot(v[..., 0::2], v[..., 1::2])  # noqa: E731
    assert np.all(np.abs(pairs(y) - pairs(x)) <= pairs(x) * 2.0 ** -14 + 2)
    table = exp2_table()
    assert table[0] == P_MAX and table[-1] == 0 and np.all(np.diff(table) <= 0)
    assert abs(table[1 << Z_FRAC] - P_MAX / 2) <= 0.5  # 2**-1
