"""`veracity infer` as a user runs it: a real subprocess, real files, one-line errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from veracity.models.registry import load
from veracity.workloads.infer import infer

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "inputs"
LAST_LINE = re.compile(r"^output ([0-9a-f]{64}) trace ([0-9a-f]{64}) steps (\d+)$")


def veracity(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "veracity.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("model", ["digits-mlp", "minilm", "tiny-gpt"])
def test_infer_writes_outputs_and_prints_hashes(model, tmp_path):
    out = tmp_path / "out.jsonl"
    src = EXAMPLES / f"{model}.jsonl"
    proc = veracity("infer", model, "--input", src, "--output", out, "--backend", "numpy")
    assert proc.returncode == 0, proc.stderr
    m = LAST_LINE.match(proc.stdout.strip().splitlines()[-1])
    assert m, proc.stdout
    inputs = [json.loads(line) for line in src.read_text().splitlines()]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(inputs)
    for i, r in zip(inputs, rows):
        assert {k: r[k] for k in i} == i  # the input's fields are carried through
    # the printed hashes are those of an in-process torch run of the same inputs
    exact = load(model)
    ref = infer(exact, [exact.parse(i) for i in inputs], backend="torch", batch_size=32)
    assert m.group(1) == ref.output_hash.hex() and m.group(2) == ref.trace_root.hex()
    assert int(m.group(3)) == ref.steps
    if model == "digits-mlp":
        assert sum(r["output"]["class"] == r["label"] for r in rows) >= len(rows) - 1
        assert len(rows[0]["output"]["logits"]) == 10
    elif model == "minilm":
        assert len(rows[0]["output"]) == 384
        assert abs(sum(v * v for v in rows[0]["output"]) - 1) < 1e-3
    else:
        assert all(isinstance(r["output"], str) and len(r["output"]) == r["max_tokens"] for r in rows)


def write(tmp_path, text, name="in.jsonl"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("case,model,content,message", [
    ("missing file", "minilm", None, "not found"),
    ("bad json", "minilm", '{"text": "ok"}\n{"text": oops}\n', "line 2: not valid JSON"),
    ("not an object", "minilm", '["a list"]\n', "expected a JSON object"),
    ("unknown model", "gpt-17", '{"text": "hi"}\n', "unknown model 'gpt-17'"),
    ("too long", "minilm", json.dumps({"text": "word " * 400}) + "\n", "input too long"),
    ("too long gpt", "tiny-gpt", json.dumps({"text": "the " * 40, "max_tokens": 5}) + "\n", "input too long"),
    ("bad pixels", "digits-mlp", json.dumps({"pixels": [99] * 64}) + "\n", "integers from 0 to 16"),
    ("wrong field", "minilm", json.dumps({"prompt": "hi"}) + "\n", '"text"'),
    ("empty file", "minilm", "\n\n", "no input lines"),
    ("lone surrogate", "minilm", '{"text": "a \\ud800 b"}\n', "lone surrogate"),
    ("nested too deeply", "minilm", '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "nested more than 64 deep"),
])
def test_bad_input_is_a_one_line_error_with_exit_2(tmp_path, case, model, content, message):
    src = tmp_path / "missing.jsonl" if content is None else write(tmp_path, content)
    proc = veracity("infer", model, "--input", src, "--output", tmp_path / "o.jsonl")
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_a_raw_line_separator_inside_a_string_is_text(tmp_path):
    """JSON allows a raw U+2028 in a string; lines end at newlines only."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "one\u2028two"}\n', encoding="utf-8")
    proc = veracity("infer", "minilm", "--input", src, "--output", tmp_path / "o.jsonl", "--backend", "numpy")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o.jsonl").read_text(encoding="utf-8"))["text"] == "one\u2028two"


def test_unknown_backend_is_refused(tmp_path):
    src = write(tmp_path, '{"text": "hi"}\n')
    proc = veracity("infer", "minilm", "--input", src, "--output", tmp_path / "o", "--backend", "cuda-magic")
    assert proc.returncode == 2 and "unknown backend" in proc.stderr


def test_models_lists_the_registry():
    proc = veracity("models")
    assert proc.returncode == 0
    for name in ("digits-mlp", "minilm", "tiny-gpt"):
        assert name in proc.stdout


@pytest.mark.parametrize("kind", ["provider", "validator"])
def test_daemon_configs_are_checked_before_starting(kind, tmp_path):
    missing = veracity(kind, "run", "--config", tmp_path / "none.json")
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"deployment": "d.json", "port": "eighty"}))
    proc = veracity(kind, "run", "--config", bad)
    assert proc.returncode == 2 and f"not a valid {kind} config" in proc.stderr and "key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_job_estimate_prices_a_job_before_it_is_posted():
    jobs = EXAMPLES.parent / "jobs"
    proc = veracity("job", "estimate", jobs / "digits-train.yaml", "--devices", "1xCPU", "--devices", "8xH100")
    assert proc.returncode == 0, proc.stderr
    assert "train digits-mlp: 17 k parameters, 120 steps of 32" in proc.stdout
    assert re.search(r"8xH100\s*│\s*392 M", proc.stdout)  # 6 x 17,024 parameters x 32 x 120 FLOPs
    bad = veracity("job", "estimate", jobs / "minilm.yaml", "--devices", "3xTPU")
    assert bad.returncode != 0 and "write COUNTxNAME, e.g. 8xH100" in bad.stderr and "Traceback" not in bad.stderr


def test_train_runs_a_training_job_here_and_work_units_meet(tmp_path):
    """`veracity train` gives the checkpoint a provider would commit; two units of 30 steps, the
    second resumed from the first's checkpoint file, end at the 60-step run's hash."""
    spec = EXAMPLES.parent / "jobs" / "digits-train.yaml"
    whole = veracity("train", spec, "--steps", 60, "-o", tmp_path / "whole.ckpt",
                     "--eval", EXAMPLES / "digits-heldout.jsonl")
    assert whole.returncode == 0, whole.stderr
    assert re.search(r"held-out digits-heldout.jsonl: accuracy 0\.\d{4}", whole.stderr)
    last = whole.stdout.strip().splitlines()[-1]
    assert re.match(r"^checkpoint [0-9a-f]{64} cid bafkrei[a-z2-7]+ trace [0-9a-f]{64} steps 60$", last)
    first = veracity("train", spec, "--steps", 30, "-o", tmp_path / "a.ckpt")
    second = veracity("train", spec, "--steps", 30, "--start", tmp_path / "a.ckpt", "-o", tmp_path / "b.ckpt")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert second.stdout.split()[1] == last.split()[1] and second.stdout.split()[3] == last.split()[3]
    assert (tmp_path / "b.ckpt").read_bytes() == (tmp_path / "whole.ckpt").read_bytes()
    bad = veracity("train", EXAMPLES.parent / "jobs" / "minilm.yaml", "-o", tmp_path / "x.ckpt")
    assert bad.returncode != 0 and "is a job of kind 'infer'" in bad.stderr and "Traceback" not in bad.stderr


def test_every_job_kind_is_judged_on_chain_so_none_asks_for_consent(tmp_path):
    """Every kind a client can order is judged op by op in a dispute (``judged_on_chain``), so
    ``--accept-unjudged`` (the consent a kind no referee judged needed) is asked for none."""
    from veracity.workloads.workload import workloads

    assert all(w.judged_on_chain for w in workloads()), [w for w in workloads() if not w.judged_on_chain]
    spec = EXAMPLES.parent / "jobs" / "reviews-finetune.yaml"
    proc = veracity("job", "submit", spec, "--deployment", tmp_path / "none.json")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not yet judged on chain" not in proc.stderr and "none.json" in proc.stderr, proc.stderr
