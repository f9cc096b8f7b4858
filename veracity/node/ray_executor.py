"""Run a provider's jobs on a Ray cluster (its ``executor: ray``), with the same bits as its own pool.

Models live in long-lived ``ModelHost`` actors, spread over the cluster's nodes, each loading a
model once and keeping it (``models.registry.loaded``). A job is Ray tasks on them: an inference
job's items are cut at batch boundaries into parts (``infer.parts_of``), one per host (more when
the planner's estimate of the job's memory exceeds a host's share), run side by side, and joined
in order (``infer.joined_parts``): batches share no record, so the output and the trace root are
the unsplit run's. A training job runs whole on whichever host is free (its steps are sequential;
a client that wants it split posts work units, each its own order). A host whose node dies is
restarted elsewhere and its calls retried; a job whose parts do not all come back raises
``WorkerError``, and the provider commits nothing.

Ray's token authentication is on: the executor connects with the cluster's token (``ray_token``
in the provider's config, or ``RAY_AUTH_TOKEN``), and a cluster started by ``start_cluster`` (the
tests, the benchmark) listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from veracity.errors import VeracityError
from veracity.node.worker import WorkerError
from veracity.workloads.jobs import Job
from veracity.workloads.workload import JobResult

RETRIES = 3  # a host's call, again elsewhere, after its node died


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise VeracityError("executor: ray needs the ray package (pip install ray==2.60.0)") from None
    return ray


class ModelHost:
    """One Ray actor: runs job parts and whole jobs on the models it keeps loaded."""

    def __init__(self, backend: str, threads: int | None = None) -> None:
        from veracity import runtime

        runtime.tune_allocator()
        runtime.set_threads(threads or 1)
        self.backend = backend

    def part(self, model_name: str, lines: bytes, batch_size: int) -> Any:
        """A part of an infer job: its whole batches' input lines, run with the coarse trace."""
        from veracity.models.registry import loaded
        from veracity.workloads.infer import input_records, parse_items, part_run

        m = loaded(model_name)
        return part_run(m, parse_items(m, input_records(lines), "inputs"), self.backend, batch_size)

    def job(self, job: Job, behaviour: str = "honest") -> JobResult:
        """A whole job (a training job; an adversary's run in tests)."""
        from veracity.models.registry import loaded
        from veracity.node.worker import _job

        return _job(job, self.backend, None if job.trains else loaded(job.model_name), behaviour)

    def node(self) -> str:
        """The Ray node this host runs on."""
        return _ray().get_runtime_context().get_node_id()


class RayExecutor:
    """``run(job, backend, timeout, behaviour)`` on a Ray cluster at ``address``, with ``hosts`` model
    hosts; ``status()`` says what the cluster holds; ``close()`` disconnects."""

    def __init__(self, address: str, hosts: int = 2, backend: str = "torch", token: str | None = None,
                 host_memory: int | None = None) -> None:
        if token:  # before ray is imported: it reads its settings then
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN"] = token
        if address.split(":")[0] in ("127.0.0.1", "localhost"):  # keep a local cluster's address as given
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            import ray._private.services as services  # (ray==2.60.0: else it dials the host's external address)

            services.get_node_ip_address = lambda address=None: "127.0.0.1"
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray = _ray()
        try:
            ray.init(address=address, namespace="veracity", log_to_driver=False, ignore_reinit_error=True)
        except Exception as exc:
            raise VeracityError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0][:200]}") from None
        self.backend = backend
        self.host_memory = host_memory  # a host's share of memory: a job estimated above it is cut finer
        remote = ray.remote(ModelHost).options(num_cpus=1, max_restarts=-1, max_task_retries=RETRIES,
                                               scheduling_strategy="SPREAD",
                                               **({"memory": host_memory} if host_memory else {}))  # Ray reserves it
        self.hosts = [remote.remote(backend) for _ in range(max(1, hosts))]
        self._next = 0
        self._lock = threading.Lock()
        self.in_flight: dict[str, float] = {}  # job -> since when

    def _hosts(self, n: int) -> list[Any]:
        with self._lock:  # jobs that overlap start on different hosts
            start, self._next = self._next, self._next + n
        return [self.hosts[(start + i) % len(self.hosts)] for i in range(n)]

    def parts(self, job: Job, hosts: int | None = None) -> int:
        """How many parts an infer job is cut into: one per host (``hosts`` of them), more when the
        planner's estimate of its memory exceeds ``host_memory`` (each part then holds about a host's
        share)."""
        n = min(hosts or len(self.hosts), len(self.hosts))
        if self.host_memory:
            from veracity.workloads.planner import estimate_job

            n = max(n, -(-int(estimate_job(job).memory_bytes) // self.host_memory))
        return n

    def run(self, job: Job, backend: str | None = None, timeout: float = 600, behaviour: str = "honest",
            hosts: int | None = None) -> JobResult:
        """The job's result, from ``hosts`` of the model hosts (all of them by default)."""
        ray = _ray()
        key = f"{job.model_name}:{id(job)}"
        self.in_flight[key] = time.time()
        try:
            whole = job.trains or behaviour != "honest" or job.workload.kind != "infer"
            if whole:
                refs = [self._hosts(1)[0].job.remote(job, behaviour)]
            else:
                from veracity.workloads.infer import input_records, parts_of

                lines = [line for line in job.inputs.decode("utf-8").split("\n") if line.strip()]
                cuts = parts_of(len(input_records(job.inputs)), job.batch, self.parts(job, hosts))
                refs = [host.part.remote(job.model_name, ("\n".join(lines[lo:hi]) + "\n").encode(), job.batch)
                        for host, (lo, hi) in zip(self._hosts(len(cuts)), cuts)]
            try:
                done = ray.get(refs, timeout=timeout)
            except ray.exceptions.GetTimeoutError:
                for r in refs:
                    ray.cancel(r)
                raise WorkerError(f"the job ran past its {timeout:.0f} s on the Ray cluster") from None
            except ray.exceptions.RayTaskError as exc:  # the job's own error (refused inputs) as the pool says it
                cause = getattr(exc, "cause", None)
                said = str(cause) if isinstance(cause, VeracityError) else str(exc).splitlines()[0][:300]
                raise WorkerError(said) from None
            except ray.exceptions.RayError as exc:
                raise WorkerError(f"the job failed on the Ray cluster: {str(exc).splitlines()[0][:300]}") from None
            if whole:
                return done[0]
            from veracity.workloads.infer import joined_parts

            return joined_parts(job.model(), job.inputs, done)
        finally:
            self.in_flight.pop(key, None)

    def status(self) -> dict[str, Any]:
        """The cluster: its live nodes (address, CPUs, memory), the model hosts and the jobs in flight."""
        ray = _ray()
        nodes = [{"node": n["NodeID"][:12], "address": n.get("NodeManagerAddress"),
                  "cpus": n.get("Resources", {}).get("CPU", 0), "memory": int(n.get("Resources", {}).get("memory", 0))}
                 for n in ray.nodes() if n.get("Alive")]
        return {"executor": "ray", "nodes": nodes, "hosts": len(self.hosts), "jobs_in_flight": len(self.in_flight)}

    def close(self, disconnect: bool = True) -> None:
        """Kill the model hosts, and (``disconnect``) leave the cluster."""
        ray = _ray()
        for h in self.hosts:
            try:
                ray.kill(h)
            except Exception:
                pass
        if disconnect:
            ray.shutdown()


# a local cluster: what the tests and the benchmark start, as separate processes on 127.0.0.1 ----------
# ``ray start`` turns 127.0.0.1 into the host's external address and then listens on every interface;
# this keeps every listener on loopback (ray==2.60.0's node-address lookup, pinned)
RAY_CLI = ["-c", "import sys, ray._private.services as s; s.get_node_ip_address = lambda address=None: '127.0.0.1'; "
           "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"]
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
               "RAY_health_check_failure_threshold": "3"}  # a dead node noticed in ~2 s, not ~15 s


class LocalCluster:
    """A Ray head (no CPUs of its own) and ``workers`` worker nodes of ``cpus`` CPUs each, each its own
    ``ray start`` process on 127.0.0.1 with token authentication; ``kill(i)`` kills worker node ``i``
    and every process it started, as a crash would. ``root`` must be short (Unix socket paths)."""

    def __init__(self, root: Any, workers: int = 2, cpus: int = 1) -> None:
        import json
        import secrets
        import subprocess
        import sys
        from pathlib import Path

        from veracity.chain.anvil import free_port

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(32)
        self.address = f"127.0.0.1:{free_port()}"
        self.env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")},
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
                    **FAST_HEALTH}
        self.procs: dict[str, Any] = {}

        def start(name: str, *args: str) -> None:
            cmd = [sys.executable, *RAY_CLI, "start", "--block", "--node-ip-address=127.0.0.1",
                   f"--temp-dir={self.root / name}", f"--resources={json.dumps({name: 1})}",
                   "--min-worker-port=0", "--max-worker-port=0", "--object-store-memory=100000000",
                   "--include-log-monitor=false", "--disable-usage-stats", *args]
            self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=open(self.root / f"{name}.log", "w"),
                                                stderr=subprocess.STDOUT, start_new_session=True)

        start("head", "--head", f"--port={self.address.split(':')[1]}", "--num-cpus=0", "--include-dashboard=false")
        self.names = [f"worker{i}" for i in range(workers)]
        for name in self.names:
            start(name, f"--address={self.address}", f"--num-cpus={cpus}")

    def driver_env(self) -> dict[str, str]:
        """What a driver (a provider) needs in its environment to join: the token, and 127.0.0.1 kept."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def wait(self, nodes: int, timeout: float = 90) -> None:
        """Until ``nodes`` nodes are alive (from a driver connected to it)."""
        ray = _ray()
        end = time.monotonic() + timeout
        while sum(1 for n in ray.nodes() if n.get("Alive")) < nodes:
            if time.monotonic() > end:
                raise VeracityError(f"the Ray cluster has not {nodes} nodes alive after {timeout:.0f} s; see {self.root}")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        import psutil

        try:
            p = psutil.Process(self.procs[name].pid)
            procs = [p, *p.children(recursive=True)]  # its workers have process groups of their own
        except psutil.NoSuchProcess:
            procs = []
        for q in procs:
            try:
                q.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        self.procs[name].wait()

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.kill(name)
