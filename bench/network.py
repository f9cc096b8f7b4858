"""The network end to end on 127.0.0.1: anvil, 3 provider daemons as processes, clients here.

Per job kind: end-to-end latency split into phases (order, match, run, commit, settle) and the
overhead over a bare exact run of the same job in-process (model already loaded); then jobs
settled per minute with 3 providers and ``--clients`` concurrent clients (each its own account). Challenge windows are 2 s here (the settle phase waits
them out), so the figures measure the machinery, not a policy.

    python bench/network.py --json bench/results/network.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console
from rich.table import Table

from veracity.chain.anvil import Anvil, free_port
from veracity.chain.devnet import deploy, dev_accounts
from veracity.client.jobs import submit
from veracity.workloads.infer import run_infer_job
from veracity.workloads.spec import Verification, load_spec

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["digits-mlp", "minilm", "tiny-gpt"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--clients", type=int, default=10, help="concurrent clients in the throughput run")
    ap.add_argument("--jobs", type=int, default=2, help="jobs each client runs, one after another")
    args = ap.parse_args()
    console = Console(width=120)
    tmp = Path(tempfile.mkdtemp(prefix="veracity-bench-"))
    n_accounts = 1 + args.clients + 3
    node = Anvil(accounts=n_accounts, block_time=1)
    procs = []
    try:
        accts = dev_accounts(n_accounts)
        first = 1 + args.clients  # providers after the clients
        dep = deploy(node.rpc_url, accts[0], accts)
        dep.write(tmp / "deployment.json")
        for i in range(3):
            cfg = {"deployment": str(tmp / "deployment.json"), "key": accts[first + i].key, "home": str(tmp / f"p{i}"),
                   "port": free_port(), "policy": {"models": KINDS, "price_floor": 10**17, "max_jobs": 16}}
            (tmp / f"p{i}.json").write_text(json.dumps(cfg))
            procs.append(subprocess.Popen([sys.executable, "-m", "veracity.cli", "provider", "run", "--config",
                                           str(tmp / f"p{i}.json")], stdout=subprocess.DEVNULL))
        _, _, reg, _ = dep.clients(accts[0].key)
        while any(reg.node(accts[first + i].address).role == 0 for i in range(3)):
            time.sleep(0.2)

        def spec(kind: str):
            s = load_spec(ROOT / "examples" / "jobs" / f"{kind}.yaml")
            return s.model_copy(update={"verification": Verification(challenge_window=2)})

        per_kind = {}
        for kind in KINDS:
            s = spec(kind)
            t = time.perf_counter()
            out = submit(s, dep, accts[1].key, bid_wait=20, result_timeout=300)
            total = time.perf_counter() - t
            from veracity.models.registry import load

            model, data = load(kind), Path(s.inputs.path).read_bytes()
            run_infer_job(kind, data, model=model)  # warm-up
            t = time.perf_counter()
            run_infer_job(kind, data, model=model)
            bare = time.perf_counter() - t
            per_kind[kind] = {"phases_s": out.phases, "end_to_end_s": total, "bare_exact_s": bare,
                              "overhead_ratio": total / bare}

        settled: list[float] = []
        errors: list[BaseException] = []

        def client(key: str, n: int) -> None:
            try:
                for j in range(n):
                    submit(spec(KINDS[j % 3]), dep, key, bid_wait=30, result_timeout=600)
                    settled.append(time.perf_counter())
            except BaseException as exc:  # reported below
                errors.append(exc)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(accts[1 + c].key, args.jobs)) for c in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        jobs_per_min = len(settled) / ((time.perf_counter() - t0) / 60)
    finally:
        for p in procs:
            p.kill()
        node.stop()
    overall = sum(v["end_to_end_s"] for v in per_kind.values()) / sum(v["bare_exact_s"] for v in per_kind.values())
    result = {"jobs_per_min": jobs_per_min, "overhead_ratio": overall, "per_kind": per_kind, "providers": 3,
              "clients": args.clients, "jobs_per_client": args.jobs, "challenge_window_s": 2}
    table = Table("job", "order", "match", "run", "commit", "settle", "end to end", "bare exact run", "overhead",
                  title="network on 127.0.0.1 (anvil, 3 provider processes)")
    for kind, v in per_kind.items():
        ph = v["phases_s"]
        table.add_row(kind, *(f"{ph.get(k, 0):.1f}s" for k in ("order", "match", "run", "commit", "settle")),
                      f"{v['end_to_end_s']:.1f}s", f"{v['bare_exact_s']:.2f}s", f"{v['overhead_ratio']:.0f}x")
    console.print(table)
    console.print(f"jobs settled per minute, 3 providers, {args.clients} concurrent clients: {jobs_per_min:.1f}; "
                  f"overall overhead ratio {overall:.0f}x")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
