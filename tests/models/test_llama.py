"""SmolLM2 in exact integers (``models.llama``): the answer the float reference of the same GGUF file
gives (transformers, dequantized, float32), token for token; the same bits on every backend and
thread count, traced against the program a shape-only run gives; inputs refused clearly."""

import json

import numpy as np
import pytest
import torch

from veracity.errors import InputError
from veracity.exact import llm, program
from veracity.exact.levels import Levels
from veracity.models.gguf import smollm2_path
from veracity.models.llama import ExactLlama
from veracity.workloads.infer import job_program, run_infer_job, served_digests

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llama():
    return ExactLlama.from_gguf(smollm2_path())


def test_greedy_decoding_gives_the_float_references_answer(llama):
    from transformers import AutoModelForCausalLM

    path = smollm2_path()
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ids = llama.tokenizer.encode(llama.template.render(QUESTION))
    want = ref.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    got = llama.generate(ids, 12)
    assert got == want  # the same tokens, EOS included
    assert llama.chat(QUESTION, 12) == "The capital of France is Paris."


def test_a_job_gives_the_same_bits_on_every_backend_and_thread_count(llama):
    inputs = (json.dumps({"prompt": "The sky is", "max_tokens": 2}) + "\n").encode()
    runs = {}
    threads = torch.get_num_threads()
    try:
        for backend, n in [("numpy", 1), ("torch-eager", 1), ("torch", 1), ("torch", 2)]:
            torch.set_num_threads(n)
            r = run_infer_job("smollm2", inputs, backend=backend, model=llama)
            runs[(backend, n)] = (r.output_hash, r.trace_root, r.outputs)
    finally:
        torch.set_num_threads(threads)
    assert len(set(runs.values())) == 1, runs.keys()
    line = json.loads(r.outputs)
    assert line["output"]["finish_reason"] == "length" and len(line["output"]["tokens"]) == 2
    # the program a client derives without arithmetic names every record the run made (its coarse
    # trace: the records a later pass or block reads, and the tokens)
    prog = job_program("smollm2", inputs, model=llama)
    records = [json.loads(x) for x in r.trace.decode().splitlines()]
    assert [prog[i].op for i in Levels.of(prog).coarse] == [x["op"] for x in records]
    kinds = {program.OpKind(d.kind).name for d in prog}
    assert {"QEMBED", "BLINEAR", "WRMSNORM", "ROPE", "KV_APPEND", "GQA_SCORES", "GQA_PROBS", "GQA_CONTEXT",
            "RESID_ADD", "SILU_GATE", "ROW_MAX", "PICK"} <= kinds
    consts = program.model_constants(llama)
    assert all(c in consts for d in prog if d.kind != program.INPUT for c in d.consts)  # a referee finds each
    # the served output lines give the committed output digests back
    assert served_digests("smollm2", inputs, r.outputs, llama) == r.output_digests


def test_a_job_generates_exactly_max_tokens_and_its_text_ends_at_the_stop_token(llama):
    item = llama.parse({"messages": QUESTION, "max_tokens": 10})
    assert llama.outputs_of(item) == 10
    shown = llama.present(np.array([504, 3575, 282, 4649, 314, 7042, 30, 2, 504, 504]))
    assert shown["text"] == "The capital of France is Paris." and shown["finish_reason"] == "stop"
    assert llama.unpresent(shown).tolist() == shown["tokens"]


@pytest.mark.parametrize("rec, message", [
    ({"text": "hi"}, '"messages" (a chat) or "prompt"'),
    ({"messages": "hi"}, '"messages" must be a non-empty list'),
    ({"messages": [{"role": "user"}]}, '"messages" must be a non-empty list'),
    ({"prompt": "hi", "max_tokens": 0}, '"max_tokens" must be an integer from 1 to 1024'),
    ({"prompt": "hi", "max_tokens": True}, '"max_tokens" must be an integer'),
    ({"prompt": "word " * 2100, "max_tokens": 1}, "exceed the context of 2048"),
])
def test_bad_inputs_get_one_clear_line(llama, rec, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        llama.parse(rec)


def test_a_file_of_another_architecture_or_type_is_refused_by_name(tmp_path):
    from veracity.errors import ModelError
    from veracity.models.gguf import read_gguf

    f = read_gguf(smollm2_path())
    f.tensors["token_embd.weight"] = f.tensors["blk.0.attn_q.weight"]  # a Q4_1 table
    with pytest.raises(ModelError, match="token_embd.weight is Q4_1"):
        ExactLlama(f)
    assert llm.CONTEXT == 2048
