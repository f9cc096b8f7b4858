"""A provider's side of standing leases: serve a lease client's requests as they come, exactly,
each answer with a signed receipt, and keep them (SQLite) until the client posts the window.

``POST /leases/{order}/requests`` takes ``{"index", "item", "signature"}``: request ``index`` of
the lease (0, 1, 2, ... with no gaps), its item as an ``infer`` input line, signed by the lease's
client (``market.receipts.sign_request``). The answer is the output line the window's ``infer``
job will write for it, with the provider's receipt. Asking again for an index already served
with the same item gives the same answer (a retried request); another item there is refused.

``POST /leases/{order}/window`` takes ``{"spec_cid", "program_root", "program_length"}`` (the
spec's 32-byte digest and the program root as 0x hex): the window the client means to post. The
provider signs it (``market.bids.sign_window``; the Market takes no window without that signature)
only if its spec, already pushed to this node, is an ``infer`` job of the lease's model whose
inputs are exactly the requests it served on the lease, in order, and the program is the one it
computes for that spec; once signed, the lease serves no more requests. So a client cannot post a
window its provider never served, which a sybil could then challenge to have it slashed.
When the client posts the window (``Market.post_window``) the lease is an ordinary order, and
the provider commits the window's job. It runs nothing again: each request ran once, alone, with
the coarse trace a provider commits (``workloads.infer.served_run``; a generator answers at its
stop token and finishes its remaining passes after the answer is sent), and its run is kept here;
the window's job is an infer job with batch 1 over the requests, so its result is their runs
joined (``infer.joined_result``: the same bits). A window whose runs are not all kept (a crash
between an answer and its run's end) is run again, like any order.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError, VeracityError
from veracity.exact.program import MAX_OUTPUTS
from veracity.exact.trace import decode_records, encode_records
from veracity.market import bids
from veracity.market import receipts as R
from veracity.workloads.infer import ServedRun

COMMIT_GRACE = 30  # contracts/Market.vy: a window is posted only while max(run time, this) fits before the deadline
MAX_ORDER_ID = 2**63  # order ids the chain can have (and SQLite can store)
MAX_REQUEST_BYTES = 64 << 10  # a request's input line (the gateway's largest model limit), refused unread past it


def window_admission(policy: Any, move_time: int | None) -> Callable[[str, int, int, dict[str, Any]], int]:
    """A provider's ``LeaseServer`` ``outputs``: the output records a lease window makes once ``item``
    joins it (``infer.window_outputs``), refusing (InputError) an item whose own replay, what
    opening one of its records in a dispute re-runs (``infer.record_tensors``: a window's
    requests are batches of their own, so the window's length never adds to it), would not fit in
    part of a dispute move of ``move_time`` on ``policy``'s devices (``policy.check_replay``)."""
    from veracity.market.policy import check_replay
    from veracity.models.registry import loaded
    from veracity.workloads.infer import item_estimate, window_outputs

    def outputs(model: str, served: int, outputs: int, item: dict[str, Any]) -> int:
        m = loaded(model)
        n = window_outputs(m, served, outputs, item)
        slow = check_replay(item_estimate(m, item), policy, move_time)
        if slow is not None:
            raise InputError(f"this request is too long to serve: {slow}; send a shorter prompt or a smaller "
                             "max_tokens")
        return n

    return outputs


class LeaseError(VeracityError):
    """A request a lease cannot take; ``status`` is the HTTP status that says so."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LeaseTerms:
    """What the chain says of a lease: its client, model, provider and deadline, and whether its
    window is still open (no spec posted, accepted, this provider's)."""

    client: str
    model: str
    provider: str
    deadline: int
    open: bool
    run_time: int = 0  # the accepted bid's: the Market takes a window only while it fits before the deadline


@dataclass(frozen=True)
class Window:
    """A window a lease's client asks its provider to co-sign: what ``post_window`` will fix."""

    spec_cid: bytes  # the spec's 32-byte digest, as the Market stores it
    program_root: bytes
    program_length: int

    @classmethod
    def parse(cls, body: Any) -> "Window":
        """From the JSON body of ``POST /leases/{order}/window``; a LeaseError (400) says what is wrong."""
        if not isinstance(body, dict):
            raise LeaseError("the body must be a JSON object with spec_cid, program_root and program_length", 400)

        def word(name: str) -> bytes:
            v = body.get(name)
            try:
                if isinstance(v, str) and len(v) == 66 and v.startswith("0x") and len(word := bytes.fromhex(v[2:])) == 32:
                    return word
            except ValueError:
                pass
            raise LeaseError(f'"{name}" must be 32 bytes as 0x and 64 hex digits', 400)

        length = body.get("program_length")
        if not isinstance(length, int) or isinstance(length, bool) or not 0 < length < 2**256:
            raise LeaseError('"program_length" must be a positive integer below 2^256 (the records of the '
                             "window's trace)", 400)
        return cls(word("spec_cid"), word("program_root"), length)


class LeaseLog:
    """The requests served under each lease, one row each, in this node's SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._db().execute("CREATE TABLE IF NOT EXISTS lease_requests (order_id INTEGER NOT NULL, idx INTEGER NOT NULL, "
                           "input_line TEXT NOT NULL, output_line TEXT NOT NULL, receipt TEXT NOT NULL, "
                           "PRIMARY KEY (order_id, idx))")
        self._db().execute("CREATE TABLE IF NOT EXISTS lease_windows (order_id INTEGER PRIMARY KEY, "
                           "spec_cid TEXT NOT NULL, program_root TEXT NOT NULL, program_length TEXT NOT NULL, "
                           "signature TEXT NOT NULL)")
        self._db().execute("CREATE TABLE IF NOT EXISTS lease_runs (order_id INTEGER NOT NULL, idx INTEGER NOT NULL, "
                           "output TEXT NOT NULL, steps INTEGER NOT NULL, records BLOB NOT NULL, "
                           "output_digests BLOB NOT NULL, PRIMARY KEY (order_id, idx))")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:  # one connection per thread (HTTP handlers run in a pool)
            db = self._local.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
        return db

    def served(self, order_id: int) -> list[tuple[str, str, str]]:
        """(input line, output line, receipt JSON) of every request served, in order."""
        rows = self._db().execute("SELECT input_line, output_line, receipt FROM lease_requests WHERE order_id = ? "
                                  "ORDER BY idx", (order_id,))
        return [tuple(r) for r in rows]

    def count(self, order_id: int) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM lease_requests WHERE order_id = ?", (order_id,)).fetchone()[0])

    def get(self, order_id: int, index: int) -> tuple[str, str, str] | None:
        row = self._db().execute("SELECT input_line, output_line, receipt FROM lease_requests WHERE order_id = ? "
                                 "AND idx = ?", (order_id, index)).fetchone()
        return None if row is None else tuple(row)

    def add(self, order_id: int, index: int, input_line: str, output_line: str, receipt: str) -> None:
        self._db().execute("INSERT INTO lease_requests VALUES (?, ?, ?, ?, ?)",
                           (order_id, index, input_line, output_line, receipt))

    def keep(self, order_id: int, index: int, run: ServedRun) -> None:
        """Request ``index``'s run: its output and the coarse trace it kept."""
        self._db().execute("INSERT OR REPLACE INTO lease_runs VALUES (?, ?, ?, ?, ?, ?)",
                           (order_id, index, json.dumps([int(v) for v in run.output]), run.steps,
                            encode_records(run.records), b"".join(run.output_digests)))

    def runs(self, order_id: int) -> list[ServedRun]:
        """The kept runs of a lease's requests, in order (fewer than its requests when some were lost)."""
        rows = self._db().execute("SELECT output, steps, records, output_digests FROM lease_runs WHERE order_id = ? "
                                  "ORDER BY idx", (order_id,))
        return [ServedRun(np.array(json.loads(out), dtype=np.int64), decode_records(records), steps,
                          [digests[i:i + 32] for i in range(0, len(digests), 32)])
                for out, steps, records, digests in rows]

    def signed(self, order_id: int) -> tuple[Window, str] | None:
        """The window this node signed for a lease, and its signature (a lease has one at most)."""
        row = self._db().execute("SELECT spec_cid, program_root, program_length, signature FROM lease_windows "
                                 "WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            return None
        return Window(bytes.fromhex(row[0]), bytes.fromhex(row[1]), int(row[2])), row[3]

    def sign(self, order_id: int, window: Window, signature: str) -> None:
        self._db().execute("INSERT INTO lease_windows VALUES (?, ?, ?, ?, ?)",
                           (order_id, window.spec_cid.hex(), window.program_root.hex(), str(window.program_length),
                            signature))


Answer = tuple[Any, "Future[ServedRun] | None"]  # what an answer shows, and its run (kept once it ends)


class LeaseServer:
    """Serves requests under this provider's open leases, and co-signs their windows.
    ``terms(order)`` reads a lease from the chain; ``answer(model, item)`` runs one item exactly
    and returns what the job's output shows for it, with its run's future (``ServedRun``: kept in
    the log when it ends, which may be after the answer is sent); ``program(model, spec_cid, inputs)`` is the
    program (root, length) this node computes for a window spec, once it has checked the spec is
    an infer job of ``model`` over exactly ``inputs`` (else a LeaseError says why). A lease serves
    one request at a time; different leases' requests run side by side."""

    def __init__(self, log: LeaseLog, key: str, address: str, chain_id: int, market: str,
                 terms: Callable[[int], LeaseTerms], answer: Callable[[str, dict[str, Any]], Answer],
                 now: Callable[[], int], program: Callable[[str, bytes, bytes], tuple[bytes, int]] | None = None,
                 margin_s: int = 10, max_requests: int = 4096,
                 outputs: Callable[[str, int, int, dict[str, Any]], int] | None = None) -> None:
        self.log, self.key, self.address = log, key, address
        self.chain_id, self.market = chain_id, market
        self.terms, self.answer, self.now, self.margin_s = terms, answer, now, margin_s
        self.program = program
        self.max_requests = max_requests  # per lease: a client must post what it was served
        self.outputs = outputs  # (model, served, their output records, item) -> the records with it
        self._window_outputs: dict[int, int] = {}  # per lease: its served requests' output records
        self._locks: dict[int, threading.Lock] = {}  # per lease: its requests and its window, one at a time
        self._locks_lock = threading.Lock()
        self._kept: dict[int, Future[None]] = {}  # per lease: done when its latest answer's run is kept

    def _lease(self, order_id: int, serving: bool = True) -> LeaseTerms:
        if not 0 < order_id < MAX_ORDER_ID:
            raise LeaseError(f"there is no lease {order_id}", 404)
        t = self.terms(order_id)  # read each time: the window may have been posted meanwhile
        if t.provider.lower() != self.address.lower():
            raise LeaseError(f"order {order_id} is not a lease this provider holds", 404)
        if not t.open:
            raise LeaseError(f"lease {order_id}'s window is closed (posted or settled): open a new lease")
        # it stops serving while the window it served can still be posted and committed
        if serving and self.now() > t.deadline - max(t.run_time, COMMIT_GRACE) - self.margin_s:
            raise LeaseError(f"lease {order_id} is past its serving time (its deadline is near): open a new lease")
        return t

    def serve(self, order_id: int, index: object, item: Any, signature: str) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise LeaseError('"item" must be a JSON object (an infer input line)', 400)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise LeaseError('"index" must be a non-negative integer', 400)
        if index >= self.max_requests:
            raise LeaseError(f"a lease serves at most {self.max_requests} requests: post the window")
        line = R.input_line(item)
        if len(line) > MAX_REQUEST_BYTES:  # (JSON with ASCII escapes: its length is its bytes)
            raise LeaseError(f"a request's item is at most {MAX_REQUEST_BYTES:,} bytes", 400)
        input_hash = R.line_hash(line)
        lease = self._lease(order_id)
        try:
            signer = R.request_signer(signature, self.chain_id, self.market, order_id, index, input_hash)
        except Exception:
            raise LeaseError("the request's signature cannot be read", 401) from None
        if signer.lower() != lease.client.lower():
            raise LeaseError(f"request {index} is not signed by lease {order_id}'s client", 401)
        with self._lock(order_id):  # another lease's requests go on meanwhile (a long one never holds them)
            lease = self._lease(order_id)  # again: the window may have been posted while this waited
            if self.log.signed(order_id) is not None:
                raise LeaseError(f"lease {order_id}'s window is signed: post it and open a new lease")
            done = self.log.get(order_id, index)
            if done is not None:
                if done[0] != line:
                    raise LeaseError(f"request {index} of lease {order_id} was served with another item")
                return self._response(index, *done)
            have = self.log.count(order_id)
            if have >= self.max_requests:
                raise LeaseError(f"lease {order_id} has served its {self.max_requests} requests: post the window")
            if index != have:
                raise LeaseError(f"lease {order_id} expects request {have} next, not {index}")
            n = 0
            if self.outputs is not None:  # its window must stay one a result can commit
                try:
                    n = self.outputs(lease.model, have, self._served_outputs(order_id, lease.model), item)
                except InputError as exc:
                    raise LeaseError(str(exc), 400) from None
                if n > MAX_OUTPUTS:
                    raise LeaseError(f"lease {order_id}'s window would hold {n} output records, more than the "
                                     f"{MAX_OUTPUTS} a result commits: post it and open a new lease")
            try:
                shown, run = self.answer(lease.model, item)
            except InputError as exc:
                raise LeaseError(str(exc), 400) from None
            out = R.output_line(item, shown)
            receipt = R.sign_receipt(self.key, self.chain_id, self.market, order_id, index, input_hash,
                                     R.line_hash(out))
            self.log.add(order_id, index, line, out, receipt.model_dump_json())
            self._window_outputs[order_id] = n
            if run is not None:
                kept: Future[None] = Future()
                self._kept[order_id] = kept
                run.add_done_callback(lambda f: self._keep(order_id, index, f, kept))
            return self._response(index, line, out, receipt.model_dump_json())

    def _keep(self, order_id: int, index: int, run: "Future[ServedRun]", kept: "Future[None]") -> None:
        """A request's run has ended: keep it for the window (a failed one is not kept, and its
        window is run again)."""
        try:
            if run.exception() is None:
                self.log.keep(order_id, index, run.result())
        finally:
            kept.set_result(None)

    def settled(self, order_id: int) -> None:
        """Wait until lease ``order_id``'s latest answer's run has ended and is kept (or failed: not kept)."""
        kept = self._kept.get(order_id)
        if kept is not None:
            kept.result()

    def _lock(self, order_id: int) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(order_id, threading.Lock())

    def _served_outputs(self, order_id: int, model: str) -> int:
        """The output records a lease's served requests make: kept as they are served, counted once
        from the log after a restart."""
        if order_id not in self._window_outputs:
            assert self.outputs is not None
            n = 0
            for i, (line, _, _) in enumerate(self.log.served(order_id)):
                n = self.outputs(model, i, n, json.loads(line))
            self._window_outputs[order_id] = n
        return self._window_outputs[order_id]

    def sign_window(self, order_id: int, window: Window) -> dict[str, Any]:
        """This provider's signature of ``window`` for a lease it holds, if the window is exactly
        what it served there; the lease then serves no more requests. Asking again for the same
        window gives the same signature; another window is refused."""
        if self.program is None:
            raise LeaseError("this provider does not co-sign lease windows", 404)
        with self._lock(order_id):  # no request is served on the lease while its window is checked
            self.settled(order_id)
            lease = self._lease(order_id, serving=False)
            done = self.log.signed(order_id)
            if done is not None:
                if done[0] != window:
                    raise LeaseError(f"lease {order_id}'s window is already signed, for spec "
                                     f"0x{done[0].spec_cid.hex()}: post that one")
                return self._signed(order_id, *done)
            served = self.log.served(order_id)
            if not served:
                raise LeaseError(f"lease {order_id} has served no request: there is no window to sign")
            root, length = self.program(lease.model, window.spec_cid, "".join(line for line, _, _ in served).encode())
            if (root, length) != (window.program_root, window.program_length):
                raise LeaseError(f"the window's program ({window.program_length} records, root "
                                 f"{window.program_root.hex()[:12]}) is not the one this provider computes for "
                                 f"its spec ({length} records, root {root.hex()[:12]}): a dispute could not judge it")
            signature = bids.sign_window(order_id, window.spec_cid, window.program_root, window.program_length,
                                         self.key, self.chain_id, self.market)
            self.log.sign(order_id, window, signature)
            self._window_outputs.pop(order_id, None)  # it serves no more requests
            return self._signed(order_id, window, signature)

    @staticmethod
    def _signed(order_id: int, window: Window, signature: str) -> dict[str, Any]:
        return {"order_id": order_id, "spec_cid": "0x" + window.spec_cid.hex(),
                "program_root": "0x" + window.program_root.hex(), "program_length": window.program_length,
                "signature": signature}

    @staticmethod
    def _response(index: int, _line: str, out: str, receipt: str) -> dict[str, Any]:
        return {"index": index, "output": json.loads(out)["output"], "receipt": json.loads(receipt)}
