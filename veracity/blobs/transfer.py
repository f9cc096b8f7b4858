"""Moving blobs between nodes over HTTP, with every byte checked.

``fetch`` downloads from a peer and refuses bytes whose hash is not the CID asked for, or more
bytes than the caller allows. A job's blobs live on every node they were pushed to
(``push_all``), so ``fetch_any`` reads them from whichever holder serves them: one provider
withholding a blob does not make it unavailable.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

import httpx

from veracity.blobs.store import DEFAULT_MAX_BYTES, BlobError, BlobNotFound, BlobStore
from veracity.cid import cid_of, digest_of
from veracity.errors import VeracityError


def fetch(base_url: str, cid: str, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = 30) -> bytes:
    """GET ``{base_url}/blobs/{cid}``, streaming at most ``max_bytes``, and check the hash."""
    want = digest_of(cid)
    url = f"{base_url.rstrip('/')}/blobs/{cid}"
    h, chunks, size = hashlib.sha256(), [], 0
    try:
        with httpx.stream("GET", url, timeout=timeout) as resp:
            if resp.status_code == 404:
                raise BlobNotFound(f"{base_url} does not have blob {cid}")
            if resp.status_code != 200:
                resp.read()
                raise BlobError(f"{base_url} answered {resp.status_code} for blob {cid}: {_detail(resp)}")
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise BlobError(f"blob {cid} from {base_url} is larger than the {max_bytes}-byte limit")
                h.update(chunk)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise BlobError(f"cannot fetch blob {cid} from {base_url}: {exc}") from None
    if h.digest() != want:
        raise BlobError(f"CID mismatch: {base_url} sent bytes that hash to {cid_of(b''.join(chunks))}, not {cid}")
    return b"".join(chunks)


def _detail(resp: httpx.Response) -> str:
    """The reason a node gave for an error answer (FastAPI's ``detail``), or its raw text."""
    try:
        return str(resp.json().get("detail", resp.text))
    except ValueError:
        return resp.text[:200]


def push(base_url: str, data: bytes, timeout: float = 30) -> str:
    """PUT a blob to a node's store; returns its CID (checked against the bytes sent)."""
    try:
        resp = httpx.put(f"{base_url.rstrip('/')}/blobs", content=data, timeout=timeout)
    except httpx.HTTPError as exc:
        raise BlobError(f"cannot reach {base_url} to store a blob: {exc}") from None
    if resp.status_code != 200:
        raise BlobError(f"{base_url} refused the blob: {_detail(resp)}")
    cid = resp.json()["cid"]
    if cid != cid_of(data):
        raise BlobError(f"{base_url} answered CID {cid} for bytes whose CID is {cid_of(data)}")
    return cid


def push_all(nodes: dict[str, str], blobs: Iterable[bytes | None], timeout: float = 30) -> dict[str, str]:
    """Push every blob (None: skipped) to every node (name -> endpoint) at once; returns the nodes
    that do not hold them all now, each with why (the others do)."""
    data = [b for b in blobs if b is not None]

    def one(url: str) -> str | None:
        try:
            for blob in data:
                push(url, blob, timeout)
        except VeracityError as exc:  # a BlobError, or an endpoint that is not a URL
            return str(exc)
        return None

    if not nodes:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        answers = dict(zip(nodes, pool.map(one, nodes.values())))
    return {name: why for name, why in answers.items() if why is not None}


def fetch_any(cid: str, urls: Iterable[str], store: BlobStore | None = None, timeout: float = 30) -> bytes:
    """Blob ``cid`` from ``store`` when it holds it, else from the first of ``urls`` that serves it
    (every byte checked against the CID), and then kept in ``store``. The BlobError when no holder
    serves it says why each could not."""
    if store is not None and store.has(cid):
        return store.get(cid)
    reasons: list[str] = []
    max_bytes = store.max_bytes if store is not None else DEFAULT_MAX_BYTES
    for url in dict.fromkeys(urls):  # each holder once, in the order given
        try:
            data = fetch(url, cid, max_bytes, timeout)
        except VeracityError as exc:
            reasons.append(str(exc))
            continue
        if store is not None:
            store.put(data)
        return data
    raise BlobError(f"no node serves blob {cid}: " + ("; ".join(reasons) or "no node to ask"))


def fetch_trace(url: str, order_id: int, committed_root: bytes) -> list[Any]:
    """The trace records a provider serves for an order (``GET /traces/{order}``), checked
    against the trace root it committed; a VeracityError says what is wrong."""
    from veracity.exact.trace import decode_records, records_root

    try:
        resp = httpx.get(f"{url.rstrip('/')}/traces/{order_id}", timeout=10)
        if resp.status_code != 200:
            raise BlobError(f"the provider serves no trace for order {order_id} ({resp.status_code})")
        records = decode_records(fetch(url, resp.json()["trace_cid"]))
    except BlobError as exc:
        raise BlobError(f"the provider's trace could not be read: {exc}") from None
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise BlobError(f"the provider's trace could not be read ({exc})") from None
    if records_root(records) != committed_root:
        raise BlobError("the trace the provider serves is not the one it committed")
    return records
