"""Stateful property test on a real anvil: random sequences of calls by several accounts,
over Token, Registry, Market, Disputes and standing leases.

Providers here are honest (they commit the trace of the program they signed); clients, strangers
and the providers' sybils open, accept, reclaim, challenge with made-up roots, time games out,
post windows, ask for output chunks (served by anyone, or claimed unserved), unbond, withdraw and
pay the fee pool out. After every step: tokens are conserved (balances + escrow + stakes + bonds
+ chunk-request bonds + fee pool + burnt = the initial supply), the contracts hold exactly what
their books say, and every account's wealth (balance + stake + escrow of its live orders) equals
what a model that only knows the legitimate effects of each successful call predicts, so no
account ever gains funds that were not its own and an honest provider never loses to a bogus
challenge (it only ever gains prices and half of a bogus challenger's bond); a provider loses
only by leaving an asked-for chunk unserved, and then half of what it loses is burnt. A rule that
jumps past every bound (deadline, window, move times) then checks that every order reaches a
terminal state.
"""

import hashlib

import numpy as np
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
from veracity.exact.trace import tensor_digest
from veracity.market.bids import Bid, sign_bid, sign_window
from veracity.verify.available import serve_args
from veracity.verify.sampling import bond_to_provider

TOKEN = 10**18
NAMES = ["client", "client2", "provider", "provider2", "stranger"]
PARTY = ["party"] * 4 + NAMES  # "party": the order's own client or provider, so calls often succeed
SPEC = hashlib.sha256(b"spec").digest()
TERMINAL = {"finalized", "refunded", "cancelled", "overturned"}
OUTPUT = [np.arange(8, dtype=np.int32)]  # every committed result's one output tensor (one chunk)
OUT = tensor_digest(OUTPUT[0])



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
            self.supply0 = self.a.stranger.token.total_supply()
            self.burnt = 0
            self.treasury = self.a.stranger.market.treasury()
            self.paid_out = 0  # fees paid to the treasury (the deployer, outside the modelled accounts)
            self.orders: list[int] = []
            self.registered: set[str] = set()
            self.asks: dict[tuple[int, int, int], tuple[str, int]] = {}  # open chunk requests -> (asker, bond)

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

        def disputes(self, who):
            """The Disputes contract as ``who``, on that account's own chain client (one nonce)."""
            from veracity.chain.client import DisputesClient

            actor = self.by[who]
            return DisputesClient(actor.chain, self.a.d.disputes, actor.token)

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
            self.attempt(lambda: self.actor(who, o.provider).market.commit_result(oid, OUT, SPEC, 3), "commit")

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
                    self.attempt(lambda: self.actor(who, o.provider).market.commit_result(oid, OUT, SPEC, 3), "commit")
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
                    and o.state_name == "accepted" and any(o.spec_cid):  # a lease never posted: no fault
                self.expected[self.name_of(o.provider)] -= o.collateral
                self.expected[self.name_of(o.client)] += o.collateral

        @rule(who=st.sampled_from(["client", "client2"]), data=st.data(), sign=st.sampled_from(["provider"] * 3 + ["client"]))
        def lease(self, who, data, sign):
            """A standing lease: accepted, then a window posted (co-signed, or forged by the client)."""
            a = self.a
            oid = self.by[who].market.open_order(bytes(32), 1, SPEC, 20 * TOKEN, a.now() + 600, 60)
            self.orders.append(oid)
            p = self.by[data.draw(st.sampled_from(["provider", "provider2"]))]
            bid = sign_bid(Bid(order_id=oid, provider=p.address, price=20 * TOKEN, collateral=5 * TOKEN,
                               expiry=a.now() + 300, run_time=60), p.key, a.d.chain_id, a.d.market)
            if not self.attempt(lambda: self.by[who].market.accept_bid(bid), "accept"):
                return
            signer = p if sign == "provider" else self.by[who]
            sig = sign_window(oid, SPEC, SPEC, 3, signer.key, a.d.chain_id, a.d.market)
            self.attempt(lambda: self.by[who].market.post_window(oid, SPEC, SPEC, 3, sig),
                         "window" if sign == "provider" else None)

        def committed_order(self, data):
            """A committed result to challenge: one of the orders, or a new job driven to its commit."""
            m = self.a.client.market
            now = self.a.now()
            live = [oid for oid in self.orders if (o := m.order(oid)).state_name == "committed"
                    and now < o.committed_at + o.challenge_window]  # still open to challenges and asks
            if live:
                return data.draw(st.sampled_from(live))
            a, p = self.a, self.by[data.draw(st.sampled_from(["provider", "provider2"]))]
            oid = a.client.market.open_order(SPEC, 1, SPEC, 50 * TOKEN, a.now() + 600, 60, 0, SPEC, 3)
            self.orders.append(oid)
            bid = sign_bid(Bid(order_id=oid, provider=p.address, price=50 * TOKEN, collateral=10 * TOKEN,
                               expiry=a.now() + 300, run_time=60), p.key, a.d.chain_id, a.d.market)
            if self.attempt(lambda: a.client.market.accept_bid(bid), "accept"):
                self.attempt(lambda: p.market.commit_result(oid, OUT, SPEC, 3), "commit")
            return oid

        @rule(data=st.data(), who=st.sampled_from(["client", "client2", "stranger", "provider", "provider2"]),
              root=st.sampled_from([b"\x07" * 32, b"\x08" * 32]))
        def challenge(self, data, who, root):
            """A bogus challenge (a made-up root: the client's or the provider's sybil, or a rival)."""
            oid = self.committed_order(data)
            disputes = self.disputes(who)
            bond = disputes.bond_for(oid)
            if self.attempt(lambda: disputes.challenge(oid, root), "challenge"):
                self.expected[who] -= bond
                if data.draw(st.booleans()):  # nobody moves: anyone times the game out
                    self.dispute_timeout(data, "stranger", True, oid)

        @precondition(lambda self: self.orders)
        @rule(data=st.data(), who=st.sampled_from(NAMES), wait=st.booleans())
        def dispute_timeout(self, data, who, wait, oid=None):
            oid = oid or data.draw(st.sampled_from(self.orders))
            disputes = self.disputes(who)
            g = disputes.game(oid)
            if wait:
                self.a.advance(self.a.d.move_time + 1)
            if self.attempt(lambda: disputes.timeout(oid), "dispute_timeout"):
                self.settled_game(oid, g)

        def settled_game(self, oid, g):
            """Nobody moved: the challenger missed its move, so the honest provider wins the bond."""
            o = self.a.client.market.order(oid)
            assert o.state_name == "committed", "an honest provider lost a bogus challenge"
            self.expected[self.name_of(o.provider)] += bond_to_provider(g.bond)
            self.burnt += g.bond - bond_to_provider(g.bond)

        def outputs(self, who):
            return self.disputes(who).outputs()

        @rule(data=st.data(), who=st.sampled_from(NAMES), output=st.sampled_from([0, 0, 1]),
              chunk=st.sampled_from([0, 0, 1]), then=st.sampled_from(["claim", "serve", "serve", "none"]))
        def ask_chunk(self, data, who, output, chunk, then):
            """Ask for an output chunk (one that exists, or none: a second output or chunk); then,
            often, the provider serves it, or nobody does and it is claimed past its deadline."""
            oid = self.committed_order(data)
            faults = self.outputs(who)
            bond = faults.request_bond(oid)
            if self.attempt(lambda: faults.request_chunk(oid, output, chunk), "ask_chunk"):
                self.expected[who] -= bond
                self.asks[(oid, output, chunk)] = (who, bond)
                if then == "claim":
                    self.a.advance(self.a.d.move_time + 1)
                    self.claim((oid, output, chunk), "stranger")
                elif then == "serve":
                    self.serve(data, "party", (oid, output, chunk))

        @precondition(lambda self: self.asks)
        @rule(data=st.data(), who=st.sampled_from(NAMES))
        def serve_chunk(self, data, who):
            self.serve(data, who, data.draw(st.sampled_from(sorted(self.asks))))

        def serve(self, data, who, key):
            """Anyone serves an asked chunk (or shows there is none) from the output it knows
            ("party": the order's provider)."""
            oid, output, chunk = key
            provider = self.name_of(self.a.client.market.order(oid).provider)
            who = provider if who == "party" else who
            if self.attempt(lambda: self.outputs(who).serve_chunk(oid, output, chunk, serve_args(OUTPUT, output, chunk)),
                            "serve_chunk"):
                self.expected[provider] += self.asks.pop(key)[1]  # the provider's, whoever serves

        @precondition(lambda self: self.asks)
        @rule(data=st.data(), who=st.sampled_from(NAMES), wait=st.booleans())
        def claim_chunk(self, data, who, wait):
            if wait:
                self.a.advance(self.a.d.move_time + 1)
            self.claim(data.draw(st.sampled_from(sorted(self.asks))), who)

        def claim(self, key, who):
            """Settle an unserved request: its provider loses (half of it burnt, half to the
            asker) if the result was still committed; the asker's bond comes back either way."""
            oid = key[0]
            o = self.a.client.market.order(oid)
            asker, bond = self.asks[key]
            g = self.disputes("stranger").game(oid)  # a game under way ends, its bond returned
            refund = g.bond if o.state_name == "committed" and g.stage_name not in ("none", "settled") else 0
            before = self.all_wealth()
            if not self.attempt(lambda: self.outputs(who).claim_unserved(*key), "claim_chunk"):
                return
            del self.asks[key]
            after = self.all_wealth()
            self.expected[asker] += bond
            if o.state_name == "committed":
                provider = self.name_of(o.provider)
                loss = before[provider] - after[provider]
                if refund:
                    self.expected[self.name_of(g.challenger)] += refund
                share = after[asker] - before[asker] - bond - (refund if refund and self.name_of(g.challenger) == asker else 0)
                assert loss > 0 and abs((loss - share) - loss // 2) <= 2, (loss, share)  # half burnt
                self.expected[provider] -= loss
                self.expected[asker] += share
                self.burnt += loss - share
                Market.successes["withheld"] = Market.successes.get("withheld", 0) + 1

        @rule(who=st.sampled_from(NAMES))
        def pay_fees(self, who):
            """The fee pool goes to the treasury (the deployer, outside the modelled accounts)."""
            pool = self.a.stranger.market.fee_pool()
            if self.attempt(lambda: self.by[who].market.pay_fees(), "pay_fees"):
                self.paid_out += pool

        @precondition(lambda self: self.orders)
        @rule()
        def everything_ends(self):
            """Past every bound (a week's deadline, a day's window, a game's moves), anyone can end
            every order: nothing is frozen for ever."""
            a = self.a
            a.advance(7 * 86400 + 1)
            disputes = self.disputes("stranger")
            for oid in self.orders:
                g = disputes.game(oid)
                if g.stage_name not in ("none", "settled"):
                    assert self.attempt(lambda: disputes.timeout(oid), "dispute_timeout")
                    self.settled_game(oid, g)
            a.advance(86400 + 1)  # a won game restarts the challenge window (at most a day)
            for key in sorted(self.asks):  # chunks asked for and never served: claimed
                self.claim(key, "stranger")
            assert not self.asks
            for oid in self.orders:
                o = a.client.market.order(oid)
                if o.state_name == "committed":
                    self.finalize_order(o, "stranger")
                elif o.state_name in ("open", "accepted"):
                    self.reclaim_order(o, "party")
                assert a.client.market.order(oid).state_name in TERMINAL, (oid, a.client.market.order(oid))
            if a.stranger.market.fee_pool():
                self.pay_fees("stranger")
            Market.successes["ended"] = Market.successes.get("ended", 0) + 1

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
                self.burnt -= amount * TOKEN  # minted (devnet only)

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
            bonds = tok.balance_of(a.d.disputes)
            faults = self.outputs("stranger")
            asked = tok.balance_of(faults.address)
            assert held + market_bal + registry_bal + bonds + asked == tok.total_supply()
            assert asked == sum(bond for _, bond in self.asks.values())
            assert tok.total_supply() == self.supply0 - self.burnt  # burnt only by the rules
            assert market_bal == m.escrow_total() + m.fee_pool()
            assert registry_bal == r.total_stake()
            disputes = self.disputes("stranger")
            games = [disputes.game(oid) for oid in self.orders]
            assert bonds == sum(g.bond for g in games if g.stage_name not in ("none", "settled"))

        @invariant()
        def nobody_takes_what_is_not_theirs(self):
            assert self.all_wealth() == self.expected

    return Market


def test_random_call_sequences_conserve_tokens(machine_cls):
    from hypothesis.stateful import run_state_machine_as_test

    # derandomized, so CI runs the same 16 sequences every time: random draws of 10 sometimes
    # reached no successful commit or finalize, and a check that skips a path tests nothing there
    run_state_machine_as_test(machine_cls, settings=settings(
        max_examples=12, stateful_step_count=25, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
    # the sequences must reach every settlement path, or the invariants were never tested there
    print("successful calls:", machine_cls.successes)
    for path in ("accept", "commit", "finalize", "timeout", "window", "challenge", "dispute_timeout", "pay_fees",
                 "ask_chunk", "serve_chunk", "claim_chunk", "withheld", "ended"):
        assert machine_cls.successes.get(path, 0) > 0, f"no sequence reached a successful {path}"
