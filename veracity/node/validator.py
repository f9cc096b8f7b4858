"""The validator daemon: follows result commitments and re-executes a sample of them.

    python -m veracity.node.validator --config validator.json

Whether an order is checked is a deterministic draw from (validator, order id) against the
order's rate, so a restart never changes its mind. The rate is the one that makes cheating a
losing bet (``verify.sampling``: from the price, the provider's collateral and stake, and the
number of validators), never below the client's ``spot_check_rate`` or this validator's ``rate``.
A check reads the spec and inputs by CID from its own blob store (clients push them to every
node, validators included), else from the committing provider, else from any other registered
node (every byte verified), so a provider that withholds them blinds nobody: "error" means no
node serves them. It runs the job in an isolated worker and compares the output CID and trace
root with the commitment: "match", or a mismatch. On a trace mismatch the validator challenges
with its own trace root and bond (whether or not the provider serves its trace: the game makes
it reveal its values on chain) and plays the dispute game through (``client.disputer``): verdict
"disputing", then "overturned" (the provider was slashed and the bond came back with its
collateral and stake share), "upheld" (the validator was wrong and lost its bond) or "undecided".
A restart resumes its games.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path
from typing import Any

from pydantic import Field

from veracity.blobs.server import create_app
from veracity.blobs.store import DEFAULT_MAX_BYTES, BlobStore
from veracity.blobs.transfer import fetch_any, fetch_trace
from veracity.chain.client import VALIDATOR, DisputesClient
from veracity.chain.devnet import Deployment
from veracity.chain.events import EventStream
from veracity.cid import cid_from_digest, cid_of
from veracity.client.disputer import CHALLENGER, Disputer
from veracity.client.outputs import judge_output
from veracity.errors import VeracityError
from veracity.exact.trace import decode_records, first_difference
from veracity.logs import log
from veracity.node.daemon import run_loop, serve_and_loop
from veracity.node.keys import KeyedConfig
from veracity.node.state import CheckLog, NodeState
from veracity.node.worker import WorkerPool
from veracity.verify.sampling import check_rate, slashable
from veracity.workloads.jobs import job_from_blobs
from veracity.workloads.planner import MAX_PROGRAM_RECORDS

TOKEN = 10**18


class ValidatorConfig(KeyedConfig):
    model_config = {"extra": "ignore"}
    log_level: str = "info"  # debug, info, warning or error (``--log-level`` overrides it)
    log_json: bool = False  # one JSON object per line
    deployment: str
    home: str
    port: int
    rate: float = Field(0.0, ge=0, le=1)  # the least share of results this validator checks
    stake: int = 100 * TOKEN
    backend: str = "torch"
    job_timeout: float = 600
    poll_interval: float = 0.3
    challenge: bool = True  # dispute results whose trace this validator's re-execution contradicts
    max_blob_bytes: int = DEFAULT_MAX_BYTES  # the largest spec, input or checkpoint this node stores


def sampled(validator: str, order_id: int, rate: float) -> bool:
    """A deterministic, uniform draw in [0, 1) from (validator, order) against ``rate``."""
    h = hashlib.sha256(f"{validator.lower()}:{order_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < rate


class ValidatorNode:
    def __init__(self, cfg: ValidatorConfig) -> None:
        self.cfg = cfg
        self.dep = Deployment.read(Path(cfg.deployment))
        self.chain, self.token, self.registry, self.market = self.dep.clients(cfg.key)
        self.state = NodeState(Path(cfg.home) / "state.db")
        self.checks = CheckLog(self.state)
        self.blobs = BlobStore(Path(cfg.home) / "blobs", cfg.max_blob_bytes)
        self.url = f"http://127.0.0.1:{cfg.port}"
        start = self.state.cursor("chain", -1)
        if start < 0:
            start = self.chain.w3.eth.block_number + 1
        self.stream = EventStream(self.chain, {"Market": self.dep.market}, start)
        self.registrations = EventStream(self.chain, {"Registry": self.dep.registry}, 0)
        self.endpoints: dict[str, str] = {}  # every registered node's, providers' and validators'
        self.validators = 0  # registered validators, which share the checking
        self.workers: WorkerPool | None = None
        # one signing Chain for the market and the games (its sends take turns: one nonce sequence)
        self.disputes = DisputesClient(self.chain, self.dep.disputes, self.token) if self.dep.disputes else None
        self.disputer = (Disputer(CHALLENGER, self.disputes, self.dep.referees, lambda m: log("validator", m))
                         if self.disputes is not None and cfg.challenge else None)
        self.resumed = False
        self.waiting: dict[int, tuple[Any, ...]] = {}  # results another challenger's game holds
        # the games are played on a thread of their own (``play``), so a long re-execution in
        # ``check`` never makes this validator miss a move; the main loop records how they ended
        self.playing = threading.Lock()
        self.ended: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.player: threading.Thread | None = None

    def register(self) -> None:
        if self.registry.node(self.chain.address).role == 0:
            self.registry.register(VALIDATOR, self.cfg.stake, "cpu", 24, [], 0, self.url)

    def tick(self) -> None:
        for ev in self.registrations.poll():
            if ev.name == "Registered":
                self.endpoints[ev.args["node"]] = ev.args["endpoint"]
                self.validators += int(ev.args["role"]) == VALIDATOR
        for ev in self.stream.poll():
            if ev.name == "ResultCommitted":
                oid = int(ev.args["order_id"])
                if self.checks.verdict(oid) is None and sampled(self.chain.address, oid, self.rate(oid)):
                    self.check(oid, ev.args)
        self.state.set_cursor("chain", self.stream.next_block)
        if self.disputer is not None:
            if not self.resumed:  # games this validator was playing before a restart
                self.resumed = True
                for row in self.checks.all():
                    if row["verdict"] in ("disputing", "waiting"):
                        self.check(row["order_id"], {}, resume=row["verdict"] == "disputing")
            self.retry_waiting()
            if self.player is None:  # no player thread (a node driven tick by tick): play here
                self.play()
        while not self.ended.empty():
            self.settled(self.ended.get())

    def play(self) -> None:
        """One round of every game this validator plays (the player thread's tick)."""
        assert self.disputer is not None
        with self.playing:
            done = self.disputer.tick(self.chain.now())
        for oid in done:
            self.ended.put(oid)

    def rate(self, oid: int) -> float:
        """How likely this validator is to check order ``oid`` (see ``verify.sampling``)."""
        order = self.market.order(oid)
        slash = slashable(order.collateral, self.registry.node(order.provider).stake)
        floor = max(self.cfg.rate, order.spot_check_bps / 10_000)
        return check_rate(order.price, slash, self.validators, floor)

    def holders(self, provider: str) -> list[str]:
        """Where to ask for a job's blobs: the committing provider, then every other registered node."""
        first = [self.endpoints[provider]] if provider in self.endpoints else []
        return [u for u in [*first, *self.endpoints.values()] if u and u.rstrip("/") != self.url]

    def job_blob(self, oid: int, order: Any, cid: str) -> bytes:
        """Blob ``cid`` of order ``oid`` from this node's store or any holder (``blobs.fetch_any``);
        an Oracle request's spec also from the Oracle contract, which holds it."""
        try:
            return fetch_any(cid, self.holders(order.provider), self.blobs)
        except VeracityError:
            if not self.dep.oracle or order.client.lower() != self.dep.oracle.lower() or \
                    cid != cid_from_digest(order.spec_cid):
                raise
        spec = self.dep.oracle_client(self.cfg.key).spec(oid)
        if cid_of(spec) != cid:
            raise VeracityError(f"the Oracle's spec of request {oid} is not the order's spec {cid}")
        self.blobs.put(spec)
        return spec

    def check(self, oid: int, args: dict[str, Any], resume: bool = False) -> None:
        order = self.market.order(oid)
        url = self.endpoints.get(order.provider)
        try:
            job = job_from_blobs(self.job_blob(oid, order, cid_from_digest(order.spec_cid)),
                                 lambda cid, _: self.job_blob(oid, order, cid), f"spec of order {oid}")
            if self.workers is None:
                self.workers = WorkerPool(1, backend=self.cfg.backend)
            result = self.workers.run(job, self.cfg.backend, self.cfg.job_timeout)
        except VeracityError as exc:
            self.checks.record(oid, "error", str(exc))
            return
        same_out = result.output_root == order.output_cid
        same_trace = result.trace_root == order.trace_root
        if same_out and same_trace:
            self.checks.record(oid, "match")
            return
        if same_trace:  # the honest trace with another output: proven wrong with the outputs it serves
            self.prove_output(oid, order, url, job, decode_records(result.trace))
            return
        what = [w for w, ok in (("output", same_out), ("trace root", same_trace)) if not ok]
        detail = f"re-execution differs in its {' and '.join(what)}"
        if not job.disputable:  # no referee judges inside these steps yet: a game would end undecided
            detail += "; this job's steps are not yet judged on-chain, so this validator does not challenge"
        if not same_trace and self.disputer is not None and job.disputable and (why := self.unplayable(oid, job)):
            detail += f"; {why}, so this validator does not challenge"
            self.checks.record(oid, "mismatch", detail)
            log("validator", f"order {oid}: mismatch, {detail}")
            return
        if same_trace or self.disputer is None or not job.disputable:
            if not same_trace and not resume:
                detail += "; " + self.locate(url, oid, order.trace_root, result.trace)
            self.checks.record(oid, "mismatch", detail)
            log("validator", f"order {oid}: mismatch, {detail}")
            return
        self.challenge(oid, order, url, job, result, detail, resume)

    def unplayable(self, oid: int, job: Any) -> str | None:
        """Why a game over ``oid`` could not be played to a verdict (None: it can): its posted
        program is not the two-level one this job gives (a single-level or made-up program, whose
        records this validator's coarse trace cannot answer for: a bond lost to a provider that
        posted it for its own order)."""
        from veracity.exact.program import program_root

        try:
            mine = job.posted_program(None if job.trains else job.model(), limit=MAX_PROGRAM_RECORDS)
        except VeracityError as exc:
            return f"its program cannot be computed here ({exc})"
        if self.market.program(oid) != (program_root(mine), len(mine)):
            return "the order's program is not the one its job gives"
        return None

    def challenge(self, oid: int, order: Any, url: str | None, job: Any, result: Any, detail: str,
                  resume: bool = False) -> None:
        """Challenge a result this validator's trace contradicts and play the game; when another
        challenger's game runs on it (a cheater's sybil may front-run and throw it), wait for
        that game to end and challenge then (``retry_waiting``), so the result never goes
        unchallenged."""
        try:  # first, within the challenge window; the provider's trace is not needed (the game reveals it)
            if not resume:
                self.disputes.challenge(oid, result.trace_root)  # type: ignore[union-attr]
            with self.playing:
                self.disputer.join(oid, decode_records(result.trace), job, self.market.program(oid))  # type: ignore[union-attr]
        except VeracityError as exc:
            if not resume and "already challenged" in str(exc):
                self.waiting[oid] = (order, url, job, result, detail)
                self.checks.record(oid, "waiting", f"{detail}; another challenger's game runs on it: this "
                                                   "validator challenges when it ends, if the result still stands")
                log("validator", f"order {oid}: mismatch, {detail}; waiting for another challenger's game")
                return
            if not resume and self.market.order(oid).state_name == "overturned":  # another challenger was quicker
                self.checks.record(oid, "overturned", f"{detail}; another challenger's game overturned it")
                log("validator", f"order {oid}: mismatch, {detail}; another challenger's game overturned it")
                return
            self.checks.record(oid, "mismatch", f"{detail}; could not challenge: {exc}")
            log("validator", f"order {oid}: mismatch, {detail}; could not challenge: {exc}")
            return
        if not resume:
            detail += "; " + self.locate(url, oid, order.trace_root, result.trace)
            log("validator", f"order {oid}: mismatch, {detail}; challenged with a bond")
        self.checks.record(oid, "disputing", detail)

    def retry_waiting(self) -> None:
        """Challenge the results whose other game has ended while they still stand."""
        for oid, (_, url, job, result, detail) in list(self.waiting.items()):
            order = self.market.order(oid)
            if order.state_name != "committed":
                del self.waiting[oid]
                verdict = "overturned" if order.state_name == "overturned" else "mismatch"
                self.checks.record(oid, verdict, f"{detail}; another challenger's game ended it ({order.state_name})")
                continue
            if self.disputes.game(oid).stage_name == "settled":  # type: ignore[union-attr]
                del self.waiting[oid]
                self.challenge(oid, order, url, job, result, detail)


    def prove_output(self, oid: int, order: Any, url: str | None, job: Any, records: list[Any]) -> None:
        """The committed trace is this validator's, the committed output root is not its outputs':
        prove the output that is not its trace record on chain (``client.outputs``)."""
        detail = "re-execution gives the committed trace but another output"
        program = job.posted_program(None if job.trains else job.model())
        try:
            committed = self.market.committed_outputs(oid)
        except VeracityError as exc:
            self.checks.record(oid, "mismatch", f"{detail}; {exc}")
            return
        verdict = judge_output(job, program, records, committed, None, self.disputes, oid)
        status = "overturned" if verdict.proven else "mismatch"
        self.checks.record(oid, status, f"{detail}: {verdict.reason}")
        log("validator", f"order {oid}: {status}, {detail}: {verdict.reason}")

    def settled(self, oid: int) -> None:
        """Record how a game this validator played ended."""
        state = self.market.order(oid).state_name
        verdict = {"overturned": "overturned", "refunded": "undecided"}.get(state, "upheld")
        detail = {"overturned": "the provider lost the dispute: slashed, the client refunded",
                  "undecided": "the dispute ended undecided: the client refunded, nobody slashed",
                  "upheld": "the provider won the dispute: this validator's bond went to it"}[verdict]
        self.checks.record(oid, verdict, detail)
        log("validator", f"order {oid}: {detail}")

    def locate(self, url: str | None, oid: int, committed_root: bytes, mine: bytes) -> str:
        """Where the provider's trace first departs from this validator's (what a dispute bisects
        to), or why that cannot be told (a provider without an endpoint, or not serving its trace)."""
        if url is None:
            return "the provider has no known endpoint to read its trace from"
        try:
            theirs = fetch_trace(url, oid, committed_root)
        except VeracityError as exc:
            return str(exc)
        ours = decode_records(mine)
        i = first_difference(ours, theirs)
        if i is None:
            return "the traces agree record by record"
        r = ours[i] if i < len(ours) else theirs[i]
        return f"the traces first differ at record {i} (step {r.step}, op {r.op})"

    def app(self) -> Any:
        app = create_app(self.blobs, title="Veracity validator")  # GET and PUT /blobs: clients push jobs' blobs here too

        @app.get("/checks")
        def checks() -> list[dict[str, Any]]:
            state = NodeState(Path(self.cfg.home) / "state.db")  # this thread's own connection
            try:
                return CheckLog(state).all()
            finally:
                state.close()

        @app.get("/health")
        def health() -> dict[str, str]:
            return {"status": "ok"}

        return app

    def serve_forever(self) -> None:
        self.workers = WorkerPool(1, backend=self.cfg.backend)
        if self.disputer is not None:
            self.player = threading.Thread(target=run_loop, args=("validator", self.play, 0.5), name="disputes",
                                           daemon=True)
            self.player.start()
        serve_and_loop("validator", self.app(), self.cfg.port, self.tick, self.cfg.poll_interval, ready=self.register)

