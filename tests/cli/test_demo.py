"""`veracity demo` tells the whole network story and exits 0 only when every step held."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_demo_runs_the_network_story(tmp_path):
    env = {**os.environ, "VERACITY_HOME": str(tmp_path), "COLUMNS": "160"}
    proc = subprocess.run([sys.executable, "-m", "veracity.cli", "demo"], capture_output=True, text=True, env=env,
                          timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for model in ("digits-mlp", "minilm", "tiny-gpt", "smollm2"):
        assert f"{model}: order" in out and "settled with p0 @ 4.5 VRC" in out
    assert "chat: 'What is the capital of France?' -> 'The capital of France is Paris.' (stop); receipt: order" in out
    assert out.count("bit-identical") == 6 and out.count("match") >= 7
    # a training job, and the same job as two work units on p0 and p1, end at one checkpoint
    m = re.search(r"digits-train: order (\d+) and its work units \(orders \d+, \d+\) ended at checkpoint", out)
    assert m and f"= order {m.group(1)}'s" in out and "p1 @ 2.375" in out
    assert re.search(r"reviews-finetune: order \d+ settled with p0 @ 4.5 VRC", out)  # the MiniLM LoRA fine-tune
    assert re.search(r"p2 stake\s*│\s*1,000\s*│\s*999\s*│\s*-1\s*│\s*yes", out)  # the late provider's collateral
    assert "every step happened as the protocol says" in out
    assert "overturned" in out  # the cheater was caught, judged and slashed: half its collateral and stake share went to the validator
    assert re.search(r"p3 stake\s*│\s*1,000\s*│\s*799.2\s*│\s*-200.8\s*│\s*yes", out)
    assert re.search(r"validator\s*│\s*99,900\s*│\s*100,000.4\s*│\s*\+100.4\s*│\s*yes", out)  # half burnt
    assert not (tmp_path / "devnet" / "deployment.json").exists()  # the user's devnet folder is untouched
