"""The resource planner against hand-checked figures and against torch's FLOP counter."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from veracity.errors import UsageError
from veracity.workloads.planner import (
    ModelShape,
    flops_per_token,
    inference_memory,
    plan,
    training_memory,
)

GPT3 = ModelShape(175e9, 96, 12288, 2048)
LLAMA7B = ModelShape(7e9, 32, 4096, 4096)

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def test_gpt3_training_flops_are_the_published_figure():
    total = flops_per_token(GPT3, "train") * 300e9
    assert total == pytest.approx(3.14e23, rel=0.05)  # 6 N D = 3.15e23, plus attention


def test_memory_by_hand():
    inf = inference_memory(LLAMA7B, batch=1)
    assert inf["weights"] == 14e9 and inf["kv_cache"] == 2 * 32 * 4096 * 4096 * 2  # 2.1 GB of KV at 4k tokens
    tr = training_memory(LLAMA7B)
    assert tr["weights"] + tr["gradients"] + tr["optimizer"] == 16 * 7e9  # 112 GB: more than one H100 holds


def test_plans_fit_split_and_name_their_bottleneck():
    p = plan(LLAMA7B, "train", 1e9, "8xH100", batch=1024)
    assert p.fits and p.dp * p.tp * p.pp == 8 and p.dp < 8  # 112 GB of state cannot be replicated 8 ways
    assert p.bottleneck == "compute"
    decode = plan(LLAMA7B, "infer", 1e6, "1xH100")
    assert decode.fits and decode.bottleneck == "memory"  # batch-1 decoding reads every weight per token
    too_big = plan(GPT3, "train", 1e9, "1xH100", batch=64)
    assert not too_big.fits and too_big.memory_per_device_gb > 80
    with pytest.raises(UsageError, match="COUNTxNAME"):
        plan(LLAMA7B, "infer", 1, "8xTPUv9")


def matmul_params(model):
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def counted(model, *args):
    """FLOPs torch counts; attention runs as plain matmuls so that it is counted too (the fused CPU
    kernel is not)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with FlopCounterMode(display=False) as fc, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(*args)
    return fc.get_total_flops()


def test_against_torch_flop_counter_on_our_models():
    from veracity.models import gpt, mlp
    from veracity.models.encoder import float_bert

    g = gpt.FloatGPT(gpt.GPTConfig(vocab="abcdefghij", block=128, layers=2, heads=4, embd=128))
    t, b = 128, 2
    want = flops_per_token(ModelShape(matmul_params(g), 2, 128, t), "infer") * t * b
    assert counted(g, torch.zeros(b, t, dtype=torch.long)) == pytest.approx(want, rel=0.10)

    bert = float_bert()
    t, b = 64, 2
    shape = ModelShape(matmul_params(bert), bert.config.num_hidden_layers, bert.config.hidden_size, t)
    want = flops_per_token(shape, "infer") * t * b
    assert counted(bert, torch.ones(b, t, dtype=torch.long)) == pytest.approx(want, rel=0.10)

    m = mlp.float_mlp()
    want = flops_per_token(ModelShape(matmul_params(m), 3, 128, 1), "infer") * 32
    assert counted(m, torch.zeros(32, 64)) == pytest.approx(want, rel=0.10)


def test_the_cli_prints_a_table_or_json():
    args = ["--params", "7e9", "--layers", "32", "--hidden", "4096", "--seq", "4096", "--tokens", "1e9",
            "--mode", "train", "--devices", "8xH100"]
    proc = subprocess.run([sys.executable, "-m", "veracity.cli", "plan", *args, "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["flops"] == pytest.approx((6 * 7e9 + 12 * 32 * 4096 * 4096) * 1e9) and out["bottleneck"] == "compute"
    bad = subprocess.run([sys.executable, "-m", "veracity.cli", "plan", *args[:-1], "8xNothing"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "COUNTxNAME" in bad.stderr and "Traceback" not in bad.stderr


def test_a_job_estimate_counts_what_the_exact_run_computes():
    """An inference job's FLOPs from its program (padded batches included) are torch's count of
    the float model on the same padded batch, within 10%."""
    from veracity.models.encoder import float_bert
    from veracity.models.registry import loaded
    from veracity.workloads.jobs import Job
    from veracity.workloads.planner import estimate_job
    from veracity.workloads.spec import load_spec

    model = loaded("minilm")
    spec = load_spec(EXAMPLES / "jobs" / "minilm.yaml")
    data = Path(spec.inputs.path).read_bytes()
    ids = [model.parse(json.loads(line)) for line in data.decode().splitlines()]
    width = max(map(len, ids))
    x = torch.tensor([i + [0] * (width - len(i)) for i in ids])
    with FlopCounterMode(display=False) as counter:
        float_bert()(input_ids=x, attention_mask=(x != 0).long())
    ours = estimate_job(Job(spec, data))
    assert abs(ours.flops / counter.get_total_flops() - 1) < 0.10
    assert ours.fits("1xCPU") and ours.seconds("1xCPU", 0.05) < 1
    train = load_spec(EXAMPLES / "jobs" / "digits-train.yaml")
    est = estimate_job(Job(train, Path(train.inputs.path).read_bytes()))
    assert est.flops == 6 * (64 * 128 + 128 * 64 + 64 * 10) * 32 * 120  # 6N per example, 120 steps of 32


def test_a_program_is_counted_and_bounded_before_it_is_built():
    """Hole 12: a training job's program length comes from its first two steps, so the heaviest
    legal digits-MLP spec (4.5 million records, ~30 s to build) is refused at once; an inference
    program stops building once it passes the limit."""
    from veracity.exact.program import ProgramTooLarge
    from veracity.workloads.jobs import Job
    from veracity.workloads.planner import MAX_PROGRAM_RECORDS, program_records
    from veracity.workloads.spec import MAX_STEPS, load_spec

    def training(name, steps):
        spec = load_spec(EXAMPLES / "jobs" / f"{name}.yaml")
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"steps": steps})})
        return Job(spec, Path(spec.inputs.path).read_bytes())

    for name in ("digits-train", "tiny-gpt-train", "reviews-finetune"):
        job = training(name, 7)
        assert program_records(job) == len(job.program()), name
    heaviest = training("digits-train", MAX_STEPS)
    assert program_records(heaviest) == 4_500_018
    with pytest.raises(ProgramTooLarge, match=f"4500018 records, more than {MAX_PROGRAM_RECORDS}"):
        heaviest.program(limit=MAX_PROGRAM_RECORDS)
    prompts = "".join(json.dumps({"text": "a", "max_tokens": 127}) + "\n" for _ in range(64)).encode()
    generate = Job(load_spec(EXAMPLES / "jobs" / "tiny-gpt.yaml"), prompts)  # ~309,000 records in all
    with pytest.raises(ProgramTooLarge, match=f"more than {MAX_PROGRAM_RECORDS} records"):
        generate.program(limit=MAX_PROGRAM_RECORDS)
