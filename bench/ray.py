"""Providers on Ray: jobs per minute and a big inference job's wall time on 1, 2 and 4 Ray model
hosts, against the local executor (the provider's warm worker pool), on this machine.

A local cluster (``node.ray_executor.LocalCluster``: a head and two worker nodes of two CPUs each,
separate processes on 127.0.0.1, token authentication on) runs:

* ``jobs_per_min``: small MiniLM jobs (``--small`` items each) back to back for ``--seconds``, with
  1, 2 and 4 hosts (jobs in flight: as many as hosts), and the local pool with 2 workers;
* a big MiniLM inference job (``--big`` items, batch 8) cut into 1, 2 and 4 parts on as many hosts,
  and the same job whole in the local pool;
* ``same_bits``: every run's output hash and trace root equal to the local executor's;
* ``survived_worker_kill``: the big job again on 2 hosts while the worker node holding one host is
  killed; true when it still ends at the local executor's root;
* ``task_overhead_ms``: a trivial call on a model host, median (what splitting costs per part).

Two cores hold every Ray process here, so more hosts cannot run faster than two: the figures
show the overhead of Ray's scheduling and of cutting a job, which a cluster of real machines (or
GPUs) pays once per part while each part gets a machine of its own.

    python bench/ray.py --json bench/results/ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import write_json  # bench/_common.py (the script folder is on sys.path)

# this script is bench/ray.py: its folder, first on sys.path, would shadow the ray package; last, it does not
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
sys.modules.pop("ray", None)

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from veracity.node.ray_executor import LocalCluster, RayExecutor  # noqa: E402
from veracity.node.worker import WorkerPool  # noqa: E402
from veracity.workloads.jobs import Job  # noqa: E402
from veracity.workloads.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the sea a ship sails north under grey skies while gulls circle over the harbour at dawn".split()


def minilm_job(n: int, batch: int, salt: int = 0) -> Job:
    spec = load_spec(ROOT / "examples" / "jobs" / "minilm.yaml").model_copy(update={"batch": batch})
    lines = "".join(json.dumps({"text": " ".join(WORDS[(i + salt) % 7:(i + salt) % 7 + 3 + i % 5])}) + "\n"
                    for i in range(n))
    return Job(spec, lines.encode())


def throughput(run, seconds: float, in_flight: int, small: int) -> float:
    """Jobs finished per minute with ``in_flight`` at once, each a fresh small job."""
    done = [0]
    end = time.monotonic() + seconds
    start = time.monotonic()

    def loop(k: int) -> None:
        i = 0
        while time.monotonic() < end:
            run(minilm_job(small, 8, salt=k * 1000 + i))
            done[0] += 1
            i += 1

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(loop, range(in_flight)))
    return done[0] * 60 / (time.monotonic() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--small", type=int, default=8, help="items in each small job")
    ap.add_argument("--big", type=int, default=480, help="items in the big job")
    ap.add_argument("--seconds", type=float, default=20, help="each throughput run")
    args = ap.parse_args()
    console = Console()
    big = minilm_job(args.big, 8)
    pool = WorkerPool(2, backend="torch")
    local = pool.run(big)  # (warm)
    t = time.perf_counter()
    local = pool.run(big)
    local_big_s = time.perf_counter() - t
    local_jpm = throughput(pool.run, args.seconds, 2, args.small)
    pool.close()
    root = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    cluster = LocalCluster(root, workers=2, cpus=2)
    os.environ.update(cluster.driver_env())
    result: dict = {"local": {"big_s": round(local_big_s, 2), "jobs_per_min": round(local_jpm, 1)}}
    same = True
    try:
        ex = RayExecutor(cluster.address, hosts=4)
        cluster.wait(3)
        import ray

        overhead = []
        for _ in range(100):
            t = time.perf_counter()
            ray.get(ex.hosts[0].node.remote())
            overhead.append((time.perf_counter() - t) * 1000)
        result["task_overhead_ms"] = round(statistics.median(overhead), 2)
        ex.run(big, hosts=4)  # every host loads its model first
        result["jobs_per_min"], result["big_s"] = {}, {}
        for hosts in (1, 2, 4):
            t = time.perf_counter()
            got = ex.run(big, hosts=hosts)
            result["big_s"][str(hosts)] = round(time.perf_counter() - t, 2)
            same &= (got.output_hash, got.trace_root) == (local.output_hash, local.trace_root)
            result["jobs_per_min"][str(hosts)] = round(throughput(lambda j: ex.run(j, hosts=1), args.seconds, hosts,
                                                                  args.small), 1)
        ex.close(disconnect=False)
        # a worker node killed mid-job
        ex = RayExecutor(cluster.address, hosts=2)
        name_of = {n["NodeID"]: name for n in ray.nodes() for name in cluster.names if name in n["Resources"]}
        ex.run(minilm_job(16, 8))  # loaded
        victim = ray.get(ex.hosts[0].node.remote())
        bigger = minilm_job(args.big * 4, 8)  # long enough to be killed in the middle of
        want = bigger.run("torch")
        out: dict = {}
        run = threading.Thread(target=lambda: out.update(r=ex.run(bigger, timeout=600)))
        t = time.perf_counter()
        run.start()
        time.sleep(1.5)
        mid_job = run.is_alive()
        cluster.kill(name_of[victim])
        run.join(600)
        got = out.get("r")
        result["kill_big_s"] = round(time.perf_counter() - t, 2)
        result["survived_worker_kill"] = bool(mid_job and got is not None and (got.output_hash, got.trace_root) ==
                                              (want.output_hash, want.trace_root))
        ex.close()
    finally:
        cluster.stop()
    result["same_bits"] = bool(same)
    table = Table("executor", "big job wall (s)", "jobs per minute", title=(
        f"MiniLM on Ray vs the local pool, this machine's 2 cores (big job: {args.big} items; small: {args.small})"))
    table.add_row("local pool (2 workers)", f"{result['local']['big_s']}", f"{result['local']['jobs_per_min']}")
    for hosts in ("1", "2", "4"):
        table.add_row(f"ray, {hosts} host(s)", f"{result['big_s'][hosts]}", f"{result['jobs_per_min'][hosts]}")
    console.print(table)
    console.print(f"same_bits {result['same_bits']}; survived_worker_kill {result['survived_worker_kill']} "
                  f"(a job of {4 * args.big} items on 2 hosts, a worker node killed after 1.5 s: {result['kill_big_s']} s); "
                  f"a call on a model host: {result['task_overhead_ms']} ms median")
    write_json(args.json, result)
    return 0 if result["same_bits"] and result["survived_worker_kill"] else 1


if __name__ == "__main__":
    sys.exit(main())
