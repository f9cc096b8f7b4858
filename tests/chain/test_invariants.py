"""Stateful property test on a real anvil: random sequences of calls by several accounts.

After every step: tokens are conserved (balances + escrow + stakes + fee pool = supply), the
contracts hold exactly what their books say, and every account's wealth (balance + stake +
escrow of its live orders) equals what a model that only knows the legitimate effects of each
successful call predicts, so no account ever gains funds that were not its own.
"""

import hashlib

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from veracity.chain.client import PROVIDER
from veracity.errors import ChainError
from veracity.market.bids import Bid, sign_bid

TOKEN = 10**18
NAMES = ["client", "client2", "provider", "provider2", "stranger"]
PARTY = ["party"] * 4 + NAMES  # "party": the order's own client or provider, so calls often succeed
SPEC = hashlib.sha256(b"spec").digest()



@pytest.fixture(scope="module")
def machine_cls(devnet, actors_cls):
    Actors = actors_cls

    class Market(RuleBasedStateMachine):
        successes: dict[str, int] = {}

        def __init__(self):
            super().__init__()
            self.a = Actors(devnet)
            self.snap = self.a.rpc("evm_snapshot")
            self.by = {n: getattr(self.a, n) for n in NAMES}
            self.expected = self.all_wealth()
            self.orders: list[int] = []
            self.registered: set[str] = set()

        def teardown(self):
            self.a.rpc("evm_revert", [self.snap])

        # model helpers ------------------------------------------------------------------
        def wealth(self, name):
            return self.all_wealth()[name]

        def all_wealth(self):
            """balance + stake + escrow of live orders, per account (one pass over the orders)."""
            m, r, tok = self.a.stranger.market, self.a.stranger.registry, self.a.stranger.token
            out = {n: tok.balance_of(self.by[n].address) + r.node(self.by[n].address).stake for n in NAMES}
            names = {self.by[n].address: n for n in NAMES}
            for oid in range(1, m.fn.order_count().call() + 1):
                o = m.order(oid)
                if o.client in names:
                    out[names[o.client]] += {"open": o.max_price, "accepted": o.price,
                                             "committed": o.price}.get(o.state_name, 0)
            return out

        def attempt(self, fn, label=None):
            try:
                fn()
            except ChainError:
                return False  # a refused call must change nothing; the invariants check that
            if label:
                Market.successes[label] = Market.successes.get(label, 0) + 1
            return True

        def actor(self, who, party_address):
            return self.by[self.name_of(party_address)] if who == "party" else self.by[who]

        @initialize(stake1=st.integers(100, 3000), stake2=st.integers(100, 3000))
        def providers_register(self, stake1, stake2):
            self.by["provider"].registry.register(PROVIDER, stake1 * TOKEN)
            self.by["provider2"].registry.register(PROVIDER, stake2 * TOKEN)

        # rules ----------------------------------------------------------------------------
        @rule(who=st.sampled_from(["provider", "provider2"]), stake=st.integers(50, 3000))
        def register(self, who, stake):
            self.attempt(lambda: self.by[who].registry.register(PROVIDER, stake * TOKEN, endpoint="http://x"))

        @rule(who=st.sampled_from(["client", "client2", "client", "client2", "stranger"]),
              max_price=st.integers(0, 500), deadline_in=st.integers(-10, 900),
              window=st.integers(0, 300))
        def open_order(self, who, max_price, deadline_in, window):
            a = self.a

            try:
                oid = self.by[who].market.open_order(SPEC, 1, SPEC, max_price * TOKEN, a.now() + deadline_in, window,
                                                     0, SPEC, 3)
                self.orders.append(oid)
            except ChainError:
                pass

        @precondition(lambda self: self.orders)
        @rule(data=st.data(), who=st.sampled_from(PARTY), bidder=st.sampled_from(["provider", "provider2", "stranger"]),
              price_pct=st.integers(0, 130), collateral=st.integers(0, 1500), expiry_in=st.integers(-5, 600),
              forge=st.sampled_from([False] * 5 + [True]))
        def accept(self, data, who, bidder, price_pct, collateral, expiry_in, forge):
            oid = data.draw(st.sampled_from(self.orders))
            a, p = self.a, self.by[bidder]
            o = a.client.market.order(oid)
            bid = Bid(order_id=oid, provider=p.address, price=o.max_price * price_pct // 100,
                      collateral=collateral * TOKEN, expiry=max(0, a.now() + expiry_in), run_time=60)
            bid = sign_bid(bid, (a.stranger if forge else p).key, a.d.chain_id, a.d.market)
            self.attempt(lambda: self.actor(who, o.client).market.accept_bid(bid), "accept")

        @precondition(lambda self: self.orders)
        @rule(data=st.data(), who=st.sampled_from(PARTY))
        def commit(self, data, who):
            oid = data.draw(st.sampled_from(self.orders))
            o = self.a.client.market.order(oid)
            if o.provider == "0x" + "0" * 40:
                return
            self.attempt(lambda: self.actor(who, o.provider).market.commit_result(oid, SPEC, SPEC, 3), "commit")

        @precondition(lambda self: self.orders)
        @rule(data=st.data(), who=st.sampled_from(NAMES))
        def finalize(self, data, who):
            self.finalize_order(self.a.client.market.order(data.draw(st.sampled_from(self.orders))), who)

        @precondition(lambda self: self.orders)
        @rule(data=st.data(), who=st.sampled_from(PARTY))
        def reclaim(self, data, who):
            self.reclaim_order(self.a.client.market.order(data.draw(st.sampled_from(self.orders))), who)

        def step_order(self, data, oid, honest):
            """Move an order one step along its life, honestly or with a bad argument."""
            a = self.a
            o = a.client.market.order(oid)
            if o.state_name == "open":
                p = self.by[data.draw(st.sampled_from(["provider", "provider2"]))]
                price = o.max_price if honest else o.max_price + TOKEN
                bid = sign_bid(Bid(order_id=oid, provider=p.address, price=price, collateral=10 * TOKEN,
                                   expiry=a.now() + 300, run_time=60), p.key, a.d.chain_id, a.d.market)
                self.attempt(lambda: self.actor("party", o.client).market.accept_bid(bid), "accept")
            elif o.state_name == "accepted":
                if data.draw(st.booleans()):
                    who = "party" if honest else "stranger"
                    self.attempt(lambda: self.actor(who, o.provider).market.commit_result(oid, SPEC, SPEC, 3), "commit")
                else:
                    a.advance(max(0, o.deadline - a.now()) + 1)
                    self.reclaim_order(o, "party" if honest else "provider")
            elif o.state_name == "committed":
                if honest:
                    a.advance(o.challenge_window + 1)
                self.finalize_order(o, "stranger")

        @precondition(lambda self: self.orders)
        @rule(data=st.data(), honesty=st.lists(st.sampled_from([True] * 4 + [False]), min_size=1, max_size=3))
        def progress(self, data, honesty):
            """Drive one order through up to three steps of its life (often to settlement)."""
            oid = data.draw(st.sampled_from(self.orders))
            for honest in honesty:
                self.step_order(data, oid, honest)

        @rule(who=st.sampled_from(["client", "client2"]), data=st.data(),
              honesty=st.lists(st.sampled_from([True] * 4 + [False]), min_size=1, max_size=3))
        def new_job(self, who, data, honesty):
            """Open a well-formed order and drive it."""
            a = self.a
            oid = self.by[who].market.open_order(SPEC, 1, SPEC, 50 * TOKEN, a.now() + 600, 60, 0, SPEC, 3)
            self.orders.append(oid)
            for honest in honesty:
                self.step_order(data, oid, honest)

        def finalize_order(self, o, who):
            if self.attempt(lambda: self.by[who].market.finalize(o.order_id), "finalize"):
                fee = o.price * devnet.fee_bps // 10_000
                self.expected[self.name_of(o.client)] -= o.price
                self.expected[self.name_of(o.provider)] += o.price - fee

        def reclaim_order(self, o, who):
            label = "timeout" if o.state_name == "accepted" else "cancel"
            if self.attempt(lambda: self.actor(who, o.client).market.reclaim(o.order_id), label) \
                    and o.state_name == "accepted":
                self.expected[self.name_of(o.provider)] -= o.collateral
                self.expected[self.name_of(o.client)] += o.collateral

        @rule(who=st.sampled_from(NAMES), amount=st.integers(0, 2000))
        def unbond(self, who, amount):
            self.attempt(lambda: self.by[who].registry.request_unbond(amount * TOKEN))

        @rule(who=st.sampled_from(NAMES))
        def withdraw(self, who):
            self.attempt(lambda: self.by[who].registry.withdraw())

        @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES), amount=st.integers(0, 1000))
        def transfer(self, src, dst, amount):
            if self.attempt(lambda: self.by[src].token.transfer(self.by[dst].address, amount * TOKEN)):
                self.expected[src] -= amount * TOKEN
                self.expected[dst] += amount * TOKEN

        @rule(who=st.sampled_from(NAMES), amount=st.integers(0, 100))
        def faucet(self, who, amount):
            if self.attempt(lambda: self.by[who].token.faucet(amount * TOKEN)):
                self.expected[who] += amount * TOKEN

        @rule(seconds=st.sampled_from([1, 30, 120, 400, 3700]))
        def advance(self, seconds):
            self.a.advance(seconds)

        def name_of(self, address):
            return next(n for n in NAMES if self.by[n].address == address)

        # invariants -----------------------------------------------------------------------
        @invariant()
        def tokens_are_conserved(self):
            a = self.a
            tok, m, r = a.stranger.token, a.stranger.market, a.stranger.registry
            held = sum(tok.balance_of(acct.address) for acct in devnet.accounts)
            market_bal, registry_bal = tok.balance_of(m.address), tok.balance_of(r.address)
            assert held + market_bal + registry_bal == tok.total_supply()
            assert market_bal == m.escrow_total() + m.fee_pool()
            assert registry_bal == r.total_stake()

        @invariant()
        def nobody_takes_what_is_not_theirs(self):
            assert self.all_wealth() == self.expected

    return Market


def test_random_call_sequences_conserve_tokens(machine_cls):
    from hypothesis.stateful import run_state_machine_as_test

    # derandomized, so CI runs the same 20 sequences every time: random draws of 10 sometimes
    # reached no successful commit or finalize, and a check that skips a path tests nothing there
    run_state_machine_as_test(machine_cls, settings=settings(
        max_examples=20, stateful_step_count=25, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
    # the sequences must reach every settlement path, or the invariants were never tested there
    print("successful calls:", machine_cls.successes)
    for path in ("accept", "commit", "finalize", "timeout"):
        assert machine_cls.successes.get(path, 0) > 0, f"no sequence reached a successful {path}"
