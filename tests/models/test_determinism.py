"""Same model + same data = same bits: across thread counts and between the two backends.

Inputs are drawn fresh each run, so the property is tested on data nobody chose in advance.
"""

import numpy as np
import pytest
import torch

from veracity.models.gpt import corpus
from veracity.workloads.infer import infer


def run_three_ways(model, items, batch_size=8):
    """torch with 2 threads, torch with 1 thread, NumPy reference: (output hash, trace root)."""
    before = torch.get_num_threads()
    results = []
    try:
        for backend, threads in [("torch", 2), ("torch", 1), ("numpy", 2)]:
            torch.set_num_threads(threads)
            r = infer(model, items, backend=backend, batch_size=batch_size)
            results.append(r)
    finally:
        torch.set_num_threads(before)
    return results


def assert_identical(results):
    first = results[0]
    assert first.ops > 0 and first.steps > 0
    for r in results[1:]:
        assert r.output_hash == first.output_hash
        assert r.trace_root == first.trace_root
        for a, b in zip(first.outputs, r.outputs):
            np.testing.assert_array_equal(a, b)


def test_digits_identical_across_threads_and_backends(digits, fresh_rng):
    items = [fresh_rng.integers(0, 17, size=64) for _ in range(40)]
    assert_identical(run_three_ways(digits, items, batch_size=16))


def random_sentences(rng, sentences, n):
    """Real sentences, some with their words shuffled or truncated, so each run differs."""
    out = []
    for _ in range(n):
        words = sentences[rng.integers(len(sentences))].split()
        if rng.random() < 0.5:
            rng.shuffle(words)
        out.append(" ".join(words[: rng.integers(1, len(words) + 1)]))
    return out


def test_minilm_identical_across_threads_and_backends(minilm, sentences, fresh_rng):
    items = [minilm.parse({"text": s}) for s in random_sentences(fresh_rng, sentences, 12)]
    assert_identical(run_three_ways(minilm, items, batch_size=6))


def test_tiny_gpt_identical_across_threads_and_backends(gpt, fresh_rng):
    text = corpus().replace("\n", " ")
    items = []
    for _ in range(2):
        lo = int(fresh_rng.integers(0, len(text) - 40))
        items.append(gpt.parse({"text": text[lo:lo + int(fresh_rng.integers(5, 30))], "max_tokens": 6}))
    assert_identical(run_three_ways(gpt, items))


def test_embedding_does_not_depend_on_batching(minilm, sentences, fresh_rng):
    """Padding and batch-mates never change an item's bits, so the output hash is batch-free."""
    texts = random_sentences(fresh_rng, sentences, 7)
    items = [minilm.parse({"text": s}) for s in texts]
    together = infer(minilm, items, batch_size=7, trace=False)
    alone = infer(minilm, items, batch_size=1, trace=False)
    assert together.output_hash == alone.output_hash
    for a, b in zip(together.outputs, alone.outputs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_trace_changes_when_an_input_changes(digits, backend):
    items = [np.full(64, 3), np.arange(64) % 17]
    a = infer(digits, items, backend=backend)
    items[1] = items[1].copy()
    items[1][10] += 1
    b = infer(digits, items, backend=backend)
    assert a.trace_root != b.trace_root


def test_backends_created_one_after_another_never_share_tables(minilm, gpt):
    """Models cache their embedding tables per backend; a freed backend's id may be reused."""
    items = [minilm.parse({"text": "tables belong to one backend"})]
    prompt = [gpt.parse({"text": "the ", "max_tokens": 1})]
    first = infer(minilm, items, backend="torch").output_hash
    for backend in ["numpy", "torch-eager", "numpy", "torch", "numpy", "torch-eager"] * 2:
        assert infer(minilm, items, backend=backend, trace=False).output_hash == first
        infer(gpt, prompt, backend=backend, trace=False)
