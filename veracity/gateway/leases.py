"""The gateway's standing leases: requests run on providers without waiting for a block.

For each model the gateway holds one open lease (``Market.open_order`` with no spec: a session
the provider serves until the gateway posts the window it served). A request goes straight to
the lease's provider over HTTP, signed by the gateway's key, and comes back with the provider's
signed receipt. A window closes after ``window_requests`` requests or ``window_s`` seconds: the
gateway pushes the window's spec (an ``infer`` job whose inputs are the requests, in order, in
batches of 1: its provider joins the runs that served them and runs nothing again) to the
provider, computes its program, asks the provider to co-sign them (``POST /leases/{order}/window``:
it signs only exactly what it served) and posts them with that signature (``Market.post_window``);
the provider commits the window like any order, validators check it and may dispute it like any
order, and the provider finalizes it after its challenge window (it is paid then). The next
request opens a new lease. A window is posted only while the lease's run time still fits before
its deadline (the Market's rule, with a margin): a lease is closed early enough for that.

If a provider stops answering mid-session, the gateway drops its lease and sends the request once
more, on a new lease with another provider. The caller sees one slower request, never a wrong
answer: an answer is only returned with a valid receipt from the lease's provider. The dropped
lease's window is posted if its provider comes back and co-signs it (then it must commit, or its
collateral is slashed at the deadline); otherwise the escrow comes back at the deadline.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from veracity.blobs.transfer import push_all
from veracity.chain.devnet import Deployment
from veracity.cid import cid_of, digest_of
from veracity.client.jobs import accept_best, collect_bids, holders, providers
from veracity.errors import InputError, VeracityError
from veracity.exact.levels import Levels
from veracity.exact.program import MAX_OUTPUTS, program_root
from veracity.market import receipts as R
from veracity.market.bids import Bid, window_signer
from veracity.workloads.infer import WINDOW_BATCH, job_program
from veracity.workloads.spec import Inputs, JobSpec, Verification, model_id

TOKEN = 10**18
INFER = 1  # the Market's kind code for infer orders
COMMIT_GRACE = 30  # contracts/Market.vy: a window is posted only while max(run time, this) fits before the deadline
REQUEST_TIMEOUT_S = 30  # a request's wait for its provider, plus a second per output record it makes
FIRST_BACKOFF_S, MAX_BACKOFF_S = 5.0, 300.0  # a provider that stopped answering is tried again after this


class GatewayError(VeracityError):
    """A request the gateway cannot serve; ``status`` is the HTTP status, ``kind`` OpenAI's error type."""

    def __init__(self, message: str, status: int = 503, kind: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind or ("invalid_request_error" if status < 500 else "service_unavailable")
        self.code = code  # OpenAI's error code, where it has one (``model_not_found``)


class ProviderDown(VeracityError):
    """The lease's provider did not answer (a dead peer): the lease is dropped, the request retried."""


class LeaseClosed(VeracityError):
    """The lease's window closed just before the request went out: it goes to the next lease."""


class WindowRefused(VeracityError):
    """The lease's provider would not co-sign the window (it says why): the window is not posted."""


@dataclass
class Lease:
    order_id: int
    model: str
    provider: str
    url: str
    price: int
    deadline: int
    opened: float
    run_time: int = 0  # the accepted bid's: the Market takes the window only while it fits before the deadline
    post_by: float = float("inf")  # (monotonic) the last moment to post the window, with a margin
    items: list[dict[str, Any]] = field(default_factory=list)
    outputs: int = 0  # the output records its window commits (at most ``MAX_OUTPUTS``)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    window: tuple[bytes, bytes, bytes, int] | None = None  # (spec, inputs, program root, length), built once
    retry_at: float = 0.0  # (monotonic) when to ask again for a co-signature the provider did not answer


@dataclass(frozen=True)
class WindowTerms:
    window_requests: int = 64  # requests per lease window
    window_s: float = 60  # seconds a window stays open
    price: float = 1.0  # VRC escrowed per lease window
    lease_s: int = 900  # the lease's deadline, from its opening: serving, posting and committing
    challenge_window: int = 30
    spot_check_rate: float = 1.0  # validators re-execute every window by default
    bid_wait: float = 10
    post_margin_s: int = 10  # seconds of slack on the Market's last moment to post a window


class LeasePool:
    """Open leases by model; ``call`` runs one request. ``close_due`` (the gateway's background
    loop) posts windows that are full or old, opens a standby lease for each model whose window
    is nearly done (so rolling to the next window never makes a request wait for bids or a
    block), and reclaims orphaned leases past their deadline; ``close_all`` posts every window."""

    def __init__(self, dep: Deployment, key: str, terms: WindowTerms = WindowTerms(),
                 log: Callable[[str], None] = lambda _m: None) -> None:
        self.dep, self.key, self.terms, self.log = dep, key, terms, log
        self.chain, self.token, self.registry, self.market = dep.clients(key)
        self.open: dict[str, Lease] = {}
        self.standby: dict[str, Lease] = {}  # the next lease per model, opened before it is needed
        self.closing: list[tuple[Lease, bool]] = []  # (lease, its provider is dead): windows to post
        self.dead: dict[str, tuple[float, float]] = {}  # provider -> (tried again after, its backoff in s)
        self.orphans: list[Lease] = []  # leases reclaimed once their deadline passes
        self._lock = threading.RLock()  # the dicts above
        self.chain_lock = threading.RLock()  # the chain client, one thread at a time
        self._openers: dict[str, threading.Lock] = {}
        self._http = httpx.Client(timeout=60)

    # requests -------------------------------------------------------------------------------
    def call(self, model: str, item: dict[str, Any]) -> dict[str, Any]:
        """Run one request: ``{"output", "receipt", "retried"}``. A dead provider costs one retry."""
        retried = False
        for _ in range(3):
            lease = self._lease(model)
            try:
                out = self._send(lease, item)
                out["retried"] = retried
                return out
            except LeaseClosed as exc:
                with self._lock:
                    if not lease.closed:
                        self.log(f"{exc}; moving to a new lease")
                        self._retire(lease)
                continue
            except ProviderDown as exc:
                with self._lock:
                    wait = self._down(lease.provider)
                    self.log(f"lease {lease.order_id}: provider {lease.provider} is down ({exc}); moving the "
                             f"session (it is tried again in {wait:g} s)")
                    self._retire(lease, dead=True)  # its window posted; reclaimed (slashed) at its deadline
                    spare = self.standby.get(model)
                    if spare is not None and self._is_down(spare.provider):
                        self._retire(self.standby.pop(model), dead=True)
                if retried:
                    break
                retried = True
        raise GatewayError(f"no provider answered for {model} (two tried); try again shortly")

    def _down(self, provider: str) -> float:
        """Note that ``provider`` stopped answering: it gets no lease until its backoff has passed
        (doubled each time it fails again, up to MAX_BACKOFF_S). The backoff, in seconds."""
        _, before = self.dead.get(provider.lower(), (0.0, 0.0))
        wait = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, 2 * before))
        self.dead[provider.lower()] = (time.monotonic() + wait, wait)
        return wait

    def _is_down(self, provider: str) -> bool:
        """Whether ``provider`` is still in its backoff (after it, it is tried again)."""
        until = self.dead.get(provider.lower())
        return until is not None and time.monotonic() < until[0]

    def _send(self, lease: Lease, item: dict[str, Any]) -> dict[str, Any]:
        with lease.lock:
            if lease.closed:
                raise LeaseClosed(f"lease {lease.order_id}'s window closed meanwhile")
            index = len(lease.items)
            outputs = self._outputs(lease, item)
            line = R.input_line(item)
            sig = R.sign_request(self.key, self.dep.chain_id, self.dep.market, lease.order_id, index, R.line_hash(line))
            body = {"index": index, "item": item, "signature": sig}
            # its time: a base, and a second per output record it makes (a generator's tokens)
            timeout = REQUEST_TIMEOUT_S + max(0, outputs - lease.outputs)
            try:
                resp = self._http.post(f"{lease.url}/leases/{lease.order_id}/requests", json=body, timeout=timeout)
            except httpx.HTTPError as exc:
                raise ProviderDown(str(exc) or type(exc).__name__) from None
            if resp.status_code == 400:
                raise GatewayError(resp.json().get("detail", "the model cannot take this input"), 400)
            if 400 < resp.status_code < 500:  # alive, but this lease cannot take it (closed, out of order)
                raise LeaseClosed(f"lease {lease.order_id}: HTTP {resp.status_code}: {resp.text[:200]}")
            if resp.status_code != 200:
                raise ProviderDown(f"HTTP {resp.status_code}: {resp.text[:200]}")
            out = resp.json()
            receipt = R.Receipt.model_validate(out["receipt"])
            if (receipt.lease, receipt.index, receipt.input_hash) != (lease.order_id, index, R.line_hash(line)) or \
                    (receipt.chain_id, receipt.market.lower(), receipt.provider.lower(), receipt.window) != \
                    (self.dep.chain_id, self.dep.market.lower(), lease.provider.lower(), None) or \
                    receipt.signer().lower() != lease.provider.lower() or \
                    receipt.output_hash != R.line_hash(R.output_line(item, out["output"])):
                raise ProviderDown("its receipt does not match the request and answer")
            lease.items.append(item)
            lease.outputs = outputs
        with self._lock:
            self.dead.pop(lease.provider.lower(), None)  # it answers (again)
        return {"output": out["output"], "receipt": receipt}

    @staticmethod
    def _outputs(lease: Lease, item: dict[str, Any]) -> int:
        """The output records the lease's window would commit with ``item``; LeaseClosed when that
        is more than a result commits (the next lease takes it)."""
        from veracity.models.registry import loaded
        from veracity.workloads.infer import window_outputs

        try:
            outputs = window_outputs(loaded(lease.model), len(lease.items), lease.outputs, item)
        except InputError as exc:
            raise GatewayError(str(exc), 400) from None
        if outputs > MAX_OUTPUTS:
            if not lease.items:
                raise GatewayError(f"this request alone makes {outputs} output records, more than the {MAX_OUTPUTS} a "
                                   "result commits: ask for fewer tokens", 400)
            raise LeaseClosed(f"lease {lease.order_id}'s window is full ({lease.outputs} output records)")
        return outputs

    # leases ---------------------------------------------------------------------------------
    def _usable(self, lease: Lease | None) -> bool:
        return lease is not None and not lease.closed and not self._due(lease)

    def _lease(self, model: str) -> Lease:
        with self._lock:
            lease = self.open.get(model)
            if self._usable(lease):
                return lease  # type: ignore[return-value]
            if lease is not None:
                self._retire(lease)
            spare = self.standby.pop(model, None)
            if spare is not None:
                spare.opened = time.monotonic()  # its window starts with its first request
                self.open[model] = spare
                return spare
            opener = self._openers.setdefault(model, threading.Lock())
        with opener:  # a cold start (no standby yet): this request waits for the lease to open
            with self._lock:
                if self._usable(self.open.get(model)):
                    return self.open[model]
            fresh = self._open(model)
            with self._lock:
                self.open[model] = fresh
            return fresh

    def _due(self, lease: Lease, share: float = 1.0) -> bool:
        now = time.monotonic()
        return (len(lease.items) >= share * self.terms.window_requests or now - lease.opened >= share * self.terms.window_s
                or lease.outputs >= share * MAX_OUTPUTS
                or now + self.terms.post_margin_s >= lease.post_by)  # left time to push, co-sign and post

    def _retire(self, lease: Lease, dead: bool = False) -> None:
        """Take a lease out of service; the background loop posts its window."""
        with lease.lock:
            was_closed, lease.closed = lease.closed, True
        if self.open.get(lease.model) is lease:
            del self.open[lease.model]
        if not was_closed:
            self.closing.append((lease, dead))
        elif dead and lease not in self.orphans:  # posted already, and its provider died since
            self.orphans.append(lease)

    def _open(self, model: str) -> Lease:
        peers = {a: u.rstrip("/") for a, u in providers(self.dep, self.key).items() if not self._is_down(a)}
        if not peers:
            raise GatewayError("no live provider is registered: start one (`veracity devnet up`)")
        price = int(self.terms.price * TOKEN)
        with self.chain_lock:
            if self.token.balance_of(self.chain.address) < price:
                raise GatewayError(f"the gateway's account {self.chain.address} cannot escrow a lease "
                                   f"({self.terms.price:g} VRC): fund it", 402, "insufficient_quota")
            oid = self.market.open_order(bytes(32), INFER, model_id(model), price,
                                         self.chain.now() + self.terms.lease_s, self.terms.challenge_window,
                                         int(self.terms.spot_check_rate * 10_000))
            bids, reasons = collect_bids(self.dep, oid, peers, price, self.terms.bid_wait, [])
            if not bids:
                self.market.reclaim(oid)
                raise GatewayError(f"no provider took a lease for {model} (escrow refunded): {'; '.join(reasons)}")
            best: Bid = accept_best(self.market, self.registry, oid, bids)
            deadline, run_time = self.market.order(oid).deadline, self.market.run_time(oid)
            left = deadline - max(run_time, COMMIT_GRACE) - self.terms.post_margin_s - self.chain.now()
        self.log(f"lease {oid}: {model} on provider {best.provider} for {best.price / TOKEN:g} VRC")
        return Lease(oid, model, best.provider, peers[best.provider], best.price, deadline, time.monotonic(), run_time,
                     time.monotonic() + left)

    def _window(self, lease: Lease) -> tuple[bytes, bytes, bytes, int]:
        """The window a lease served: its spec (an infer job of the requests, in order), the
        inputs, and its program's root and length."""
        inputs = "".join(R.input_line(i) for i in lease.items).encode()
        with self.chain_lock:
            left = max(1, lease.deadline - self.chain.now())
        spec = JobSpec(kind="infer", model=lease.model, inputs=Inputs(cid=cid_of(inputs)), max_price=lease.price / TOKEN,
                       deadline=left, verification=Verification(challenge_window=self.terms.challenge_window,
                                                                spot_check_rate=self.terms.spot_check_rate),
                       batch=WINDOW_BATCH)  # its provider joins the runs that served the requests
        program = Levels.of(job_program(lease.model, inputs, batch_size=WINDOW_BATCH)).coarse_program()
        return spec.model_dump_json(exclude_none=True).encode(), inputs, program_root(program), len(program)

    def _cosign(self, lease: Lease, spec_cid: bytes, root: bytes, length: int) -> str:
        """The lease provider's signature of the window (``node.sessions``), checked here."""
        body = {"spec_cid": "0x" + spec_cid.hex(), "program_root": "0x" + root.hex(), "program_length": length}
        try:
            resp = self._http.post(f"{lease.url}/leases/{lease.order_id}/window", json=body)
        except httpx.HTTPError as exc:
            raise ProviderDown(str(exc) or type(exc).__name__) from None
        if 400 <= resp.status_code < 500:
            try:
                why = resp.json().get("detail", resp.text[:300])
            except (ValueError, AttributeError):
                why = resp.text[:300]
            raise WindowRefused(f"HTTP {resp.status_code}: {why}")
        if resp.status_code != 200:
            raise ProviderDown(f"HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            signature = str(resp.json()["signature"])
            signer = window_signer(lease.order_id, spec_cid, root, length, signature, self.dep.chain_id, self.dep.market)
        except Exception:  # not a signature at all
            signer = ""
        if signer.lower() != lease.provider.lower():
            raise WindowRefused("its answer is not the lease provider's signature of the window")
        return signature

    def _orphan(self, lease: Lease) -> None:
        with self._lock:
            if lease not in self.orphans:
                self.orphans.append(lease)

    def _post(self, lease: Lease, dead: bool, last: bool = False) -> None:
        """Post the window a lease served, co-signed by its provider. A lease that served nothing,
        whose provider is dead, or whose window cannot be posted (refused, or too late) is
        reclaimed once its deadline passes (the Market slashes only a provider that did not
        commit a posted window). A provider that did not answer is asked again a few seconds
        later, while there is time (not on ``last``, the gateway's shutdown)."""
        if dead or not lease.items:
            self._orphan(lease)
        if not lease.items:
            return
        if lease.window is None:  # the same window on every try: the provider signs one window a lease
            lease.window = self._window(lease)
        spec_bytes, inputs, root, length = lease.window
        spec_cid = digest_of(cid_of(spec_bytes))
        # to every registered node (validators re-execute it without asking the provider), and tried even for
        # a provider thought dead: if it is back, it can co-sign and run its window
        refused = push_all({**holders(self.dep, self.key), lease.provider: lease.url}, (spec_bytes, inputs))
        if lease.provider in refused and lease.retry_at == 0:  # (said once, not on every try)
            self.log(f"lease {lease.order_id}: cannot push its window to the provider ({refused[lease.provider]})")
        with self.chain_lock:
            now = self.chain.now()
        if now + max(lease.run_time, COMMIT_GRACE) + self.terms.post_margin_s > lease.deadline:
            self.log(f"lease {lease.order_id}: too close to its deadline to post its window ({len(lease.items)} "
                     "requests, never paid for); its escrow comes back at the deadline")
            self._orphan(lease)
            return
        try:
            signature = self._cosign(lease, spec_cid, root, length)
        except WindowRefused as exc:
            self.log(f"lease {lease.order_id}: provider {lease.provider} refused to co-sign its window ({exc}); "
                     "its escrow comes back at the deadline")
            self._orphan(lease)
            return
        except ProviderDown as exc:
            if last:
                self._orphan(lease)
            else:
                if lease.retry_at == 0:
                    self.log(f"lease {lease.order_id}: provider {lease.provider} did not co-sign its window ({exc}); "
                             "asking again while there is time")
                lease.retry_at = time.monotonic() + 5
                with self._lock:
                    self.closing.append((lease, dead))
            return
        try:
            with self.chain_lock:
                self.market.post_window(lease.order_id, spec_cid, root, length, signature)
        except VeracityError as exc:
            self.log(f"lease {lease.order_id}: the Market refused its window ({exc}); its escrow comes back at the "
                     "deadline")
            self._orphan(lease)
            return
        self.log(f"lease {lease.order_id}: window posted, {len(lease.items)} requests, co-signed by its provider")

    def close_due(self) -> None:
        """The background loop's turn: post due windows, open standby leases, reclaim orphans."""
        with self._lock:
            for lease in list(self.open.values()):
                if self._due(lease):
                    self._retire(lease)
            for model, spare in list(self.standby.items()):  # traffic stopped: an idle spare is let go
                if model not in self.open and time.monotonic() - spare.opened > 2 * self.terms.window_s:
                    self._retire(self.standby.pop(model))
            closing, self.closing = self.closing, []
            nearly = [m for m, lease in self.open.items() if self._due(lease, 0.75) and m not in self.standby]
        for lease, dead in closing:
            if lease.retry_at <= time.monotonic():
                try:
                    self._post(lease, dead)
                    continue
                except VeracityError as exc:  # the chain did not answer: tried again shortly
                    self.log(f"lease {lease.order_id}: cannot post its window yet ({exc})")
                    lease.retry_at = time.monotonic() + 5
            with self._lock:
                self.closing.append((lease, dead))
        for model in nearly:
            opener = self._openers.setdefault(model, threading.Lock())
            if not opener.acquire(blocking=False):
                continue  # a request is opening one right now
            try:
                spare = self._open(model)
                with self._lock:
                    self.standby[model] = spare
            except GatewayError as exc:
                self.log(f"standby lease for {model}: {exc}")
            finally:
                opener.release()
        with self.chain_lock:
            now = self.chain.now()
            for lease in [o for o in self.orphans if now > o.deadline]:
                self.orphans.remove(lease)
                order = self.market.order(lease.order_id)
                if order.state_name == "accepted":  # (it may have come back)
                    self.market.reclaim(lease.order_id)
                    self.log(f"lease {lease.order_id}: reclaimed at its deadline" +
                             (f", provider {lease.provider} never committed its window (collateral slashed)"
                              if any(order.spec_cid) else " (no window posted: nobody slashed)"))

    def close_all(self) -> None:
        with self._lock:
            for lease in [*self.open.values(), *self.standby.values()]:
                self._retire(lease)
            self.standby.clear()
            closing, self.closing = self.closing, []
        for lease, dead in closing:
            self._post(lease, dead, last=True)
