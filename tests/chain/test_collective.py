"""Payments for a collective's run on a real anvil node (``contracts/Collective.vy``): a client
escrows the price of a run, and it is split among the agents that did the work by the split the
run's validator attested, paid to each agent's wallet or owner; what the client, a member, the
collective's owner and a stranger can and cannot do about it."""

import pytest
from test_agents import consent, fresh_wallet

from veracity.chain.agents import AgentRegistryClient, CollectiveClient, ValidationClient, split_hash
from veracity.chain.client import TokenClient
from veracity.errors import ChainError

TOKEN = 10**18
RUN = bytes.fromhex("11" * 32)  # the run record's keccak-256: the validation request's hash


class Collective:
    """A collective (the provider's agent) with two members (provider2's and client2's agents; the
    second paid to a wallet it proved), its run validated by the validator."""

    def __init__(self, actors):
        self.a = actors
        d = actors.d

        def reg(role):
            return AgentRegistryClient(getattr(actors, role).chain, d.agent_registry)

        self.lead = reg("provider").register("https://lead.example/card")
        self.writer = reg("provider2").register("https://writer.example/card")
        self.researcher = reg("client2").register("https://researcher.example/card")
        self.wallet, key = fresh_wallet()
        deadline, sig = consent(actors, self.researcher, key)
        reg("client2").set_wallet(self.researcher, self.wallet, deadline, sig)
        self.val = {r: ValidationClient(getattr(actors, r).chain, d.validation) for r in ("provider", "validator")}
        self.val["provider"].request(actors.validator.address, self.lead, "https://lead.example/runs/r.jsonl", RUN)
        self.ids = sorted([self.lead, self.writer, self.researcher])
        self.work = {self.lead: 1, self.writer: 2, self.researcher: 1}  # verified model calls

    def pay(self, who="client", amount=8 * TOKEN, deadline_in=600, **kw):
        return self.client(who).pay(kw.pop("agent", self.lead), kw.pop("run", RUN), kw.pop("validator", self.a.validator.address),
                                    amount, self.a.now() + deadline_in, **kw)

    def client(self, who):
        actor = getattr(self.a, who)
        return CollectiveClient(actor.chain, self.a.d.collective, TokenClient(actor.chain, self.a.d.token))

    def attest(self, score=100, tag="verified:final", ids=None, work=None):
        ids = ids or self.ids
        work = work or [self.work[i] for i in ids]
        self.val["validator"].respond(RUN, score, "data:,passed", split_hash(ids, work), tag)
        return ids, work


@pytest.fixture
def co(actors):
    return Collective(actors)


def balances(a, *who):
    return [a.deployer.token.balance_of(w) for w in who]


def test_a_validated_run_pays_each_agent_in_proportion_to_its_verified_work(actors, co):
    pid = co.pay(amount=8 * TOKEN)
    assert co.client("stranger").payment(pid).state_name == "open"
    ids, work = co.attest()
    payees = (actors.provider.address, actors.provider2.address, co.wallet)  # the researcher is paid at its wallet
    before = balances(actors, *payees)
    paid = co.client("stranger").release(pid, ids, work)  # anyone may release it: a member, here a stranger
    assert {agent: amount for agent, _, amount in paid} == {co.lead: 2 * TOKEN, co.writer: 4 * TOKEN,
                                                            co.researcher: 2 * TOKEN}
    assert [b - a for a, b in zip(before, balances(actors, *payees))] == [2 * TOKEN, 4 * TOKEN, 2 * TOKEN]
    assert co.client("stranger").payment(pid).state_name == "released"
    with pytest.raises(ChainError, match="collective: not an open payment"):  # paid once
        co.client("provider").release(pid, ids, work)


def test_what_the_division_leaves_goes_to_the_last_agent(actors, co):
    pid = co.pay(amount=10)
    ids, work = co.attest(work=[1, 1, 1])
    assert [amount for *_, amount in co.client("client").release(pid, ids, work)] == [3, 3, 4]


def test_only_the_split_the_validator_attested_is_paid(actors, co):
    pid = co.pay()
    ids, work = co.attest()
    lead = ids.index(co.lead)
    greedy = [w * 10 if i == lead else w for i, w in enumerate(work)]  # the collective's owner inflates its own work
    for bad_ids, bad_work in ((ids, greedy), ([co.lead], [1]), (ids[::-1], work[::-1]), (ids, work[:-1])):
        with pytest.raises(ChainError, match="collective: (not the split the validator attested|one work count)"):
            co.client("provider").release(pid, bad_ids, bad_work)
    assert co.client("provider").payment(pid).state_name == "open"


def test_no_pass_no_payment(actors, co):
    pid = co.pay()
    with pytest.raises(ChainError, match="collective: the run has not passed its validation"):  # still pending
        co.client("provider").release(pid, co.ids, [co.work[i] for i in co.ids])
    ids, work = co.attest(score=0, tag="failed:receipt")
    with pytest.raises(ChainError, match="collective: the run has not passed its validation"):
        co.client("provider").release(pid, ids, work)
    # a validator other than the one the client named, or another agent's validation, does not count
    other = co.pay(validator=actors.stranger.address)
    ids, work = co.attest()
    with pytest.raises(ChainError, match="collective: the validation is not this payment's"):
        co.client("provider").release(other, ids, work)
    for_writer = co.pay(agent=co.writer)
    with pytest.raises(ChainError, match="collective: the validation is not this payment's"):
        co.client("provider2").release(for_writer, ids, work)
    # the client may ask for final answers only: a soft pass does not release it
    final_only = co.pay(tag="verified:final")
    co.attest(tag="verified:soft")
    with pytest.raises(ChainError, match="collective: not the answer's tag the payer asked for"):
        co.client("provider").release(final_only, ids, work)
    co.attest(tag="verified:final")
    co.client("provider").release(final_only, ids, work)


def test_an_unreleased_payment_goes_back_to_its_payer_after_its_deadline(actors, co):
    pid = co.pay(amount=5 * TOKEN, deadline_in=100)
    (before,) = balances(actors, actors.client.address)
    with pytest.raises(ChainError, match="collective: the payment can still be released until its deadline"):
        co.client("client").refund(pid)
    actors.advance(101)
    ids, work = co.attest()  # a pass after the deadline comes too late
    with pytest.raises(ChainError, match="collective: the payment's deadline has passed"):
        co.client("provider").release(pid, ids, work)
    co.client("stranger").refund(pid)  # anyone may send it back; it goes to the payer
    assert balances(actors, actors.client.address) == [before + 5 * TOKEN]
    with pytest.raises(ChainError, match="collective: not an open payment"):
        co.client("client").refund(pid)


def test_bad_payments_are_refused(actors, co):
    for kw, message in (({"amount": 0}, "pay something"), ({"deadline_in": -1}, "the deadline has passed"),
                        ({"validator": "0x" + "00" * 20}, "name the validator"), ({"run": bytes(32)}, "name the run"),
                        ({"agent": 999}, "erc721: invalid token ID|no such agent")):
        with pytest.raises(ChainError, match=message):
            co.pay(**kw)
    assert co.client("client").fn.paymentCount().call() == 0
