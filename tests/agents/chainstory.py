"""A story on a real devnet, which the chain tool's and the chain analyst's tests read: four
orders, one finalized, one timed out, one overturned in a dispute game, one still open."""

import hashlib

from veracity.chain.anvil import Anvil
from veracity.chain.client import PROVIDER, VALIDATOR
from veracity.chain.devnet import deploy, dev_accounts
from veracity.exact.trace import TraceRecord
from veracity.market.bids import Bid, sign_bid
from veracity.verify.bisection import TraceView
from veracity.workloads.spec import model_id

TOKEN = 10**18
SPEC = hashlib.sha256(b"job spec").digest()
PROGRAM = hashlib.sha256(b"program").digest()
MINILM = model_id("minilm")


class Story:
    """Four orders on a fresh devnet: 1 finalized (provider), 2 timed out (provider2 slashed to the
    client), 3 overturned in a dispute game (provider slashed to the validator), 4 still open."""

    def __init__(self, dep):
        self.dep = dep
        names = ["deployer", "client", "client2", "provider", "provider2", "validator", "stranger"]
        self.acct = {n: dep.accounts[i] for i, n in enumerate(names)}
        self.c = {n: dep.clients(a.key) for n, a in self.acct.items()}
        self.addr = {n: a.address for n, a in self.acct.items()}

    def market(self, who):
        return self.c[who][3]

    def advance(self, seconds):
        w3 = self.c["deployer"][0].w3
        w3.provider.make_request("evm_increaseTime", [seconds])
        w3.provider.make_request("evm_mine", [])

    def now(self):
        return self.c["deployer"][0].now()

    def open(self, who, max_price=50 * TOKEN, deadline_in=600, window=60, length=84):
        return self.market(who).open_order(SPEC, 1, MINILM, max_price, self.now() + deadline_in, window, 500,
                                           PROGRAM, length)

    def accept(self, who, oid, provider, price, collateral):
        bid = Bid(order_id=oid, provider=self.addr[provider], price=price, collateral=collateral,
                  expiry=self.now() + 300, run_time=60)
        self.market(who).accept_bid(sign_bid(bid, self.acct[provider].key, self.dep.chain_id, self.dep.market))

    def play(self):
        self.c["provider"][2].register(PROVIDER, 1000 * TOKEN, "cpu", 24, [MINILM], TOKEN, "http://127.0.0.1:9000")
        self.c["provider2"][2].register(PROVIDER, 500 * TOKEN, "cpu", 16, [MINILM], TOKEN // 2, "")
        self.c["validator"][2].register(VALIDATOR, 200 * TOKEN)
        # order 1: committed and finalized
        self.accept("client", self.open("client"), "provider", 40 * TOKEN, 200 * TOKEN)
        self.out1, self.root1 = hashlib.sha256(b"out").digest(), hashlib.sha256(b"trace").digest()
        self.market("provider").commit_result(1, self.out1, self.root1, 84)
        self.advance(61)
        self.market("stranger").finalize(1)
        # order 2: provider2 misses its deadline; the client reclaims and is paid its collateral
        self.accept("client", self.open("client", deadline_in=120), "provider2", 30 * TOKEN, 100 * TOKEN)
        self.advance(121)
        self.market("client").reclaim(2)
        # order 3: provider commits a wrong trace, the validator challenges and the provider stops answering
        n = 16
        cheat = TraceView([TraceRecord(i, "op", bytes([i, i == 9]) * 16) for i in range(n)])
        honest = TraceView([TraceRecord(i, "op", bytes([i, 0]) * 16) for i in range(n)])
        self.accept("client2", self.open("client2", window=600, length=n), "provider", 40 * TOKEN, 200 * TOKEN)
        self.market("provider").commit_result(3, b"\1" * 32, cheat.root, n)
        chal = self.dep.disputes_client(self.acct["validator"].key)
        chal.challenge(3, honest.root)
        chal.reveal(3, *honest.reveal(chal.game(3).query))
        self.bond = chal.game(3).bond
        self.advance(self.dep.move_time + 1)
        self.dep.disputes_client(self.acct["stranger"].key).timeout(3)
        # order 4: open for bids
        self.open("client", max_price=25 * TOKEN)
        return self


def played():
    """A devnet with the story played on it (a generator: the node stops after the yield)."""
    node = Anvil(accounts=8)
    try:
        accts = dev_accounts(8)
        yield Story(deploy(node.rpc_url, accts[0], accts)).play()
    finally:
        node.stop()
