"""Run a job in an isolated worker process: a crash, a hang or a memory blow-up in the model never
takes the daemon down, and a deadline is enforced by killing the worker.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from veracity.errors import VeracityError
from veracity.workloads.infer import JobResult


class WorkerError(VeracityError):
    """The worker process failed: the job's inputs were refused, it crashed, or it ran too long."""


def _child(conn: Any, model: str, inputs: bytes, backend: str, threads: int | None) -> None:
    from veracity import runtime
    from veracity.workloads.infer import run_infer_job

    try:
        runtime.tune_allocator()
        runtime.set_threads(threads)
        conn.send(("ok", run_infer_job(model, inputs, backend)))
    except VeracityError as exc:
        conn.send(("refused", str(exc)))
    except BaseException as exc:  # reported to the parent, never raised across the process
        conn.send(("crashed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_in_worker(model: str, inputs: bytes, backend: str = "torch", timeout: float = 600,
                  threads: int | None = None) -> JobResult:
    """Run an ``infer`` job in a fresh process (spawned, so no state leaks from the daemon)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, model, inputs, backend, threads), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise WorkerError(f"the job ran longer than {timeout:.0f} s and was stopped")
        status, payload = parent.recv()
    except EOFError:
        proc.join(5)
        raise WorkerError(f"the worker process died (exit code {proc.exitcode}) before finishing the job") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
    if status == "ok":
        return payload
    if status == "refused":
        raise WorkerError(f"the job was refused: {payload}")
    raise WorkerError(f"the worker crashed: {payload}")
