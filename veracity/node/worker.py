"""Run a job in an isolated worker process: a crash, a hang or a memory blow-up in the model never
takes the daemon down, and a deadline is enforced by killing the worker.

Every job gets a fresh process (spawned, so no state leaks from the daemon or between jobs).
``WarmWorkers`` starts those processes ahead of time: a spare has already imported torch and the
exact kernels (about 3 s) and waits for exactly one job, so a job's latency is its own run time.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

from veracity.errors import VeracityError
from veracity.workloads.infer import JobResult


class WorkerError(VeracityError):
    """The worker process failed: the job's inputs were refused, it crashed, or it ran too long."""


def _run(conn: Any, model: str, inputs: bytes, backend: str) -> None:
    from veracity.workloads.infer import run_infer_job

    try:
        conn.send(("ok", run_infer_job(model, inputs, backend)))
    except VeracityError as exc:
        conn.send(("refused", str(exc)))
    except BaseException as exc:  # reported to the parent, never raised across the process
        conn.send(("crashed", f"{type(exc).__name__}: {exc}"))


def _prepare(threads: int | None) -> None:
    from veracity import runtime

    runtime.tune_allocator()
    runtime.set_threads(threads)


def _child(conn: Any, model: str, inputs: bytes, backend: str, threads: int | None) -> None:
    try:
        _prepare(threads)
        _run(conn, model, inputs, backend)
    finally:
        conn.close()


def _spare(conn: Any, threads: int | None, backend: str) -> None:
    """Import everything a job needs, then wait for one job (or for the pipe to close)."""
    try:
        _prepare(threads)
        import veracity.workloads.infer  # noqa: F401
        from veracity.exact.execute import make_backend

        make_backend(backend)  # loads (or compiles) the native kernels now, not during the job
        try:
            model, inputs, job_backend = conn.recv()
        except EOFError:
            return
        _run(conn, model, inputs, job_backend)
    finally:
        conn.close()


def _collect(proc: Any, conn: Any, timeout: float) -> JobResult:
    try:
        if not conn.poll(timeout):
            raise WorkerError(f"the job ran longer than {timeout:.0f} s and was stopped")
        status, payload = conn.recv()
    except (EOFError, OSError):
        proc.join(5)
        raise WorkerError(f"the worker process died (exit code {proc.exitcode}) before finishing the job") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        conn.close()
    if status == "ok":
        return payload
    if status == "refused":
        raise WorkerError(f"the job was refused: {payload}")
    raise WorkerError(f"the worker crashed: {payload}")


def run_in_worker(model: str, inputs: bytes, backend: str = "torch", timeout: float = 600,
                  threads: int | None = None) -> JobResult:
    """Run an ``infer`` job in a fresh process and return its result (or raise WorkerError)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, model, inputs, backend, threads), daemon=True)
    proc.start()
    child.close()
    return _collect(proc, parent, timeout)


class WarmWorkers:
    """Fresh worker processes started ahead of time, one job each; safe to use from many threads."""

    def __init__(self, spares: int = 1, backend: str = "torch", threads: int | None = None) -> None:
        self.ctx = mp.get_context("spawn")
        self.backend, self.threads, self.size = backend, threads, spares
        self.lock = threading.Lock()
        self.spares: list[tuple[Any, Any]] = []
        self._refill()

    def _start(self) -> tuple[Any, Any]:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_spare, args=(child, self.threads, self.backend), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def _refill(self) -> None:
        with self.lock:
            self.spares = [s for s in self.spares if s[0].is_alive()]
            while len(self.spares) < self.size:
                self.spares.append(self._start())

    def _take(self) -> tuple[Any, Any]:
        with self.lock:
            while self.spares:
                proc, conn = self.spares.pop(0)
                if proc.is_alive():
                    return proc, conn
                conn.close()
        return self._start()

    def run(self, model: str, inputs: bytes, backend: str | None = None, timeout: float = 600) -> JobResult:
        proc, conn = self._take()
        self._refill()  # the next job's process warms up while this one runs
        try:
            conn.send((model, inputs, backend or self.backend))
        except OSError:
            proc.kill()
            raise WorkerError("the worker process died before it was given the job") from None
        return _collect(proc, conn, timeout)

    def close(self) -> None:
        with self.lock:
            for proc, conn in self.spares:
                conn.close()
                proc.kill()
                proc.join(5)
            self.spares = []
