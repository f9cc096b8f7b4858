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
    up = veracity("devnet", "up", "--accounts", "4", env=env)
    assert up.returncode == 0, up.stderr
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
        out = tmp_path / "out.jsonl"
        proc = veracity("job", "submit", spec, "--output", out, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "settled" in proc.stdout
        local = run_infer_job("tiny-gpt", (ROOT / "examples" / "inputs" / "tiny-gpt.jsonl").read_bytes())
        assert out.read_bytes() == local.outputs
        listing = veracity("job", "list", env=env)
        assert listing.returncode == 0 and "finalized" in listing.stdout
        status = veracity("job", "status", "1", env=env)
        assert status.returncode == 0 and "finalized" in status.stdout
        nope = veracity("job", "status", "99", env=env)
        assert nope.returncode == 2 and "no order 99" in nope.stderr
        bad = veracity("job", "submit", tmp_path / "missing.yaml", env=env)
        assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        if provider:
            provider.kill()
        veracity("devnet", "down", env=env)


def test_devnet_starts_and_stops_its_daemons(tmp_path):
    env = {**os.environ, "VERACITY_HOME": str(tmp_path)}
    up = veracity("devnet", "up", "--providers", "2", "--validators", "1", env=env)
    try:
        assert up.returncode == 0, up.stderr
        every = json.loads((tmp_path / "devnet" / "daemons.json").read_text())
        assert [d["kind"] for d in every] == ["provider", "provider", "validator", "explorer"]
        daemons, explorer = every[:3], every[3]
        dep = Deployment.read(tmp_path / "devnet" / "deployment.json")
        _, _, reg, _ = dep.clients(dep.accounts[0].key)
        assert [reg.node(d["address"]).role for d in daemons] == [1, 1, 2]
        assert all(str(d["pid"]) in up.stdout for d in daemons)
        for d in daemons:  # a daemon's config holds its key: its owner's alone
            assert (Path(d["home"]) / "config.json").stat().st_mode & 0o777 == 0o600
        assert f"explorer: {explorer['url']}" in up.stdout  # and the explorer's page lists the nodes
        import httpx

        end = time.monotonic() + 30  # once its index has read the registrations
        while not all(d["address"].lower() in (board := httpx.get(explorer["url"] + "providers", timeout=30).text)
                      for d in daemons[:2]):
            assert time.monotonic() < end, board
            time.sleep(0.3)
    finally:
        down = veracity("devnet", "down", env=env)
    assert "4 daemons stopped" in down.stdout
    daemons = every
    time.sleep(1)
    for d in daemons:
        assert not Path(f"/proc/{d['pid']}").exists() or "zombie" in Path(f"/proc/{d['pid']}/status").read_text().lower()
