"""Job specs: the examples load; every malformed spec is a clear error naming the field."""

from pathlib import Path

import pytest

from veracity.cid import cid_of
from veracity.errors import InputError
from veracity.workloads.jobs import Job
from veracity.workloads.spec import load_spec, parse_spec

JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"
GOOD = "kind: infer\nmodel: minilm\ninputs: {cid: %s}\nmax_price: 2.5\ndeadline: 600\n" % cid_of(b"x")


@pytest.mark.parametrize("name", ["digits-mlp", "minilm", "tiny-gpt"])
def test_example_specs_load(name):
    spec = load_spec(JOBS / f"{name}.yaml")
    assert spec.model == name and spec.kind_code == 1 and Path(spec.inputs.path).is_file()
    assert spec.verification.challenge_window == 60 and len(spec.model_id) == 32


def test_defaults_and_cid_inputs():
    spec = parse_spec(GOOD)
    assert spec.inputs.cid == cid_of(b"x") and spec.verification.spot_check_rate == 0.1
    assert spec.batch is None and Job(spec, b"").batch == 32
    assert Job(parse_spec(GOOD + "batch: 1\n"), b"").batch == 1  # a gateway window's


def test_an_infer_jobs_batch_changes_its_program_not_its_outputs():
    inputs = b'{"text": "one"}\n{"text": "two words"}\n'
    one, many = (Job(parse_spec(GOOD + f"batch: {b}\n"), inputs) for b in (1, 2))
    assert len(one.posted_program()) != len(many.posted_program())
    assert one.run("numpy").outputs == many.run("numpy").outputs


@pytest.mark.parametrize("text,message", [
    ("kind: [infer", "not valid YAML"),
    ("- a list", "must be a YAML mapping"),
    (GOOD.replace("minilm", "gpt-17"), "model: unknown model 'gpt-17'"),
    (GOOD.replace("infer", "mine-bitcoin"), "kind: unknown job kind 'mine-bitcoin': use finetune, infer, .*synthesize, train"),
    (GOOD + "colour: blue\n", "colour: unknown field"),
    (GOOD + "max_price: 9000\n", "the key 'max_price' appears twice"),  # YAML would keep the last silently
    (GOOD + "verification: {spot_check_rate: 0.1, spot_check_rate: 1}\n", "the key 'spot_check_rate' appears twice"),
    (GOOD.replace("max_price: 2.5", "max_price: -1"), "max_price: Input should be greater than 0"),
    (GOOD.replace("deadline: 600\n", ""), "deadline: missing"),
    (GOOD.replace("{cid: %s}" % cid_of(b"x"), "{cid: Qmnope}"), "not a CIDv1"),
    (GOOD.replace("{cid: %s}" % cid_of(b"x"), "{cid: %s, path: a.jsonl}" % cid_of(b"x")), "exactly one of"),
    (GOOD + "verification: {spot_check_rate: 2}\n", "verification.spot_check_rate"),
    (GOOD.replace("infer", "train"), "a train job needs a 'training' section"),
    (GOOD.replace("infer", "train") + "training: {steps: 5}\n", "model 'minilm' cannot be trained by a train job"),
    (GOOD + "training: {steps: 5}\n", "a infer job takes no 'training' section"),
    (GOOD + "batch: 0\n", "batch: Input should be greater than 0"),
    (GOOD.replace("infer", "train").replace("minilm", "digits-mlp") + "batch: 8\ntraining: {steps: 5}\n",
     "batch is an infer job's field: a train job's batch is training.batch"),
    (GOOD.replace("infer", "train").replace("minilm", "digits-mlp") + "training: {steps: 0}\n",
     "training.steps: Input should be greater than 0"),
    (GOOD.replace("infer", "train").replace("minilm", "digits-mlp") + "training: {steps: 5, optimizer: lion}\n",
     "training.optimizer: Input should be 'sgd', 'momentum' or 'adam'"),
    (GOOD.replace("infer", "train").replace("minilm", "digits-mlp") + "training: {steps: 5, start: ckpt-1}\n",
     "training.start: 'ckpt-1' is not a CIDv1"),
])
def test_malformed_specs_are_refused_with_the_field_named(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_spec(text)


def test_a_train_spec_names_its_steps_and_start():
    text = GOOD.replace("infer", "train").replace("minilm", "digits-mlp")
    spec = parse_spec(text + "training: {steps: 30, optimizer: adam, lr: 0.001, start: %s}\n" % cid_of(b"ck"))
    assert spec.kind_code == 2 and spec.training.start == cid_of(b"ck")
    params = spec.training.params()
    assert (params.steps, params.optimizer, params.lr, params.batch) == (30, "adam", 0.001, 32)


def test_missing_spec_and_missing_inputs_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    spec = tmp_path / "job.yaml"
    spec.write_text(GOOD.replace("{cid: %s}" % cid_of(b"x"), "{path: missing.jsonl}"))
    with pytest.raises(InputError, match="inputs.path missing.jsonl not found"):
        load_spec(spec)


def test_training_defaults_follow_the_model():
    text = GOOD.replace("infer", "train").replace("minilm", "tiny-gpt") + "training: {steps: 3}\n"
    p = parse_spec(text).training.params("train", "tiny-gpt")
    assert (p.batch, p.optimizer, p.lr) == (8, "adam", 0.003)
    mlp = parse_spec(text.replace("tiny-gpt", "digits-mlp")).training.params("train", "digits-mlp")
    assert (mlp.batch, mlp.optimizer, mlp.lr) == (32, "momentum", 0.05)


def test_threads_that_parse_specs_at_once_all_see_every_job_kind():
    """The registry is filled on first use; a thread that asked while another filled it once saw
    it empty ("unknown job kind 'infer': use ")."""
    import subprocess
    import sys

    script = """
import threading
from veracity.workloads.spec import parse_spec
text = "kind: infer\\nmodel: minilm\\ninputs: {cid: %s}\\nmax_price: 1\\ndeadline: 60\\n"
out, barrier = [], threading.Barrier(8)
def parse():
    barrier.wait()
    try:
        out.append(parse_spec(text).kind)
    except Exception as exc:
        out.append(str(exc))
threads = [threading.Thread(target=parse) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(sorted(set(out)))
""" % cid_of(b"x")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "['infer']", proc.stdout + proc.stderr
