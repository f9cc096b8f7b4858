"""A provider's jobs on a real local Ray cluster (a head and two worker nodes, each its own `ray
start` process on 127.0.0.1, token authentication on): the same output and trace root as the local
executor on 1, 2 and 4 model hosts, a job larger than a host's memory share split and joined, a
worker node killed mid-job and the job still ending at the same root, and a driver without the
cluster's token refused."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from veracity.node.ray_executor import LocalCluster, RayExecutor
from veracity.workloads.jobs import Job
from veracity.workloads.spec import load_spec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"
WORDS = "the sea a ship sails north under grey skies while gulls circle over the harbour at dawn".split()


def minilm_job(n, batch):
    spec = load_spec(JOBS / "minilm.yaml").model_copy(update={"batch": batch})
    lines = "".join(json.dumps({"text": " ".join(WORDS[i % 7:i % 7 + 3 + i % 5])}) + "\n" for i in range(n))
    return Job(spec, lines.encode())


def training_job():
    spec = load_spec(JOBS / "digits-train.yaml")
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"steps": 8})})
    return Job(spec, Path(spec.inputs.path).read_bytes())


def test_jobs_on_a_ray_cluster_give_the_local_executors_bits_and_survive_a_killed_worker(net):
    root = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's Unix socket paths
    cluster = LocalCluster(root, workers=2, cpus=2)
    saved = dict(os.environ)
    os.environ.update(cluster.driver_env())
    try:
        # a driver without the cluster's token is refused
        no_token = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        refused = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{cluster.address}')"],
                                 env={**no_token, "HOME": root}, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "uth" in refused.stderr, refused.stderr[-2000:]
        # the cluster itself refuses a wrong token (after its client's ~20 s of retries: checked at the end)
        wrong = subprocess.Popen([sys.executable, "-c", f"import ray; ray.init(address='{cluster.address}')"],
                                 env={**no_token, "HOME": root, "RAY_AUTH_TOKEN": "0" * 64}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)

        infer, train = minilm_job(11, 4), training_job()
        local = {"infer": infer.run("torch"), "train": train.run("torch")}
        ex = RayExecutor(cluster.address, hosts=4)
        cluster.wait(3)
        for hosts in (1, 2, 4):  # the same bits however the job is cut
            got = ex.run(infer, hosts=hosts)
            assert (got.output_hash, got.trace_root, got.outputs) == \
                (local["infer"].output_hash, local["infer"].trace_root, local["infer"].outputs), hosts
        got = ex.run(train)
        assert (got.trace_root, got.outputs) == (local["train"].trace_root, local["train"].outputs)
        status = ex.status()
        assert status["hosts"] == 4 and len(status["nodes"]) == 3 and status["jobs_in_flight"] == 0
        ex.close(disconnect=False)

        # a provider daemon with ``executor: ray`` runs a client's order on the cluster and commits the local
        # executor's bits; its /status shows the cluster
        import httpx

        from veracity.client.jobs import submit
        from veracity.workloads.spec import Verification

        net.provider(2, ["minilm"], executor="ray", ray_address=cluster.address, ray_token=cluster.token, ray_hosts=2)
        spec = load_spec(JOBS / "minilm.yaml").model_copy(update={
            "deadline": 300, "verification": Verification(challenge_window=2, spot_check_rate=0.0)})
        order = submit(spec, net.dep, net.accts[1].key, bid_wait=60, result_timeout=300)
        mine = Job(spec, Path(spec.inputs.path).read_bytes()).run("torch")
        assert (order.trace_root, order.outputs) == (mine.trace_root, mine.outputs)
        shown = httpx.get(net.url + "/status", timeout=30).json()["executor"]
        assert shown["executor"] == "ray" and len(shown["nodes"]) == 3 and shown["hosts"] == 2, shown
        provider = net.procs.pop()
        provider.terminate()  # its hosts leave the cluster with it (they hold a CPU each)
        provider.wait(60)

        # a job larger than a host's memory share: cut into more parts than hosts, joined to the same root
        share = RayExecutor(cluster.address, hosts=2, host_memory=1)
        assert share.parts(infer) > 2
        got = share.run(infer)
        assert (got.output_hash, got.trace_root) == (local["infer"].output_hash, local["infer"].trace_root)
        share.close(disconnect=False)

        # a worker node killed while its host runs a part: the host restarts on the other node, the part
        # is run again, and the job ends at the unsplit run's root
        import ray

        big = minilm_job(480, 8)
        whole = big.run("torch")
        ex = RayExecutor(cluster.address, hosts=2)
        name_of = {n["NodeID"]: name for n in ray.nodes() for name in cluster.names if name in n["Resources"]}
        victim = ray.get(ex.hosts[0].node.remote())
        out = {}
        run = threading.Thread(target=lambda: out.update(result=ex.run(big, timeout=300)))
        run.start()
        time.sleep(1.5)
        assert run.is_alive()  # mid-job
        cluster.kill(name_of[victim])
        run.join(300)
        assert not run.is_alive() and "result" in out
        got = out["result"]
        assert (got.output_hash, got.trace_root) == (whole.output_hash, whole.trace_root)
        assert ray.get(ex.hosts[0].node.remote()) != victim  # its host restarted on the other node
        assert len(ex.status()["nodes"]) == 2  # the head and the surviving worker
        ex.close()
        said, _ = wrong.communicate(timeout=120)
        assert wrong.returncode != 0 and "InvalidAuthToken" in said, said[-2000:]
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cluster.stop()
