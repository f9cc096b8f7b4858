"""The gateway's overhead: an OpenAI-style request through the gateway, a standing lease and a
provider daemon (separate processes on 127.0.0.1, anvil with 1 s blocks), against the same exact
call made directly in this process (the model already loaded, the same backend).

Latency: requests alternate between the two paths on the same inputs; the overhead of request
i is its gateway time minus its direct time; p50 and p99 of that. Throughput: requests per
second through the gateway at concurrency 1 and 8 (threads, each its own HTTP client). The
workload is ``/v1/embeddings`` on one sentence (minilm) and ``/v1/completions`` of 8 tokens
(tiny-gpt). Windows of 256 requests: rolling to the next lease (a standby opened in the
background) happens inside the run, and so does posting each window on chain.

    python bench/gateway.py --json bench/results/gateway.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console
from rich.table import Table

from veracity.chain.anvil import Anvil, free_port
from veracity.chain.devnet import deploy, dev_accounts
from veracity.models.registry import loaded
from veracity.workloads.infer import infer

SENTENCES = ["the cat sat on the mat", "markets fell sharply today", "a quiet walk in the autumn rain",
             "exact arithmetic makes checking cheap", "she sold the old house by the sea"]
PROMPTS = ["the king ", "once upon a time ", "the lady said ", "in the morning ", "he walked to the "]


def direct(model: object, item: dict) -> object:
    return model.present(infer(model, [model.parse(item)], backend="torch", trace=False).outputs[0])  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--requests", type=int, default=200, help="latency pairs per workload")
    ap.add_argument("--seconds", type=float, default=15, help="each throughput run")
    args = ap.parse_args()
    console = Console(width=120)
    tmp = Path(tempfile.mkdtemp(prefix="veracity-bench-"))
    node = Anvil(accounts=4, block_time=1)
    procs: list[subprocess.Popen] = []
    try:
        accts = dev_accounts(4)
        dep = deploy(node.rpc_url, accts[0], accts)
        dep.write(tmp / "deployment.json")
        cfg = {"deployment": str(tmp / "deployment.json"), "key": accts[2].key, "home": str(tmp / "p"),
               "port": free_port(), "policy": {"models": ["minilm", "tiny-gpt"], "price_floor": 10**17,
                                                 "max_jobs": 8}}  # leases of both models, and their standbys
        (tmp / "p.json").write_text(json.dumps(cfg))
        procs.append(subprocess.Popen([sys.executable, "-m", "veracity.cli", "provider", "run", "--config", str(tmp / "p.json")],
                                      stdout=open(tmp / "p.log", "wb"), stderr=subprocess.STDOUT))
        _, _, reg, _ = dep.clients(accts[0].key)
        while reg.node(accts[2].address).role == 0:
            time.sleep(0.2)
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "veracity.cli", "gateway", "run", "--port", str(port),
                                       "--deployment", str(tmp / "deployment.json"), "--account", "1",
                                       "--window-requests", "256", "--window-s", "600"],
                                      stdout=open(tmp / "g.log", "wb"), stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}/v1"
        while True:
            try:
                httpx.get(f"{url}/models", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        workloads = {
            "embeddings (minilm)": ("embeddings", "minilm", lambda i: {"input": SENTENCES[i % 5]},
                                    lambda i: {"text": SENTENCES[i % 5]}),
            "completions (tiny-gpt, 8 tokens)": ("completions", "tiny-gpt",
                                                 lambda i: {"prompt": PROMPTS[i % 5], "max_tokens": 8},
                                                 lambda i: {"text": PROMPTS[i % 5], "max_tokens": 8}),
        }
        client = httpx.Client(timeout=120)
        result: dict = {"workloads": {}}
        table = Table("workload", "direct p50 ms", "gateway p50 ms", "overhead p50 ms", "overhead p99 ms",
                      "req/s c=1", "req/s c=8", title="gateway overhead and throughput (this CPU)")
        for name, (endpoint, model_name, body, item) in workloads.items():
            model = loaded(model_name)
            for i in range(10):  # warm both paths (and open the lease)
                client.post(f"{url}/{endpoint}", json={"model": model_name, **body(i)}).raise_for_status()
                direct(model, item(i))
            d_ms, g_ms = [], []
            for i in range(args.requests):
                t = time.perf_counter()
                want = direct(model, item(i))
                d_ms.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                resp = client.post(f"{url}/{endpoint}", json={"model": model_name, **body(i)})
                g_ms.append((time.perf_counter() - t) * 1e3)
                resp.raise_for_status()
                got = resp.json()["data"][0]["embedding"] if endpoint == "embeddings" else resp.json()["choices"][0]["text"]
                assert got == want, f"the gateway's answer differs from the direct exact run on request {i}"
            over = np.array(g_ms) - np.array(d_ms)

            def rps(concurrency: int) -> float:
                end = time.monotonic() + args.seconds
                done = [0] * concurrency

                def worker(k: int) -> None:
                    c, i = httpx.Client(timeout=120), k
                    while time.monotonic() < end:
                        c.post(f"{url}/{endpoint}", json={"model": model_name, **body(i)}).raise_for_status()
                        done[k] += 1
                        i += concurrency

                t = time.monotonic()
                with ThreadPoolExecutor(concurrency) as pool:
                    list(pool.map(worker, range(concurrency)))
                return sum(done) / (time.monotonic() - t)

            r1, r8 = rps(1), rps(8)
            row = {"direct_p50_ms": float(np.median(d_ms)), "gateway_p50_ms": float(np.median(g_ms)),
                   "p50_overhead_ms": float(np.percentile(over, 50)), "p99_overhead_ms": float(np.percentile(over, 99)),
                   "rps_c1": r1, "rps_c8": r8}
            result["workloads"][name] = row
            table.add_row(name, f"{row['direct_p50_ms']:.2f}", f"{row['gateway_p50_ms']:.2f}",
                          f"{row['p50_overhead_ms']:.2f}", f"{row['p99_overhead_ms']:.2f}", f"{r1:.1f}", f"{r8:.1f}")
        first = result["workloads"]["embeddings (minilm)"]
        result.update({k: first[k] for k in ("p50_overhead_ms", "p99_overhead_ms", "rps_c8")})
        windows = [ln for ln in (tmp / "g.log").read_text().splitlines() if "window posted" in ln or "lease " in ln]
        result["lease_events"] = len(windows)
        console.print(table)
        console.print(f"p50_overhead_ms {result['p50_overhead_ms']:.2f} (target <= 10), p99_overhead_ms "
                      f"{result['p99_overhead_ms']:.2f}, rps_c8 {result['rps_c8']:.1f} (embeddings); every answer "
                      f"equalled the direct exact run; {len(windows)} lease events in the gateway's log")
        write_json(args.json, result)
    finally:
        for p in procs:
            p.kill()
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
