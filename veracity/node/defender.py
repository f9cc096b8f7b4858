"""A provider's defence of its challenged results, on a thread of its own.

The provider's main loop does job work that can take seconds: checking a spec builds its program
(up to ``planner.MAX_PROGRAM_RECORDS`` records), commits and finalizes wait for their blocks. A
dispute move waits on none of it: ``Defender.run`` ticks every ``interval`` seconds on its own
thread, learns of challenges from the Disputes contract's ``Challenged`` events itself (the main
loop may be busy when one comes), reads jobs through a SQLite connection of its own and plays each
game with a ``client.disputer.Disputer``. It also serves the output chunks somebody asks of its
results on chain (``OutputFaults.ChunkRequested``: unserved by the deadline, the result is lost). Both threads sign with the node's one account through one
``Chain``, whose sends take turns so that the account's nonce stays in step: a move waits at
most for the one transaction the main loop has in flight.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from veracity.blobs.store import BlobStore
from veracity.chain.client import ChunkAsk, DisputesClient, MarketClient
from veracity.chain.events import EventStream
from veracity.client.disputer import Disputer
from veracity.errors import InputError, VeracityError
from veracity.exact.trace import decode_records
from veracity.node.daemon import run_loop
from veracity.node.state import NodeState
from veracity.sim import adversary
from veracity.verify.available import serve_args
from veracity.verify.game import PROVIDER
from veracity.workloads.jobs import Job

SERVE_PER_TICK = 2  # asked-for chunks served per tick (each waits for its block)


class Defender:
    """Plays the provider's side of every game over a result it committed."""

    def __init__(self, disputes: DisputesClient, market: MarketClient, referees: tuple[str, ...], state_path: Path,
                 blobs: BlobStore, load_job: Callable[[str], Job], behaviour: str, log: Callable[[str], None],
                 interval: float = 0.5) -> None:
        self.disputes, self.market, self.blobs, self.load_job = disputes, market, blobs, load_job
        self.state_path, self.behaviour, self.log, self.interval = state_path, behaviour, log, interval
        self.disputer = Disputer(PROVIDER, disputes, referees, log)
        self.games: set[int] = set()  # orders challenged and not yet settled
        self.state: NodeState | None = None  # opened on the defence's thread (a connection is per thread)
        self.stream: EventStream | None = None
        self.asked: dict[tuple[int, int, int], tuple[ChunkAsk, int]] = {}  # chunks asked of its results -> (ask, block)
        self.failed: set[tuple[int, int, int]] = set()  # those it could not serve (logged once)
        self.tensors: dict[int, list[Any]] = {}  # an order's output tensors, read once for all its asks

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="disputes", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        run_loop("provider", self.tick, self.interval)

    def _open(self) -> None:
        self.state = NodeState(self.state_path)
        start = self.state.cursor("disputes", self.state.cursor("chain", -1))  # first run: from the main loop's
        if start < 0:
            start = self.disputes.chain.w3.eth.block_number + 1
        self.outputs = self.disputes.outputs()
        self.stream = EventStream(self.disputes.chain, {"Disputes": self.disputes.address,
                                                        "OutputFaults": self.outputs.address}, start)
        self.games = {job.order_id for job in self.state.jobs("challenged")}  # games under way at a restart

    def tick(self) -> None:
        if self.state is None or self.stream is None:
            self._open()
        assert self.state is not None and self.stream is not None
        for ev in self.stream.poll():
            if ev.name == "Challenged":  # (a result that won a game can be challenged again)
                self.games.add(int(ev.args["order_id"]))
            elif ev.name == "ChunkRequested":
                ask = ChunkAsk(int(ev.args["order_id"]), ev.args["asker"], int(ev.args["output"]),
                               int(ev.args["chunk"]), int(ev.args["deadline"]))
                self.asked[(ask.order_id, ask.output, ask.chunk)] = (ask, ev.block)
        # the cursor stays at the oldest ask not served yet: after a restart its event is read again
        self.state.set_cursor("disputes", min([b for _, b in self.asked.values()] + [self.stream.next_block]))
        for oid in sorted(self.games - set(self.disputer.players)):
            try:
                if self.disputes.game(oid).stage_name == "settled":  # ended while this node was down
                    self.games.discard(oid)
                else:
                    self.join(oid)
            except VeracityError as exc:  # tried again next tick
                self.log(f"order {oid}: dispute: {exc}")
        self.games -= set(self.disputer.tick(self.disputes.chain.now()))
        # the asks due first, a few a tick, so the next tick's dispute moves never wait long behind them
        for ask, _ in sorted(self.asked.values(), key=lambda a: a[0].deadline)[:SERVE_PER_TICK]:
            key = (ask.order_id, ask.output, ask.chunk)
            try:
                self.serve(ask)
            except InputError as exc:  # its outputs cannot be read as the job's: retrying will not help
                self.log(f"order {ask.order_id}: cannot serve output {ask.output}'s chunk {ask.chunk}: {exc}")
                del self.asked[key]
            except VeracityError as exc:  # tried again next tick, while the request is open
                if key not in self.failed:
                    self.failed.add(key)
                    self.log(f"order {ask.order_id}: could not serve output {ask.output}'s chunk {ask.chunk}: {exc}")
                if self.outputs.open_request(*key) is None:
                    del self.asked[key]

    def serve(self, ask: ChunkAsk) -> None:
        """Post an asked-for chunk of this node's committed output (another node's order: ignored)."""
        assert self.state is not None
        key = (ask.order_id, ask.output, ask.chunk)
        row = self.state.job(ask.order_id)
        if row is None or row.output_cid is None or self.behaviour in adversary.WITHHOLDS:  # a cheater
            del self.asked[key]
            return
        if self.outputs.open_request(*key) is None:  # served by somebody else, or settled
            del self.asked[key]
            return
        if ask.order_id not in self.tensors:
            self.tensors = {ask.order_id: self.load_job(row.spec_cid or "").served_tensors(self.blobs.get(row.output_cid))}
        tensors = self.tensors[ask.order_id]
        self.outputs.serve_chunk(ask.order_id, ask.output, ask.chunk, serve_args(tensors, ask.output, ask.chunk))
        del self.asked[key]
        self.log(f"order {ask.order_id}: served output {ask.output}'s chunk {ask.chunk} on chain, as asked")

    def join(self, oid: int) -> None:
        """Start defending ``oid`` with the trace this node committed (another node's order: ignored)."""
        assert self.state is not None
        row = self.state.job(oid)
        if row is None or row.trace_cid is None:
            self.games.discard(oid)
            return
        job = self.load_job(row.spec_cid or "")
        cheat = adversary.tamper_for(self.behaviour, job)  # a cheater replays its cheat to show tensors
        self.disputer.join(oid, decode_records(self.blobs.get(row.trace_cid)), job, self.market.program(oid), cheat,
                           has_tensors=self.behaviour != "lazy",
                           shows=adversary.lying_step_records if self.behaviour == "lie-inside" else None)
        self.log(f"order {oid}: defending the result in a dispute")
