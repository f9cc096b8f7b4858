"""``veracity explorer``: the network as web pages, server-rendered from the event index.

A FastAPI app: the index (``explorer.index``) is synced by a background thread; pages read it,
and read the chain (stakes, balances, an order's state) where the events do not hold a thing.
``/live`` is a server-sent event stream of the indexed head; a page's script swaps in its fresh
content when the head moves, so new blocks and state changes appear without a reload. Every
script and style is served from ``/static``: nothing from a CDN.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from veracity.chain.client import ORDER_STATES, MarketClient, RegistryClient, TokenClient
from veracity.chain.devnet import Deployment
from veracity.explorer import dataviews as D
from veracity.explorer import links as L
from veracity.explorer import views as V
from veracity.explorer.index import Index
from veracity.models.registry import names as model_registry

HERE = Path(__file__).parent
SYNC_S = 0.5  # how often the index reads the chain's new blocks
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
MAX_FORM = 64 << 10  # the receipt checker's form, at most
MAX_LIVE = 64  # pages following the chain live at once
CHECKS_S = 2.0  # the validators' /checks, all together, at most this long
CHECKS_BYTES = 1 << 20  # and each answer at most this large


class Explorer:
    """The pages' data: the index, the chain's readers, and the words' context (roles, models)."""

    def __init__(self, dep: Deployment, index_path: Path) -> None:
        self.dep = dep
        self.index = Index(index_path, dep)
        self.models = V.model_names(model_registry())
        self.key = (dep.accounts[0].key if dep.accounts else dep.deployer.key)
        self._stop = threading.Event()
        self.error = ""
        self._nodes: tuple[int, dict[str, V.NodeRow]] | None = None
        self._checks: dict[str, tuple[float, list[Any]]] = {}  # a validator's /checks, as fetched last
        self.receipts = threading.Semaphore(1)  # one receipt checked at a time: each reads the chain and blobs

    def readers(self) -> tuple[TokenClient, RegistryClient, MarketClient]:
        _, token, registry, market = self.dep.clients(self.key)
        return token, registry, market

    def follow(self) -> None:
        """Sync the index until stopped (a chain that cannot be reached is retried, and said on the pages)."""
        while not self._stop.is_set():
            try:
                self.index.sync()
                self.error = ""
            except Exception as exc:  # the chain down for a while: said, and tried again
                self.error = f"cannot read the chain: {str(exc).splitlines()[0][:200]}"
            self._stop.wait(SYNC_S)

    def stop(self) -> None:
        self._stop.set()

    # what pages show ---------------------------------------------------------------------------
    def nodes(self) -> dict[str, V.NodeRow]:
        """Every node's record from the events (``views.leaderboard``), once per indexed head."""
        head = self.index.head()["events"]
        cached = self._nodes
        if cached is not None and cached[0] == head:
            return cached[1]
        nodes = V.leaderboard(self.index.events("Registered", "AttributesUpdated", "Slashed", "ReputationChanged",
                                                "Finalized", "BidAccepted", "Challenged", "Settled", "Overturned"))
        self._nodes = (head, nodes)
        return nodes

    def context(self, nodes: dict[str, V.NodeRow] | None = None) -> dict[str, Any]:
        nodes = self.nodes() if nodes is None else nodes
        labels = V.labels(nodes, self.index.addresses)
        where = self.dispute_places()
        thresholds = self.thresholds()
        return {"labels": labels, "say": lambda e: V.describe(e, labels, self.models, where, thresholds)}

    def thresholds(self) -> dict[int, int]:
        """Data pool -> its near-copy threshold in basis points (what an item's score is told against)."""
        created = self.index.events("PoolCreated", contract="DataPool")
        return {p.pool: p.threshold_bps for p in D.pools(created).values()}

    def dispute_places(self) -> dict[int, str]:
        """Order -> where its dispute ended ("at record 57, element 12")."""
        places: dict[int, str] = {}
        for e in self.index.events("Located", "ElementLocated"):
            oid = e["order_id"]
            if e["name"] == "Located":
                places[oid] = f"at record {e['args']['record']}"
            else:
                places[oid] = places.get(oid, "at its record") + f", element {e['args']['element']}"
        return places

    def verdicts(self, oid: int) -> list[dict[str, Any]]:
        """What each registered validator's ``/checks`` says of order ``oid`` (its node's HTTP API: the
        chain holds only a challenge). Its endpoint's scheme, host and port only, with a fixed path;
        every validator at once, within CHECKS_S in all, each answer kept ten seconds; one that
        does not answer in time, or answers nonsense, is said to be unreachable."""
        from concurrent.futures import ThreadPoolExecutor, wait

        _, registry, _ = self.readers()
        validators = {}
        for addr, row in self.nodes().items():
            if row.role == "validator":
                info = registry.node(addr)
                url = checks_url(info.endpoint) if info.role == 2 else None
                if url:
                    validators[addr] = url
        if not validators:
            return []
        pool = ThreadPoolExecutor(max_workers=min(8, len(validators)))
        futures = {addr: pool.submit(self._fetch_checks, url) for addr, url in validators.items()}
        wait(list(futures.values()), timeout=CHECKS_S)
        pool.shutdown(wait=False, cancel_futures=True)
        out = []
        for addr, fut in futures.items():
            checks = fut.result() if fut.done() and fut.exception() is None else None
            if checks is None:
                out.append({"verdict": "unreachable", "detail": f"{validators[addr]} did not answer in time",
                            "validator": addr})
                continue
            out += [{**c, "validator": addr} for c in checks if isinstance(c, dict) and c.get("order_id") == oid]
        return out

    def _fetch_checks(self, url: str) -> list[Any] | None:
        import httpx

        now = time.monotonic()
        kept = self._checks.get(url)
        if kept is not None and now - kept[0] < 10:
            return kept[1]
        try:
            with httpx.stream("GET", url, timeout=CHECKS_S) as r:
                body = b""
                for part in r.iter_bytes():
                    body += part
                    if len(body) > CHECKS_BYTES:
                        return None
            checks = json.loads(body)
        except Exception:
            return None
        if not isinstance(checks, list):
            return None
        self._checks[url] = (now, checks)
        return checks

    def story(self, oid: int) -> V.OrderStory:
        events = self.index.events(order=oid)
        ends = [e["tx"] for e in events if e["name"] in ("Finalized", "TimedOut", "Overturned", "Undecided",
                                                         "OrderCancelled", "Undelivered")]
        by_tx = V.group_by_tx(self.index.rows(
            f"SELECT * FROM events WHERE tx IN ({', '.join('?' * len(ends))}) ORDER BY id", tuple(ends))) \
            if ends else {}
        return V.order_story(oid, events, by_tx)


def checks_url(endpoint: str) -> str | None:
    """A validator's ``/checks`` URL from the endpoint it registered: its scheme, host and port only."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(endpoint.strip())
        host, port = u.hostname, u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not host or not re.fullmatch(r"[A-Za-z0-9.\-]+|[0-9a-fA-F:]+", host):
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{u.scheme}://{host}{f':{port}' if port else ''}/checks"


def create_app(dep: Deployment, index_path: Path, follow: bool = True) -> FastAPI:
    ex = Explorer(dep, index_path)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["vrc"] = V.vrc
    env.filters["short"] = V.short
    env.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(t)))
    env.globals.update(account=V.account, order=V.order, cid=V.cid, code=V.code, agent=V.agent)
    env.filters["bps"] = L.bps
    env.filters["duration"] = L.duration
    app = FastAPI(title="Veracity explorer", docs_url=None, redoc_url=None)
    app.state.explorer = ex
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.on_event("startup")
    def start() -> None:
        if follow:
            threading.Thread(target=ex.follow, name="explorer-index", daemon=True).start()

    @app.on_event("shutdown")
    def stop() -> None:
        ex.stop()

    def page(name: str, title: str, **values: Any) -> HTMLResponse:
        head = ex.index.head()
        html = env.get_template(name).render(title=title, head=head, error=ex.error, chain_id=dep.chain_id,
                                             **values)
        return HTMLResponse(html)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, **ex.index.head()}

    @app.get("/api/head")
    def api_head() -> dict[str, Any]:
        return ex.index.head()

    listening = [0]  # open /live streams

    @app.get("/live")
    async def live() -> StreamingResponse:
        if listening[0] >= MAX_LIVE:
            raise HTTPException(503, f"{MAX_LIVE} pages already follow the chain live here: reload later")

        async def stream() -> AsyncIterator[str]:
            listening[0] += 1
            try:
                async for part in beats():
                    yield part
            finally:
                listening[0] -= 1

        async def beats() -> AsyncIterator[str]:
            last = None
            for _ in range(600):  # a client reconnects after ten minutes (EventSource does so by itself)
                head = ex.index.head()
                if head != last:
                    yield f"data: {json.dumps(head)}\n\n"
                    last = head
                else:
                    yield ": idle\n\n"
                await asyncio.sleep(1)
        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/", response_class=HTMLResponse)
    def overview() -> HTMLResponse:
        token, registry, market = ex.readers()
        nodes = ex.nodes()
        ctx = ex.context(nodes)
        opened = ex.index.events("OrderOpened", newest=True, limit=20)
        latest = []
        for e in opened:
            oid = int(e["args"]["order_id"])
            latest.append({"event": e, "state": V.order_story(oid, ex.index.events(order=oid), {}).state})
        times = [r["time"] for r in ex.index.rows("SELECT time FROM events WHERE name = 'OrderOpened'")]
        now = int(time.time())
        chain = {"block": ex.index.chain.w3.eth.block_number, "escrow": token.balance_of(market.address),
                 "stake": token.balance_of(registry.address)}  # the Registry holds the nodes' stakes
        return page("overview.html", "Overview", ctx=ctx, latest=latest, chain=chain, nodes=nodes,
                     orders=ex.index.count("OrderOpened"), per_minute=V.per_minute(times, now),
                     slashes=ex.index.count("Slashed", contract="Registry"),
                     recent=[e for e in ex.index.events(newest=True, limit=40) if e["name"] != "Approval"][:25])

    def leaderboard(role: str) -> HTMLResponse:
        _, registry, _ = ex.readers()
        nodes = ex.nodes()
        ranked = sorted(((row, registry.node(addr)) for addr, row in nodes.items() if row.role == role),
                        key=lambda r: (-r[1].reputation, -r[0].jobs, r[0].slashes))
        rows = [{"row": row, "info": info, "models": [ex.models.get("0x" + bytes(m).hex(), "?") for m in info.models]}
                for row, info in ranked]
        return page("nodes.html", role.capitalize() + "s", role=role, rows=rows, ctx=ex.context(nodes))

    @app.get("/providers", response_class=HTMLResponse)
    def providers() -> HTMLResponse:
        return leaderboard("provider")

    @app.get("/validators", response_class=HTMLResponse)
    def validators() -> HTMLResponse:
        return leaderboard("validator")

    @app.get("/address/{address}", response_class=HTMLResponse)
    def address(address: str) -> HTMLResponse:
        if not ADDRESS.fullmatch(address):
            raise HTTPException(404, f"{address} is not an address (0x and 40 hex digits)")
        token, registry, _ = ex.readers()
        nodes = ex.nodes()
        info = registry.node(address)
        return page("address.html", V.short(address.lower()), address=address.lower(), info=info,
                    row=nodes.get(address.lower()), balance=token.balance_of(address),
                    events=ex.index.of_address(address), ctx=ex.context(nodes),
                    models=[ex.models.get("0x" + bytes(m).hex(), "?") for m in info.models])

    @app.get("/order/{oid}", response_class=HTMLResponse)
    def order(oid: int) -> HTMLResponse:
        if not 0 < oid < 2**63:
            raise HTTPException(404, f"there is no order {oid}")
        story = ex.story(oid)
        if story.opened is None and not story.events:
            raise HTTPException(404, f"there is no order {oid} (yet): the index holds orders 1 to "
                                     f"{ex.index.count('OrderOpened')}")
        _, _, market = ex.readers()
        info = market.order(oid)
        program = market.program(oid)
        return page("order.html", f"Order {oid}", story=story, info=info, state=ORDER_STATES.get(info.state),
                    program=program, ctx=ex.context(), verdicts=ex.verdicts(oid))

    @app.get("/leases", response_class=HTMLResponse)
    def leases() -> HTMLResponse:
        posted = ex.index.events("WindowPosted", newest=True, limit=200)
        rows = [{"event": e, "story": ex.story(int(e["args"]["order_id"]))} for e in posted]
        return page("leases.html", "Leases", rows=rows, ctx=ex.context())

    @app.get("/receipt", response_class=HTMLResponse)
    def receipt_form() -> HTMLResponse:
        return page("receipt.html", "Receipt checker", text="", check=None, problem="", live=False)

    @app.post("/receipt", response_class=HTMLResponse)
    async def receipt_check(request: Request) -> HTMLResponse:
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > MAX_FORM:
                raise HTTPException(413, f"a receipt is at most {MAX_FORM // 1024} KiB")
        form = parse_qs(body.decode("utf-8", "replace"))
        receipt = (form.get("receipt") or [""])[0]
        return await asyncio.to_thread(check_receipt, receipt)

    def check_receipt(receipt: str) -> HTMLResponse:
        from veracity.gateway.receipts import read_receipt, verify

        try:
            rec = read_receipt(receipt)
        except ValueError as exc:
            return page("receipt.html", "Receipt checker", text=receipt, check=None, problem=str(exc), live=False)
        with ex.receipts:
            try:
                check = verify(dep, ex.key, rec)
            except Exception as exc:  # a lease that is not there, a provider that does not serve its blobs
                return page("receipt.html", "Receipt checker", text=receipt, check=None, live=False,
                            problem=f"cannot check it: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}")
        return page("receipt.html", "Receipt checker", text=receipt, check=check, problem="", live=False)

    @app.get("/agents", response_class=HTMLResponse)
    def agents() -> HTMLResponse:
        rows = ex.index.events("Registered", "NewFeedback", "ValidationRequest", "ValidationResponse",
                               "PaymentOpened", "SharePaid", "PaymentRefunded", newest=True, limit=300)
        rows = [e for e in rows if e["contract"] != "Registry"]
        return page("agents.html", "Agents", events=rows, ctx=ex.context())

    @app.get("/data", response_class=HTMLResponse)
    def data() -> HTMLResponse:
        events = ex.index.events(contract=D.CONTRACTS)
        try:
            now = int(ex.index.chain.w3.eth.get_block("latest")["timestamp"])  # the chain's clock (a devnet's moves)
        except Exception:
            now = int(time.time())
        return page("data.html", "Data", pools=list(D.pools(events).values()), tasks=list(D.tasks(events).values()),
                    now=now, pooling=bool(getattr(dep, "data_pool", None)),
                    labelling=bool(getattr(dep, "label_tasks", None)), events=events[::-1][:50], ctx=ex.context())

    @app.get("/cid/{text}", response_class=HTMLResponse)
    def cid_page(text: str) -> HTMLResponse:
        from veracity.cid import digest_of

        try:
            digest = "0x" + digest_of(text).hex()
        except Exception:
            raise HTTPException(404, f"{text} is not a CID") from None
        found = ex.index.rows("SELECT * FROM events WHERE args LIKE ? ORDER BY id LIMIT 100", (f"%{digest}%",))
        return page("cid.html", V.short(text, 8), cid_text=text, digest=digest, events=found, ctx=ex.context())

    @app.exception_handler(HTTPException)
    def not_found(request: Request, exc: HTTPException) -> HTMLResponse:
        html = env.get_template("error.html").render(title="Not found" if exc.status_code == 404 else "Refused",
                                                     head=ex.index.head(), error=ex.error,
                                                     chain_id=dep.chain_id, message=exc.detail)
        return HTMLResponse(html, status_code=exc.status_code)

    @app.get("/api/order/{oid}")
    def api_order(oid: int) -> JSONResponse:
        if not 0 < oid < 2**63:
            raise HTTPException(404, f"there is no order {oid}")
        story = ex.story(oid)
        return JSONResponse({"order": oid, "state": story.state, "where": story.where,
                             "rounds": [{"what": r.what, "agree": r.agree, "differ": r.differ, "asked": r.asked}
                                        for r in story.rounds],
                             "events": [{"name": e["name"], "block": e["block"], "args": e["args"]}
                                        for e in story.events]})

    return app
