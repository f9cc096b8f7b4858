"""Run jobs in isolated worker processes: a crash, a hang or a memory blow-up in the model never
takes the daemon down, and a deadline is enforced by killing the worker.

``run_in_worker`` spawns a fresh process for one job. ``WorkerPool`` keeps a few processes that
have imported torch and the exact kernels once and keep loaded models (read-only), each running
one job at a time; a worker that crashes or overruns its deadline is killed and replaced, so the
next job never sees its state. Results never depend on which worker ran a job (exact arithmetic).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
from typing import Any

from veracity import runtime
from veracity.errors import VeracityError
from veracity.workloads.jobs import Job
from veracity.workloads.workload import JobResult


class WorkerError(VeracityError):
    """The worker process failed: the job's inputs were refused, it crashed, or it ran too long."""


def _job(job: Job, backend: str, loaded: Any, behaviour: str) -> Any:
    """The job's result: an honest run, or (in tests and the demo) an adversary's."""
    from veracity.sim import adversary

    model, inputs, behaviour = job.model_name, job.inputs, adversary.computes(behaviour)
    if job.trains:  # the other adversaries cheat on inference only
        cheat = adversary.tamper_for(behaviour, job)
        return job.run("numpy" if cheat else backend, tamper=cheat() if cheat else None)
    if behaviour == "corrupt-op":
        return adversary.corrupt_op_job(model, inputs, loaded, batch_size=job.batch)
    if behaviour == "wrong-output":
        return adversary.wrong_output_job(model, inputs, loaded, batch_size=job.batch)
    if behaviour == "lazy":
        return adversary.lazy_job(model, inputs, loaded, batch_size=job.batch)
    if behaviour == "disconnected":
        return adversary.disconnected(job.run(backend, model=loaded))
    return job.run(backend, model=loaded)


def _run(conn: Any, job: Job, backend: str, loaded: Any = None, behaviour: str = "honest") -> None:
    try:
        conn.send(("ok", _job(job, backend, loaded, behaviour)))
    except VeracityError as exc:
        conn.send(("refused", str(exc)))
    except BaseException as exc:  # reported to the parent, never raised across the process
        conn.send(("crashed", f"{type(exc).__name__}: {exc}"))


def _prepare(threads: int | None) -> None:
    runtime.tune_allocator()
    runtime.set_threads(threads)


def _child(conn: Any, job: Job, backend: str, threads: int | None) -> None:
    try:
        _prepare(threads)
        _run(conn, job, backend)
    finally:
        conn.close()


def _serve(conn: Any, threads: int | None, backend: str) -> None:
    """A pool worker: import everything once, then run jobs one at a time until the pipe closes."""
    try:
        _prepare(threads)
        from veracity.exact.execute import make_backend
        from veracity.models.registry import load, names

        make_backend(backend)  # loads (or compiles) the native kernels now, not during a job
        models: dict[str, Any] = {}
        while True:
            try:
                job, job_backend, behaviour = conn.recv()
            except EOFError:
                return
            model = job.model_name
            if not job.trains and model in names() and model not in models:
                try:
                    models[model] = load(model)
                except VeracityError:
                    pass  # the job itself reports why
            _run(conn, job, job_backend, models.get(model), behaviour)
    finally:
        conn.close()


def _receive(proc: Any, conn: Any, timeout: float) -> tuple[str, Any]:
    """The worker's answer; a worker that overran or died is killed and WorkerError raised."""
    try:
        if not conn.poll(timeout):
            proc.kill()
            raise WorkerError(f"the job ran longer than {timeout:.0f} s and was stopped")
        return conn.recv()
    except (EOFError, OSError):
        proc.join(5)
        raise WorkerError(f"the worker process died (exit code {proc.exitcode}) before finishing the job") from None


def _outcome(status: str, payload: Any) -> JobResult:
    if status == "ok":
        return payload
    if status == "refused":
        raise WorkerError(f"the job was refused: {payload}")
    raise WorkerError(f"the worker crashed: {payload}")


def run_in_worker(job: Job, backend: str = "torch", timeout: float = 600, threads: int | None = None) -> JobResult:
    """Run a job in a fresh process and return its result (or raise WorkerError)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, job, backend, threads), daemon=True)
    proc.start()
    child.close()
    try:
        return _outcome(*_receive(proc, parent, timeout))
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()


class WorkerPool:
    """Up to ``size`` warm worker processes, each running one job at a time; safe to use from many
    threads. One starts (and warms up) at once, the others when jobs overlap: each costs seconds
    of CPU to import torch and the kernels, which a node that never runs two jobs at once would spend
    for nothing.

    A job waits for a free worker. A worker whose job crashed it or overran its deadline is killed
    and a fresh one takes its place.
    """

    def __init__(self, size: int = 1, backend: str = "torch", threads: int | None = None) -> None:
        self.ctx = mp.get_context("spawn")
        self.backend = backend
        self.size = size
        self.threads = threads or runtime.threads_each(size)  # the workers share the cores
        self.idle: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.closed = False
        self._grow = threading.Lock()
        self.idle.put(self._start())
        self.started = 1

    def _start(self) -> tuple[Any, Any]:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_serve, args=(child, self.threads, self.backend), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def run(self, job: Job, backend: str | None = None, timeout: float = 600, behaviour: str = "honest") -> JobResult:
        with self._grow:  # every worker busy: another one, up to ``size``
            if self.idle.empty() and self.started < self.size:
                self.idle.put(self._start())
                self.started += 1
        proc, conn = self.idle.get()
        healthy = False
        try:
            if not proc.is_alive():
                raise WorkerError(f"the worker process died (exit code {proc.exitcode}) before it was given the job")
            conn.send((job, backend or self.backend, behaviour))
            status, payload = _receive(proc, conn, timeout)
            healthy = status != "crashed"
        except OSError:
            raise WorkerError("the worker process died before it was given the job") from None
        finally:
            if not healthy:  # never reuse a worker that crashed, hung or died
                proc.kill()
                proc.join(5)
                conn.close()
                proc, conn = self._start()
            if not self.closed:
                self.idle.put((proc, conn))
        return _outcome(status, payload)

    def close(self) -> None:
        self.closed = True
        while not self.idle.empty():
            proc, conn = self.idle.get_nowait()
            conn.close()
            proc.kill()
            proc.join(5)
