"""`veracity devnet up`, `veracity provider run` and `veracity job submit` as separate processes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from veracity.chain.anvil import free_port
from veracity.chain.devnet import Deployment
from veracity.workloads.infer import run_infer_job

ROOT = Path(__file__).resolve().parent.parent.parent


def veracity(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "veracity.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def test_job_submit_through_the_cli(tmp_path):
    env = {**os.environ, "VERACITY_HOME": str(tmp_path)}
    assert veracity("devnet", "up", "--accounts", "4", env=env).returncode == 0
    provider = None
    try:
        dep = Deployment.read(tmp_path / "devnet" / "deployment.json")
        cfg = tmp_path / "provider.json"
        cfg.write_text(json.dumps({"deployment": str(tmp_path / "devnet" / "deployment.json"),
                                   "key": dep.accounts[3].key, "home": str(tmp_path / "p"), "port": free_port(),
                                   "policy": {"models": ["tiny-gpt"], "price_floor": 10**17}}))
        provider = subprocess.Popen([sys.executable, "-m", "veracity.cli", "provider", "run", "--config", str(cfg)],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, reg, _ = dep.clients(dep.accounts[3].key)
        for _ in range(300):
            if reg.node(dep.accounts[3].address).role == 1:
                break
            time.sleep(0.1)
        spec = tmp_path / "job.yaml"
        spec.write_text((ROOT / "examples" / "jobs" / "tiny-gpt.yaml").read_text()
                        .replace("../inputs/", str(ROOT / "examples" / "inputs") + "/")
                        .replace("challenge_window: 60", "challenge_window: 2"))
        proc = veracity("job", "submit", spec, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "settled" in proc.stdout
        local = run_infer_job("tiny-gpt", (ROOT / "examples" / "inputs" / "tiny-gpt.jsonl").read_bytes())
        assert proc.stdout.endswith(local.outputs_jsonl.decode())
        bad = veracity("job", "submit", tmp_path / "missing.yaml", env=env)
        assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        if provider:
            provider.kill()
        veracity("devnet", "down", env=env)
