"""The explorer on a real anvil node, as its own process over HTTP: its index follows the chain's
events and resumes from its cursor after a restart (no event missed or repeated), its pages tell
them in words with links, and bad addresses get a clear 404."""

import json
import sqlite3

import httpx
import pytest
from browser import explorer

from veracity.chain.anvil import Anvil
from veracity.chain.devnet import deploy, dev_accounts
from veracity.chain.events import EventStream
from veracity.explorer.index import CONTRACTS
from veracity.sim.traffic import anvil_advance, settled_orders


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    node = Anvil(accounts=4)
    accounts = dev_accounts(4)
    folder = tmp_path_factory.mktemp("explorer")
    try:
        dep = deploy(node.rpc_url, accounts[0], accounts)
        dep_file = folder / "deployment.json"
        dep.write(dep_file)
        yield dep, dep_file, folder
    finally:
        node.stop()


def chain_events(dep):
    """Every event of the indexed contracts on chain, but allowances (the index leaves those out)."""
    watched = {name: getattr(dep, f) for f, name in CONTRACTS if getattr(dep, f, None)}
    return [e for e in EventStream(dep.clients(dep.deployer.key)[0], watched, 0).poll() if e.name != "Approval"]


def wait_indexed(url, n, timeout=30):
    import time

    end = time.monotonic() + timeout
    while (got := httpx.get(url + "api/head", timeout=5).json())["events"] < n:
        assert time.monotonic() < end, got
        time.sleep(0.2)
    return got


def test_the_index_follows_the_chain_and_resumes_after_a_restart(chain):
    dep, dep_file, folder = chain
    client, provider = dep.accounts[1].key, dep.accounts[2].key
    first = settled_orders(dep, client, provider, 3, advance=anvil_advance(dep))
    with explorer(dep_file, folder) as url:
        wait_indexed(url, len(chain_events(dep)))
        page = httpx.get(url + f"order/{first[0]}").text
        assert "finalized" in page and f"settled: <a class=\"addr\" href=\"/address/{dep.accounts[2].address.lower()}\"" \
            in page and "paid 0.95 VRC (fee 0.05 VRC)" in page, page  # a 5% fee
        board = httpx.get(url + "providers").text
        assert dep.accounts[2].address.lower() in board
    more = settled_orders(dep, client, provider, 2, advance=anvil_advance(dep))  # while the explorer is down
    with explorer(dep_file, folder) as url:  # the same index file: it goes on from its cursor
        want = chain_events(dep)
        head = wait_indexed(url, len(want))
        assert head["events"] == len(want)
        assert f"order {more[-1]}" in httpx.get(url).text
    with sqlite3.connect(folder / "explorer.db") as db:  # each event once, in chain order
        rows = db.execute("SELECT block, log_index, name, args FROM events ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(e.block, e.log_index, e.name) for e in want]
    finalized = [json.loads(r[3]) for r in rows if r[2] == "Finalized"]
    assert [f["order_id"] for f in finalized] == first + more


def test_bad_addresses_get_a_clear_not_found(chain):
    dep, dep_file, folder = chain
    (folder / "again").mkdir()
    with explorer(dep_file, folder / "again") as url:
        for path, said in [("order/999999", "there is no order 999999 (yet)"), ("address/0x12", "is not an address"),
                           ("address/0x" + "zz" * 20, "is not an address"), ("cid/nonsense", "is not a CID"),
                           ("order/0", "there is no order 0")]:
            r = httpx.get(url + path)
            assert r.status_code == 404 and said in r.text, (path, r.status_code, r.text[-500:])
        r = httpx.post(url + "receipt", content=b"receipt=%7B%22lease%22%3A+1%7D",
                       headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200 and "not a Veracity receipt" in r.text
        with httpx.stream("GET", url + "live", timeout=10) as live:  # the live feed says the indexed head
            line = next(x for x in live.iter_lines() if x.startswith("data: "))
        assert {"cursor", "events", "block"} <= set(json.loads(line[6:]))
