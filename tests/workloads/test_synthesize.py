"""The ``synthesize`` job kind: a template and seeds rendered into an infer job's items, refused with
a clear message when malformed; its samples the same bits on every backend, its program the infer
program of the rendered items, and the generated set paired with its seeds and provenance."""

import json

import pytest

from veracity.cid import cid_of
from veracity.errors import InputError
from veracity.workloads.jobs import Job, infer_job
from veracity.workloads.spec import parse_spec
from veracity.workloads.synthesize import provenance, render, samples

TOPICS = {"template": "Name one fact about {seed}.", "seeds": ["rivers", "bread"], "max_tokens": 4}


def blob(**over):
    return json.dumps({**TOPICS, **over}).encode()


def spec_text(model="smollm2", inputs=b"x", extra=""):
    return f"kind: synthesize\nmodel: {model}\ninputs: {{cid: {cid_of(inputs)}}}\nmax_price: 1\ndeadline: 600\n" + extra


def job(inputs, model="smollm2"):
    return Job(parse_spec(spec_text(model, inputs)), inputs)


def test_render_puts_each_seed_in_the_template_as_text():
    lines = [json.loads(x) for x in render(blob(seeds=["a {b}", "c"], system="Be brief.")).decode().splitlines()]
    assert lines == [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Name one fact about a {b}."}], "max_tokens": 4},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Name one fact about c."}], "max_tokens": 4}]
    assert render(blob(), "tiny-gpt") == (b'{"text": "Name one fact about rivers.", "max_tokens": 4}\n'
                                          b'{"text": "Name one fact about bread.", "max_tokens": 4}\n')


@pytest.mark.parametrize("inputs,message", [
    (b"\xff", "not UTF-8: send one JSON object"),
    (b"{template", "must be valid JSON"),
    (blob() + b"\n" + blob(), "must be one JSON object, not JSONL"),
    (b'["rivers"]', "must be one JSON object, not a list"),
    (json.dumps({"template": "{seed}", "seeds": ["a"]}).encode(), "lack 'max_tokens'"),
    (blob(temperature=0.7), "unknown keys 'temperature'"),
    (blob(template="Name a fact."), 'has no {seed} placeholder'),
    (blob(template="About {topic}: {seed}"), "holds '{topic}': {seed} is the only placeholder"),
    (blob(seeds=[]), '"seeds" must be a non-empty list of strings'),
    (blob(seeds=[f"s{i}" for i in range(65)]), "65 entries, more than the 64 a job takes: split them"),
    (blob(seeds=["rivers", 7]), "seed 2 is 7: every seed must be a non-empty string"),
    (blob(seeds=["rivers", "bread", "rivers"]), "seed 3 repeats seed 1 .'rivers'."),
    (blob(max_tokens=0), '"max_tokens" must be an integer from 1 to 512'),
    (blob(max_tokens=True), '"max_tokens" must be an integer'),
    (blob(max_tokens=513), "at most 1024 generated tokens, here across 2 seeds"),
    (blob(system=""), '"system" must be a non-empty string'),
])
def test_malformed_inputs_are_refused_saying_what_to_send(inputs, message):
    with pytest.raises(InputError, match=message.replace("{", r"\{").replace("}", r"\}")):
        render(inputs)


def test_a_synthesize_spec_names_its_kind_and_models():
    assert parse_spec(spec_text()).kind_code == 5
    with pytest.raises(InputError, match="model 'minilm' cannot run a synthesize job: use smollm2, tiny-gpt"):
        parse_spec(spec_text("minilm"))
    with pytest.raises(InputError, match="batch is an infer job's field: drop it from a synthesize job"):
        parse_spec(spec_text(extra="batch: 1\n"))
    with pytest.raises(InputError, match="tiny-gpt is not a chat model: drop \"system\""):
        job(blob(system="Be brief."), "tiny-gpt").program()


def test_a_seed_the_model_cannot_take_is_named():
    with pytest.raises(InputError, match=r"seed 2 \('Bread'\): tiny-gpt's vocabulary has no 'B'"):
        job(blob(template="a fact about {seed}", seeds=["rivers", "Bread"]), "tiny-gpt").program()


def test_the_samples_are_the_same_bits_on_every_backend_and_are_the_rendered_infer_job():
    inputs = blob()
    synth = job(inputs)
    model = synth.model()
    runs = [synth.run(backend, model=model) for backend in ("torch", "numpy")]
    plain = infer_job("smollm2", render(inputs))
    ref = plain.run("torch", model=model)
    assert {(r.output_hash, r.trace_root, r.outputs) for r in runs} == {(ref.output_hash, ref.trace_root, ref.outputs)}
    assert synth.program(model) == plain.program(model) and synth.posted_program(model) == plain.posted_program(model)
    assert synth.disputable and synth.constants(model).keys() == plain.constants(model).keys()
    assert synth.check_served(ref.outputs, ref.output_root, model) is None
    got = samples(inputs, ref.outputs)
    assert [(s["seed"], s["prompt"]) for s in got] == [("rivers", "Name one fact about rivers."),
                                                     ("bread", "Name one fact about bread.")]
    assert all(s["text"] for s in got)
    with pytest.raises(InputError, match="the outputs are not this job's"):
        samples(blob(seeds=["bread", "rivers"]), ref.outputs)
    kept = synth.tensors({len(synth.program(model)) - 1}, model)  # a dispute's replay: the infer job's record
    assert list(kept) == [len(plain.program(model)) - 1]
    made = provenance(cid_of(b"spec"), "smollm2", 7, ref.output_root, ref.trace_root, "0xabc", {"index": 0})
    assert made == {"kind": "synthesize", "job": cid_of(b"spec"), "model": "smollm2", "order": 7,
                    "output_root": "0x" + ref.output_root.hex(), "trace_root": "0x" + ref.trace_root.hex(),
                    "provider": "0xabc", "receipt": {"index": 0}}
