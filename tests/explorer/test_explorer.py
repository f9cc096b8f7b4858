"""The explorer on a real anvil node, as its own process over HTTP: its index follows the chain's
events and resumes from its cursor after a restart (no event missed or repeated), its pages tell
them in words with links (a data pool's items and scores among them), and bad addresses get a
clear 404."""

import hashlib
import json
import sqlite3

import httpx
import pytest
from browser import explorer
from eth_utils import keccak

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


TOKEN = 10**18


def pool_story(dep, advance):
    """A data pool driven as ``tests/chain/test_datapool.py``'s PoolWorld drives one, lightly (synthetic
    embeddings, no model run): account 1 owns and curates it, account 3 scores; item 0 is on topic,
    item 1 a near-copy of it, item 2 rejected; epoch 0 paid, then one sale. Returns the pool, the
    topic embedding and the two score orders."""
    import numpy as np

    from veracity.chain.client import PROVIDER
    from veracity.chain.pools import commitment, sign_contribution
    from veracity.data import pools as P
    from veracity.exact.trace import tensor_digest
    from veracity.market.bids import Bid, sign_bid

    rng = np.random.default_rng(7)

    def unit(near=None, noise=0.05):
        v = rng.normal(size=P.DIM) if near is None else near / 32768 + noise * rng.normal(size=P.DIM)
        return np.round(v / np.linalg.norm(v) * 32768).astype(np.int32)

    curator, scorer = dep.accounts[1], dep.accounts[3]
    owner = dep.data_pool_client(curator.key)
    topic_vec = unit()
    topic = topic_vec.astype(">i4").tobytes()
    pool = owner.create_pool(hashlib.sha256(b"schema").digest(), topic, 9000, False, 600, 2, 90 * TOKEN, 30 * TOKEN)
    _, _, registry, market = dep.clients(scorer.key)
    registry.register(PROVIDER, 1000 * TOKEN, "cpu", 24, [hashlib.sha256(b"minilm").digest()], TOKEN, "")
    program = (hashlib.sha256(b"program").digest(), 11)
    for who in (dep.accounts[2], scorer, dep.accounts[0]):
        cid = hashlib.sha256(P.contribution_line(f"from {who.address}", 0)).digest()
        owner.commit(pool, commitment(cid, who.address, bytes(32)))
        owner.contribute(pool, who.address, cid, bytes(32), program,
                         sign_contribution(who.key, dep.chain_id, dep.data_pool, pool, cid, who.address, program))
    vec_a = unit(near=topic_vec, noise=0.04)
    blobs, orders = [], []
    for index, vec in enumerate((vec_a, unit(near=vec_a, noise=0.002))):
        oid = owner.order_score(pool, index, 10 * TOKEN)
        owner.accept(sign_bid(Bid(order_id=oid, provider=scorer.address, price=5 * TOKEN, collateral=2 * TOKEN,
                                  expiry=market.chain.now() + 300, run_time=60), scorer.key, dep.chain_id, dep.market))
        market.commit_result(oid, [tensor_digest(vec.reshape(1, P.DIM))], hashlib.sha256(b"trace").digest(), 11)
        blobs.append(P.output_blob(vec))
        orders.append(oid)
    advance(31)  # past the score orders' challenge window
    for oid, blob in zip(orders, blobs):
        owner.deliver(oid, blob)
    for index, blob in enumerate(blobs):
        owner.settle(pool, index, P.embedding(blob), topic, owner.accepted(pool))
    owner.reject(pool, 2, "<b>not a JSON line</b>")
    advance(600)
    owner.pay_epoch(pool, 0)
    dep.data_pool_client(dep.accounts[2].key).buy(pool, 40 * TOKEN, hashlib.sha256(b"dataset").digest())
    return pool, topic, orders


def label_story(dep, advance):
    """A labelling task on the deployment's LabelTasks: accounts 1 and 2 agree, account 3 labels every
    item the other way and is slashed. Returns the task's id and its settlement."""
    from veracity.chain.labels import LabelTasksClient, new_salt

    def client(i):
        chain, token, _, _ = dep.clients(dep.accounts[i].key)
        return LabelTasksClient(chain, dep.label_tasks, token)

    requester = client(0)
    now = requester.chain.now()
    task = requester.post_task(hashlib.sha256(b"items").digest(), 4, 2, 3, 9 * TOKEN, 10 * TOKEN, now + 100, now + 200,
                               7000, 5000)
    labels = {1: [0, 1, 1, 0], 2: [0, 1, 1, 0], 3: [1, 0, 0, 1]}
    salts = {i: new_salt() for i in labels}
    for i in labels:
        client(i).commit_labels(task, labels[i], salts[i])
    advance(101)
    for i in labels:
        client(i).reveal(task, labels[i], salts[i])
    advance(100)
    return task, requester.finalize(task)


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
    pool, topic, scores = pool_story(dep, anvil_advance(dep))
    task = label_story(dep, anvil_advance(dep)) if getattr(dep, "label_tasks", None) else None
    with explorer(dep_file, folder) as url:  # the same index file: it goes on from its cursor
        want = chain_events(dep)
        head = wait_indexed(url, len(want))
        assert head["events"] == len(want)
        assert f"order {more[-1]}" in httpx.get(url).text
        data = httpx.get(url + "data")
        assert data.status_code == 200 and '<a href="/data">Data</a>' in data.text
        page = data.text
        curator = dep.accounts[1].address.lower()
        row = page[page.index('<tr class="pool-row">'):].split("</tr>")[0]  # pool, owner, contributions, accepted...
        assert f"pool {pool}" in row and curator in row and "<td>3</td><td>1</td>" in row and "90 VRC × 2 epochs" in row
        assert "<td>130 VRC: 90 VRC for 1 epoch, 40 VRC from sales</td><td>1 (40 VRC)</td>" in row, row
        items = page.split('<tr class="item-row"')[1:]
        assert len(items) == 3 and dep.accounts[2].address.lower() in items[0]
        assert ">accepted</span>" in items[0] and f'href="/order/{scores[0]}"' in items[0]
        assert ">not accepted</span>" in items[1] and "a near-copy: similarity 0.9" in items[1] \
            and f'href="/order/{scores[1]}"' in items[1]
        assert ">rejected</span>: &lt;b&gt;not a JSON line&lt;/b&gt;" in items[2]
        if task is None:
            assert "Labelling tasks" not in page
        else:  # once the deployment names a LabelTasks contract
            tid, settled = task
            slashed = dep.accounts[3].address.lower()
            row = page[page.index(f'<tr class="task-row" id="task-{tid}">'):].split("</tr>")[0]
            assert ">finalized</span>" in row and "3 of 3 joined, 3 revealed" in row and slashed in row
            assert f"<td>1 ({settled.slashed[dep.accounts[3].address] / TOKEN:g} VRC)</td>" in row, row
            assert f'labeller <a class="addr" href="/address/{slashed}">' in page and "was slashed 5 VRC on" in page
        assert "scored 0 (a near-copy: similarity 0.9" in page and "s data bought by" in page  # the events, in words
        order = httpx.get(url + f"order/{scores[1]}").text  # the score order's page tells what it scored
        assert f"item 1</a> of <a class=\"pool\" href=\"/data#pool-{pool}\">pool {pool}</a> scored 0" in order
    with sqlite3.connect(folder / "explorer.db") as db:  # each event once, in chain order
        rows = db.execute("SELECT block, log_index, name, args FROM events ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(e.block, e.log_index, e.name) for e in want]
    finalized = [json.loads(r[3]) for r in rows if r[2] == "Finalized"]
    assert [f["order_id"] for f in finalized if "order_id" in f] == first + more + scores
    (created,) = [json.loads(r[3]) for r in rows if r[2] == "PoolCreated"]  # its embedding stored as its hash
    assert "topic" not in created and created["topic_keccak"] == "0x" + keccak(topic).hex()


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
