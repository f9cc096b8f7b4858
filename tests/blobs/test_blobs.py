"""The blob store over real HTTP on 127.0.0.1: CIDs, integrity checks, limits, lying peers."""

import hashlib
import subprocess
import sys
import time

import httpx
import pytest

from veracity.blobs.store import BlobError, BlobStore
from veracity.blobs.transfer import fetch, fetch_any, push, push_all
from veracity.chain.anvil import free_port
from veracity.cid import cid_from_digest, cid_of, digest_of
from veracity.errors import InputError


def serve(args, port):
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture
def node(tmp_path):
    port = free_port()
    proc, url = serve(["-m", "veracity.blobs.server", "--root", str(tmp_path / "blobs"), "--port", str(port),
                       "--max-bytes", str(1 << 20)], port)
    yield url, tmp_path / "blobs"
    proc.terminate()
    proc.wait(5)


def test_cid_is_the_ipfs_raw_cidv1():
    assert cid_of(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    data = b"veracity"
    assert digest_of(cid_of(data)) == hashlib.sha256(data).digest()
    assert cid_from_digest(hashlib.sha256(data).digest()) == cid_of(data)
    for bad in ["", "Qm123", "b" + "a" * 58, cid_of(data)[:-1]]:
        with pytest.raises(InputError):
            digest_of(bad)


def test_push_and_fetch_over_http(node):
    url, _ = node
    data = b"inputs of a job" * 1000
    cid = push(url, data)
    assert cid == cid_of(data)
    assert fetch(url, cid) == data


def test_missing_blob_and_bad_cid_are_clear_errors_and_the_server_keeps_serving(node):
    url, _ = node
    with pytest.raises(BlobError, match="does not have blob"):
        fetch(url, cid_of(b"never stored"))
    with pytest.raises(InputError, match="not a CIDv1"):
        fetch(url, "not-a-cid")
    assert httpx.get(url + "/blobs/not-a-cid").status_code == 400
    assert httpx.get(url + "/health").json() == {"status": "ok"}


def test_too_large_blobs_are_refused(node):
    url, _ = node
    with pytest.raises(BlobError, match="exceeds"):
        push(url, b"x" * ((1 << 20) + 1))
    cid = push(url, b"y" * 5000)
    with pytest.raises(BlobError, match="larger than the 1000-byte limit"):
        fetch(url, cid, max_bytes=1000)


def test_corruption_on_disk_is_never_served(node):
    url, root = node
    cid = push(url, b"the real bytes")
    (root / cid).write_bytes(b"rotten bytes")
    with pytest.raises(BlobError, match="answered 500"):
        fetch(url, cid)
    with pytest.raises(BlobError, match="corrupted on disk"):
        BlobStore(root).get(cid)
    assert push(url, b"the real bytes") == cid  # the same bytes again heal the damaged copy
    assert fetch(url, cid) == b"the real bytes" and BlobStore(root).get(cid) == b"the real bytes"


LYING_PEER = """
import sys
from fastapi import FastAPI, Response
import uvicorn
app = FastAPI()
@app.get("/blobs/{cid}")
def lie(cid: str):
    return Response(b"not what you asked for", media_type="application/octet-stream")
@app.get("/health")
def health():
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_a_peer_sending_other_bytes_is_caught(tmp_path):
    script = tmp_path / "liar.py"
    script.write_text(LYING_PEER)
    port = free_port()
    proc, url = serve([str(script), str(port)], port)
    try:
        with pytest.raises(BlobError, match="CID mismatch"):
            fetch(url, cid_of(b"what I asked for"))
    finally:
        proc.terminate()
        proc.wait(5)


def test_unreachable_peer_is_a_clear_error():
    with pytest.raises(BlobError, match="cannot fetch"):
        fetch(f"http://127.0.0.1:{free_port()}", cid_of(b"x"), timeout=2)


def test_a_blob_one_holder_withholds_or_forges_is_read_from_another(node, tmp_path):
    """A job's blobs are pushed to every node that takes them; a reader takes each from the first
    holder that sends the right bytes and keeps it, and says why each failed when none does."""
    url, _ = node
    script = tmp_path / "liar.py"
    script.write_text(LYING_PEER)
    port = free_port()
    proc, liar = serve([str(script), str(port)], port)
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        data = b"a job's inputs"
        assert push_all({"dead": dead, "node": url}, [data, None], timeout=2).keys() == {"dead"}
        mine = BlobStore(tmp_path / "mine")
        assert fetch_any(cid_of(data), [dead, liar, url], mine, timeout=2) == data
        assert mine.get(cid_of(data)) == data  # kept: the next read asks nobody
        with pytest.raises(BlobError, match="no node serves blob .*cannot fetch.*CID mismatch.*does not have"):
            fetch_any(cid_of(b"held by nobody"), [dead, liar, url], mine, timeout=2)
    finally:
        proc.terminate()
        proc.wait(5)
