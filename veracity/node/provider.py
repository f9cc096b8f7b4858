"""The provider daemon: follows Market events, bids by its policy, runs accepted jobs in isolated
workers (``workers`` at once; its policy's ``max_jobs`` leases held), stores outputs as blobs, commits
on-chain, finalizes its results once their challenge window has passed (``node.settler``), and
serves its blobs, its bids, standing leases' requests and the windows it co-signs
(``node.sessions``). It defends its challenged results on a thread of its own
(``node.defender``), so no job work ever delays a dispute move.

    python -m veracity.node.provider --config provider.json

Every step is recorded in SQLite before the next, so after ``kill -9`` a restart resumes: a job
caught running is run again (the result is the same bits), a finished one is committed, one whose
deadline passed is given up, and the bids it offered are served again. Job work stays on the main
loop's thread (worker threads only wait on worker processes); the defence's thread has its own
database connection, and the two share one ``Chain``, whose sends take turns.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from fastapi import Body, HTTPException
from pydantic import Field

from veracity.blobs.server import create_app
from veracity.blobs.store import BlobStore
from veracity.chain.client import PROVIDER, DisputesClient, OracleClient, TokenClient
from veracity.chain.devnet import Deployment
from veracity.chain.events import EventStream
from veracity.chain.pools import DataPoolClient
from veracity.cid import cid_from_digest
from veracity.errors import InputError, VeracityError
from veracity.exact.program import ProgramTooLarge, program_root
from veracity.logs import log
from veracity.market.bids import Bid, sign_bid
from veracity.market.policy import OrderView, PricePolicy, check_capacity, decide_bid
from veracity.models.registry import loaded
from veracity.node.daemon import serve_and_loop
from veracity.node.defender import Defender
from veracity.node.keys import KeyedConfig
from veracity.node.oracle_desk import OracleDesk
from veracity.node.pool_desk import PoolDesk
from veracity.node.sessions import LeaseError, LeaseLog, LeaseServer, LeaseTerms, Window, window_admission
from veracity.node.settler import Settler
from veracity.node.state import NodeState, StateError
from veracity.node.worker import WorkerPool
from veracity.sim import adversary
from veracity.workloads.jobs import Job, job_from_blobs
from veracity.workloads.planner import MAX_PROGRAM_RECORDS, estimate_job
from veracity.workloads.spec import model_id
from veracity.workloads.workload import JobResult

TOKEN = 10**18


class MissingBlob(InputError):
    """A blob the job names is not in this node's store (the client did not push it)."""


class ProviderConfig(KeyedConfig):
    model_config = {"extra": "ignore"}
    log_level: str = "info"  # debug, info, warning or error (``--log-level`` overrides it)
    log_json: bool = False  # one JSON object per line
    deployment: str
    home: str
    port: int
    policy: PricePolicy
    stake: int = 1000 * TOKEN
    # for tests and the demo: late never delivers; the others cheat (see node.adversary)
    behaviour: Literal["honest", "late", "wrong-output", "corrupt-op", "lazy", "forged-output", "withhold",
                       "hide-output", "disconnected", "lie-inside"] = "honest"
    backend: str = "torch"
    workers: int = Field(2, ge=1)  # jobs run at once (each in its own process); more leases wait their turn
    job_timeout: float = 600
    poll_interval: float = 0.3
    max_blob_bytes: int = 64 << 20  # the largest spec, input or output this node stores
    finalize_after_s: int = Field(30, ge=0)  # past a result's challenge window: its client may finalize first
    # a lease window's result joins the runs that served its requests; true runs the window's job
    # again instead (as a plain order is run: twice the work, for comparison: bench/gateway.py)
    rerun_windows: bool = False
    # where jobs run: this machine's warm worker pool, or a Ray cluster (``node.ray_executor``): its
    # address, the cluster's token (or RAY_AUTH_TOKEN), its model hosts, and a host's share of memory
    # (a job the planner estimates above it is cut into more parts)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_token: str | None = None
    ray_hosts: int = Field(2, ge=1)
    ray_host_memory: int | None = Field(None, ge=1)


class ProviderNode:
    def __init__(self, cfg: ProviderConfig) -> None:
        self.cfg = cfg
        self.dep = Deployment.read(Path(cfg.deployment))
        dep = self.dep  # one signing Chain for both threads (its sends take turns): one nonce
        self.chain, self.token, self.registry, self.market = dep.clients(cfg.key)
        home = Path(cfg.home)
        self.state = NodeState(home / "state.db")
        self.blobs = BlobStore(home / "blobs", cfg.max_blob_bytes)
        self.url = f"http://127.0.0.1:{cfg.port}"
        from veracity.models.registry import names

        self.models = {"0x" + model_id(m).hex(): m for m in [*names(), *cfg.policy.models]}
        start = self.state.cursor("chain", -1)
        if start < 0:
            start = self.chain.w3.eth.block_number + 1
        self.stream = EventStream(self.chain, {"Market": dep.market}, start)
        self.defender = (Defender(DisputesClient(self.chain, dep.disputes, self.token), self.market, dep.referees,
                                  self.state.path, self.blobs, self.load_job, cfg.behaviour,
                                  lambda m: log("provider", m)) if dep.disputes else None)
        # the time a dispute move allows: a job whose re-run would not fit in part of it is declined
        self.move_time = int(self.defender.disputes.fn.move_time().call()) if self.defender else None
        self.bids: dict[int, dict[str, Any]] = {}  # what GET /bids/{order} answers, rebuilt from SQLite
        for job in self.state.jobs("bid", "skipped"):
            self.bids[job.order_id] = json.loads(job.bid) if job.bid else {"reason": self._who(job.error or "")}
        for job in self.state.jobs("running"):  # caught mid-run by a crash: run it again
            self.state.advance(job.order_id, "accepted")
        self.workers: Any = None  # a WorkerPool, or a RayExecutor (``executor``)
        self.pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="job")
        self.running: dict[int, Future[JobResult]] = {}
        self._reader = self.dep.clients(cfg.key)[3]  # the HTTP threads' own chain client (reads only)
        self._leases: dict[int, LeaseTerms] = {}  # leases this node serves, as the chain gave them
        self._tls = threading.local()
        self.desk = (OracleDesk(OracleClient(self.chain, dep.oracle), self.market, self.blobs, self.state, self.chain.now,
                                lambda m: log("provider", m)) if dep.oracle else None)
        self.pool_desk = (PoolDesk(DataPoolClient(self.chain, dep.data_pool, TokenClient(self.chain, dep.token)),
                                   self.market, self.blobs, self.state, self.load_job, self.chain.now,
                                   lambda m: log("provider", m)) if dep.data_pool else None)
        self._serving: dict[str, ThreadPoolExecutor] = {}  # per model: its lease requests' runs, in turn
        self._serving_lock = threading.Lock()
        self.leases = LeaseServer(LeaseLog(home / "state.db"), cfg.key, self.chain.address, self.dep.chain_id,
                                  self.dep.market, self._lease_terms, self._answer, self.chain.now, self._window_program,
                                  outputs=window_admission(cfg.policy, self.move_time))
        self.settler = Settler(self.market, self.state, self.chain.now, lambda m: log("provider", m),
                               grace_s=cfg.finalize_after_s,
                               only_mine=lambda oid: self.leases.log.signed(oid) is not None)  # lease windows

    def _lease_terms(self, oid: int) -> LeaseTerms:
        """A lease's terms: from this node's own state while it serves the lease (no chain call on
        a request's path), from the chain otherwise (just accepted, or posted meanwhile)."""
        known = self._leases.get(oid)
        if known is not None:
            if getattr(self._tls, "state", None) is None:
                self._tls.state = NodeState(self.state.path)  # this HTTP thread's own connection
            job = self._tls.state.job(oid)
            if job is not None and job.status == "accepted" and not job.spec_cid:
                return known
        o = self._reader.order(oid)
        model = self.models.get("0x" + o.model_id.hex(), "0x" + o.model_id.hex())
        is_open = o.state_name == "accepted" and not any(o.spec_cid)
        terms = LeaseTerms(o.client, model, o.provider, o.deadline, is_open,
                           self._reader.run_time(oid) if is_open else 0)
        if terms.open:
            self._leases[oid] = terms
        return terms

    def _answer(self, model: str, item: dict[str, Any]) -> tuple[Any, Future[Any]]:
        """One request of a lease, exactly: what the window's output line shows for it, as soon as
        it is known (a generator's at its stop token), and its run (``infer.served_run``: the coarse
        trace the window's result joins), which goes on after the answer."""
        from veracity.workloads.infer import served_run

        if model not in self.cfg.policy.models:
            raise InputError(f"this provider does not serve model {model!r}")
        m = loaded(model)
        parsed = m.parse(item)
        answer: Future[Any] = Future()

        def answered(out: Any) -> None:
            if not answer.done():
                answer.set_result(out)

        def run() -> Any:
            try:
                return served_run(m, parsed, self.cfg.backend, answered)
            except BaseException as exc:
                if not answer.done():
                    answer.set_exception(exc)
                raise

        with self._serving_lock:  # one model's long request never queues another model's
            if model not in self._serving:
                self._serving[model] = ThreadPoolExecutor(1, thread_name_prefix=f"serve-{model}")
        ran = self._serving[model].submit(run)
        shown = m.present(answer.result())
        if self.cfg.behaviour == "forged-output":  # an adversary for tests: serves what it will not commit
            shown = adversary.forge_answer(shown)
        return shown, ran

    def _window_program(self, model: str, spec_cid: bytes, served: bytes) -> tuple[bytes, int]:
        """The program this node computes for a lease window's spec (in its blob store), once the
        spec is an infer job of the lease's model whose inputs are ``served``, the lines it served."""
        cid = cid_from_digest(spec_cid)
        if not self.blobs.has(cid):
            raise LeaseError(f"its spec {cid} is not here: push the spec and its inputs to {self.url}/blobs first")
        try:
            job = self.load_job(cid)
        except VeracityError as exc:
            raise LeaseError(f"its spec {cid} cannot be used: {exc}") from None
        if job.spec.kind != "infer" or job.model_name != model:
            raise LeaseError(f"the window's spec is a {job.spec.kind} job of {job.model_name!r}; the lease serves "
                             f"infer requests of {model!r}")
        if job.inputs != served:
            raise LeaseError(f"the window's inputs are not the {len(served.splitlines())} requests this provider "
                             "served on the lease, in order")
        try:
            program = job.posted_program(loaded(model), limit=MAX_PROGRAM_RECORDS)
        except VeracityError as exc:
            raise LeaseError(f"its program cannot be computed: {exc}") from None
        return program_root(program), len(program)

    def _who(self, reason: str) -> str:
        return f"provider {self.chain.address} {reason}"

    # chain ------------------------------------------------------------------------------------
    def register(self) -> None:
        if self.registry.node(self.chain.address).role == 0:
            self.registry.register(PROVIDER, self.cfg.stake, "cpu", 24,
                                   [model_id(m) for m in self.cfg.policy.models], self.cfg.policy.price_floor,
                                   self.url)

    def tick(self) -> None:
        for ev in self.stream.poll():
            try:
                self.on_event(ev.name, ev.args)
            except Exception as exc:  # one event's failure never loses the others
                log("provider", f"{ev.name} on order {ev.args.get('order_id')}: {exc}")
        self.state.set_cursor("chain", self.stream.next_block)
        self.work()
        if self.desk is not None:
            self.desk.deliver()
        if self.pool_desk is not None:
            self.pool_desk.deliver()
        self.settler.tick()

    def on_event(self, name: str, args: dict[str, Any]) -> None:
        oid = int(args.get("order_id", 0))
        job = self.state.job(oid)
        if name == "OrderOpened":
            self.consider(args)
        elif name == "WindowPosted" and job is not None and job.status == "accepted" and not job.spec_cid:
            cid = cid_from_digest(bytes.fromhex(args["spec_cid"][2:]))
            self.state.record(oid, spec_cid=cid)  # now an ordinary order: run the window's job and commit it
            log("provider", f"lease {oid}: window posted ({self.leases.log.count(oid)} requests served), spec {cid}")
        elif name == "BidAccepted" and job is not None and job.status == "bid":
            mine = args["provider"].lower() == self.chain.address.lower()
            self.state.advance(oid, "accepted" if mine else "lost")
            if mine:
                log("provider", f"order {oid}: bid accepted")
        elif name == "OrderCancelled" and job is not None and job.status == "bid":
            self.state.advance(oid, "lost", error="the client cancelled the order")
        elif name == "Finalized" and job is not None and job.status in ("committed", "challenged"):
            self.state.advance(oid, "settled")
            log("provider", f"order {oid}: settled, paid")
        elif name == "ChallengeSet" and job is not None and job.status in ("committed", "challenged"):
            status = "challenged" if args["challenged"] else "committed"
            if status != job.status:
                self.state.advance(oid, status)
                log("provider", f"order {oid}: {'challenged' if args['challenged'] else 'the challenge failed'}")
            if not args["challenged"]:  # its challenge window may have started again
                self.settler.watch(oid)
        elif name == "Undecided" and job is not None and job.status in ("committed", "challenged"):
            self.state.advance(oid, "undecided", error="a dispute ended undecided; the client was refunded")
            log("provider", f"order {oid}: the dispute ended undecided, collateral released")
        elif name == "Overturned" and job is not None and job.status in ("committed", "challenged"):
            self.state.advance(oid, "overturned", error="a dispute found the result wrong")
            log("provider", f"order {oid}: overturned by a dispute, collateral and stake share slashed")
        elif name == "TimedOut" and job is not None and job.status in ("accepted", "running", "done"):
            self.state.advance(oid, "gave_up", error="the client reclaimed after the deadline")
            log("provider", f"order {oid}: the client reclaimed after the deadline")

    def consider(self, args: dict[str, Any]) -> None:
        oid = int(args["order_id"])
        model = self.models.get(args["model_id"], args["model_id"])
        standing = int(args["spec_cid"], 16) == 0  # a standing lease: requests come later, over HTTP
        spec_cid = None if standing else cid_from_digest(bytes.fromhex(args["spec_cid"][2:]))
        seen = self.state.job(oid)
        if seen is not None and seen.status != "seen":
            return  # decided before a restart
        self.state.add_job(oid, model=model, spec_cid=spec_cid, price=int(args["max_price"]),
                           deadline=int(args["deadline"]))
        via_oracle = self.desk is not None and self.desk.is_client(args.get("client", ""))
        if via_oracle and spec_cid is not None:
            self.desk.fetch_spec(oid, spec_cid)  # type: ignore[union-attr]
        running = len(self.state.jobs("accepted", "running", "done"))
        view = OrderView(oid, model, int(args["max_price"]), int(args["deadline"]))
        terms = decide_bid(view, self.cfg.policy, self.chain.now(), running, self.registry.free_stake(self.chain.address))
        if not isinstance(terms, str) and spec_cid is not None:
            checked = self.check_spec(spec_cid, model, self.market.program(oid))
            if isinstance(checked, str):
                terms = checked
            elif checked[0].spec.kind_code != int(args["kind"]):
                terms = f"was sent a {checked[0].spec.kind} spec for an order of another kind"
            else:  # the planner: can this node's devices run it in time, and at what cost
                job, program = checked
                terms = check_capacity(terms, estimate_job(job, program), self.cfg.policy, view, self.chain.now(),
                                       self.registry.free_stake(self.chain.address), self.move_time)
        if isinstance(terms, str):
            self.bids[oid] = {"reason": self._who(terms)}
            self.state.advance(oid, "skipped", error=terms)
            log("provider", f"order {oid}: no bid, {terms}")
            return
        bid = sign_bid(Bid(order_id=oid, provider=self.chain.address, price=terms.price,
                           collateral=terms.collateral, expiry=terms.expiry, run_time=terms.run_time),
                       self.cfg.key, self.dep.chain_id, self.dep.market)
        self.state.advance(oid, "bid", bid=bid.model_dump_json())
        self.bids[oid] = bid.model_dump()
        log("provider", f"{'lease' if standing else 'order'} {oid}: bid {terms.price / TOKEN:g} VRC for {model}")
        if via_oracle and (why := self.desk.take(bid)):  # type: ignore[union-attr]  # it takes them itself
            self.state.advance(oid, "lost", error=why)

    def load_job(self, spec_cid: str, source: str = "") -> Job:
        """The job an order's spec names, from this node's blob store (spec, inputs, start checkpoint)."""
        def get(cid: str, what: str) -> bytes:
            if not self.blobs.has(cid):
                raise MissingBlob(f"does not have the job {what} {cid} (push them to {self.url}/blobs before "
                                  "opening the order)")
            return self.blobs.get(cid)

        return job_from_blobs(get(spec_cid, "spec"), get, source or f"spec {spec_cid}")

    def check_spec(self, spec_cid: str, model: str,
                   program: tuple[bytes, int] = (bytes(32), 0)) -> str | tuple[Job, list[Any]]:
        """Why this order's spec cannot run here, or the job and its program: the spec must be in
        this store, parse, name the order's model, and the blobs it names (inputs, a start
        checkpoint) must be here too (clients push them before opening the order), and the job's
        program must be the order's, of at most ``MAX_PROGRAM_RECORDS`` records: no spec keeps
        this node building a program for longer than that takes (and nor does its dispute)."""
        if not self.blobs.has(spec_cid):
            return f"does not have the job spec {spec_cid} (push it to {self.url}/blobs before opening the order)"
        try:
            job = self.load_job(spec_cid)
        except MissingBlob as exc:
            return str(exc)
        except VeracityError as exc:
            return f"cannot use the job spec: {exc}"
        if job.model_name != model:
            return f"was sent a spec for model {job.model_name!r} but the order is for {model!r}"
        root, length = program
        if length == 0:  # a dispute could locate a record but not judge it: an undecided game
            return "declines an order without a program: a dispute could not judge its records"
        if length > MAX_PROGRAM_RECORDS:
            return (f"declines a program of {length} records: it prepares at most {MAX_PROGRAM_RECORDS} (a dispute "
                    "move may wait on building and hashing it); split the job into smaller orders")
        try:  # inputs the job cannot take are refused now, not after collateral is locked
            mine = job.posted_program(None if job.trains else loaded(model), limit=MAX_PROGRAM_RECORDS)
        except ProgramTooLarge as exc:
            return f"computes another program for these inputs than the order's ({length} records): {exc}"
        except VeracityError as exc:  # not UTF-8 JSONL, items the model cannot take, an unreadable checkpoint
            return f"cannot use the job inputs: {exc}"
        ours = program_root(mine)
        if length != len(mine) or ours != root:
            return (f"computes another program for these inputs ({len(mine)} records, root "
                    f"{ours.hex()[:12]}) than the order's ({length} records, {root.hex()[:12]}): "
                    "a dispute could not judge it")
        return job, mine

    # work -----------------------------------------------------------------------------------
    def work(self) -> None:
        jobs = self.state.jobs("accepted", "done")
        now = self.chain.now() if jobs else 0  # an idle tick asks the chain nothing more
        for job in jobs:
            try:
                if job.deadline is not None and now > job.deadline:
                    self.state.advance(job.order_id, "gave_up", error="deadline passed before a commit")
                    log("provider", f"order {job.order_id}: gave up, the deadline passed before a commit")
                elif self.cfg.behaviour == "late":
                    continue
                elif job.status == "accepted" and job.spec_cid:  # (a lease without a spec is serving)
                    self.start(job.order_id)
                elif job.status == "accepted":
                    continue
                else:
                    self.commit(job.order_id)
            except VeracityError as exc:  # logged; the other jobs go on
                log("provider", f"order {job.order_id}: {exc}")
        self.harvest()

    def start(self, oid: int) -> None:
        spec_cid = self._spec_cid(oid)
        try:
            job = self.load_job(spec_cid)
        except VeracityError as exc:
            self.state.advance(oid, "failed", error=str(exc))
            log("provider", f"order {oid}: failed, {exc}")
            return
        joined = self._joined_window(oid, job)
        if joined is not None:
            self.state.advance(oid, "running")
            self.finish(oid, joined)
            return
        if self.workers is None:
            self.workers = self._executor()
        self.state.advance(oid, "running")
        self.running[oid] = self.pool.submit(self.workers.run, job, self.cfg.backend, self.cfg.job_timeout,
                                             self.cfg.behaviour)
        log("provider", f"order {oid}: {'training' if job.trains else 'running'} {job.model_name}")

    def _joined_window(self, oid: int, job: Job) -> Future[JobResult] | None:
        """A lease window's result from the runs that served its requests (``node.sessions``), or
        None: not a window this node signed, runs not all kept, a spec other than batch 1 (its
        trace is not theirs joined), or an adversary's behaviour; then the job runs as any order."""
        from veracity.workloads.infer import joined_result

        signed = self.leases.log.signed(oid)
        if signed is None or self.cfg.rerun_windows or self.cfg.behaviour not in ("honest", "forged-output"):
            return None
        self.leases.settled(oid)
        runs = self.leases.log.runs(oid)
        if job.spec.kind != "infer" or job.batch != 1 or len(runs) != self.leases.log.count(oid):
            log("provider", f"lease {oid}: its window is run again ({len(runs)} of {self.leases.log.count(oid)} "
                            f"runs kept, batch {job.batch})")
            return None
        try:
            result = joined_result(loaded(job.model_name), job.inputs, runs)
        except VeracityError as exc:  # cannot be: the window's inputs are the lines it served
            log("provider", f"lease {oid}: its runs cannot be joined ({exc}): run again")
            return None
        if result.ops != signed[0].program_length:  # cannot be, for the window it checked and signed
            log("provider", f"lease {oid}: its runs joined make {result.ops} records, not the window's "
                            f"{signed[0].program_length}: run again")
            return None
        done: Future[JobResult] = Future()
        done.set_result(result)
        log("provider", f"lease {oid}: window result joined from the {len(runs)} requests' runs (nothing run again)")
        return done

    def _spec_cid(self, oid: int) -> str:
        """The spec CID of order ``oid``'s job, as this node recorded it (StateError if none)."""
        row = self.state.job(oid)
        if row is None or not row.spec_cid:
            raise StateError(f"order {oid}: this node has recorded no job spec for it")
        return row.spec_cid

    def harvest(self) -> None:
        for oid, fut in list(self.running.items()):
            if fut.done():
                del self.running[oid]
                row = self.state.job(oid)
                if row is not None and row.status == "running":  # not given up meanwhile
                    self.finish(oid, fut)

    def finish(self, oid: int, fut: Future[JobResult]) -> None:
        try:
            result = fut.result()
            outputs, digests = result.outputs, result.output_digests
            if self.cfg.behaviour == "forged-output":  # an adversary for tests: commits a forged answer
                outputs, digests = adversary.forge_output(outputs, self.load_job(self._spec_cid(oid)))
            out_cid = self.blobs.put(outputs)
            trace_cid = self.blobs.put(result.trace)
        except VeracityError as exc:
            self.state.advance(oid, "failed", error=str(exc))
            log("provider", f"order {oid}: failed, {exc}")
            return
        self.state.advance(oid, "done", output_cid=out_cid, trace_root=result.trace_root.hex(),
                           trace_length=result.ops, trace_cid=trace_cid, outputs=b"".join(digests).hex())
        try:
            self.commit(oid)
        except VeracityError as exc:  # retried next tick, or given up at the deadline
            log("provider", f"order {oid}: commit failed, {exc}")

    def commit(self, oid: int) -> None:
        job = self.state.job(oid)
        if job is None or job.trace_root is None or job.trace_length is None:
            raise StateError(f"order {oid}: this node has recorded no result to commit")
        digests = bytes.fromhex(job.outputs or "")
        self.market.commit_result(oid, [digests[i:i + 32] for i in range(0, len(digests), 32)], bytes.fromhex(job.trace_root),
                                  job.trace_length)
        self.state.advance(oid, "committed")
        log("provider", f"order {oid}: committed output {job.output_cid}")
        self.settler.watch(oid)
        if self.desk is not None:
            self.desk.committed(oid)
        if self.pool_desk is not None:
            self.pool_desk.committed(oid)

    def _executor(self) -> Any:
        """Where jobs run (``executor``): the local warm pool, or the Ray cluster's model hosts."""
        if self.cfg.executor == "ray":
            from veracity.node.ray_executor import RayExecutor

            if not self.cfg.ray_address:
                raise VeracityError("executor: ray needs ray_address (the cluster's head, HOST:PORT)")
            return RayExecutor(self.cfg.ray_address, self.cfg.ray_hosts, self.cfg.backend, self.cfg.ray_token,
                               self.cfg.ray_host_memory)
        return WorkerPool(self.cfg.workers, backend=self.cfg.backend)

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` shows: the executor (for Ray: its nodes, model hosts and jobs in flight)
        and this node's jobs running."""
        running = sum(1 for f in self.running.values() if not f.done())
        workers = self.workers
        if workers is not None and hasattr(workers, "status"):
            executor = workers.status()
        else:
            executor = {"executor": "local", "workers": self.cfg.workers}
        return {"address": self.chain.address, "executor": executor, "jobs_running": running}

    # http -----------------------------------------------------------------------------------
    def app(self) -> Any:
        app = create_app(self.blobs, adversary.withheld(self.cfg.behaviour, self._committed_jobs, self.blobs))

        @app.get("/status")
        def status() -> dict[str, Any]:
            return self.status()

        @app.get("/bids/{order_id}")
        def get_bid(order_id: int) -> dict[str, Any]:
            bid = self.bids.get(order_id)
            if bid is None:
                raise HTTPException(404, f"no decision yet on order {order_id}")
            if "reason" in bid:
                raise HTTPException(409, bid["reason"])
            return bid

        @app.post("/leases/{order_id}/requests")
        def lease_request(order_id: int, body: dict[str, Any]) -> dict[str, Any]:
            """Request ``index`` of a standing lease (``node.sessions``): the answer and its receipt."""
            try:
                return self.leases.serve(order_id, body.get("index"), body.get("item"), str(body.get("signature", "")))
            except LeaseError as exc:
                raise HTTPException(exc.status, str(exc)) from None
            except VeracityError as exc:  # the chain could not be read
                raise HTTPException(503, str(exc)) from None

        @app.post("/leases/{order_id}/window")
        def lease_window(order_id: int, body: Any = Body(None)) -> dict[str, Any]:
            """Co-sign a standing lease's window (``node.sessions``): the signature ``post_window``
            needs, given only for exactly the requests this provider served on the lease."""
            try:
                return self.leases.sign_window(order_id, Window.parse(body))
            except LeaseError as exc:
                raise HTTPException(exc.status, self._who(f"does not sign lease {order_id}'s window: {exc}")) from None
            except VeracityError as exc:  # the chain could not be read
                raise HTTPException(503, str(exc)) from None

        @app.get("/traces/{order_id}")
        def get_trace(order_id: int) -> dict[str, Any]:
            """The CID of the trace committed for an order (its records' root is the trace root)."""
            state = NodeState(self.state.path)  # this thread's own connection
            try:
                job = state.job(order_id)
            finally:
                state.close()
            if job is None or job.trace_cid is None:
                raise HTTPException(404, f"no trace for order {order_id} here")
            return {"order_id": order_id, "trace_cid": job.trace_cid, "trace_root": job.trace_root,
                    "output_cid": job.output_cid}

        return app

    def _committed_jobs(self) -> list[Any]:
        """This provider's committed jobs, read on the HTTP thread through its own connection."""
        state = NodeState(self.state.path)
        try:
            return state.jobs(*adversary.COMMITTED)
        finally:
            state.close()

    def serve_forever(self) -> None:
        self.workers = self._executor()  # warming up meanwhile
        from veracity.models.registry import names

        for name in set(self.cfg.policy.models) & set(names()):  # to check inputs before bidding
            loaded(name)
        if self.defender is not None:
            self.defender.start()
        serve_and_loop("provider", self.app(), self.cfg.port, self.tick, self.cfg.poll_interval, ready=self.register)

