"""Jobs run in an isolated worker process: same bits as in-process, clear errors, hard deadlines."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from veracity.node.worker import WorkerError, run_in_worker
from veracity.workloads.infer import run_infer_job
from veracity.workloads.jobs import infer_job

INPUTS = Path(__file__).resolve().parent.parent.parent / "examples" / "inputs"


def test_worker_gives_the_same_bits_as_an_in_process_run():
    data = (INPUTS / "digits-mlp.jsonl").read_bytes()
    here = run_infer_job("digits-mlp", data, backend="numpy")
    there = run_in_worker(infer_job("digits-mlp", data), backend="torch", timeout=120)
    assert (there.output_hash, there.trace_root, there.steps) == (here.output_hash, here.trace_root, here.steps)
    assert there.outputs == here.outputs


def test_bad_inputs_are_refused_with_the_reason():
    with pytest.raises(WorkerError, match="line 2: not valid JSON"):
        run_in_worker(infer_job("digits-mlp", b'{"pixels": [0]}\n{oops\n'), timeout=120)
    with pytest.raises(WorkerError, match="unknown model"):
        run_in_worker(infer_job("no-such-model", b'{"text": "x"}\n'), timeout=120)


def test_a_hung_job_is_stopped_at_its_deadline():
    text = b'{"text": "the provider ", "max_tokens": 100}\n' * 50  # far longer than the deadline
    t = time.monotonic()
    with pytest.raises(WorkerError, match="longer than 3 s"):
        run_in_worker(infer_job("tiny-gpt", text), timeout=3)
    assert time.monotonic() - t < 20


def test_a_killed_worker_is_reported_not_fatal():
    import multiprocessing as mp

    before = set(p.pid for p in mp.active_children())

    def kill_worker():
        for _ in range(200):
            kids = [p for p in mp.active_children() if p.pid not in before]
            if kids:
                time.sleep(1.0)
                os.kill(kids[0].pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    threading.Thread(target=kill_worker, daemon=True).start()
    text = b'{"text": "the provider ", "max_tokens": 100}\n' * 50
    with pytest.raises(WorkerError, match="died"):
        run_in_worker(infer_job("tiny-gpt", text), timeout=60)


def test_a_pool_runs_many_jobs_and_replaces_a_worker_that_overran():
    from veracity.node.worker import WorkerPool

    pool = WorkerPool(1)
    try:
        data = (INPUTS / "digits-mlp.jsonl").read_bytes()
        here = run_infer_job("digits-mlp", data, backend="numpy")
        first = pool.run(infer_job("digits-mlp", data), timeout=120)
        assert (first.outputs, first.trace_root) == (here.outputs, here.trace_root)
        with pytest.raises(WorkerError, match="line 1"):
            pool.run(infer_job("digits-mlp", b'{"pixels": [1, 2]}\n'), timeout=120)
        hung = b'{"text": "the provider ", "max_tokens": 100}\n' * 50
        with pytest.raises(WorkerError, match="longer than 2 s"):
            pool.run(infer_job("tiny-gpt", hung), timeout=2)
        again = pool.run(infer_job("digits-mlp", data), timeout=120)  # a fresh worker took the hung one's place
        assert again.outputs == here.outputs
    finally:
        pool.close()
