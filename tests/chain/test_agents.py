"""Agent identities, reputation and validation (after the draft ERC-8004) on a real anvil node:
what an agent's owner, its clients, its validators and an attacker can and cannot do."""

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account

from veracity.agents.identity import consent_signer, sign_wallet_consent, wallet_digest
from veracity.chain.agents import AgentRegistryClient, FeedbackSummary, ReputationClient, ValidationClient
from veracity.chain.client import Chain
from veracity.chain.devnet import Deployment
from veracity.chain.events import EventStream
from veracity.errors import ChainError

ZERO = "0x0000000000000000000000000000000000000000"
KEY_WALLET = str(Path(__file__).resolve().parents[2] / "examples" / "contracts" / "KeyWallet.vy")
URI = "ipfs://bafkreiagentcard"


class Agents:
    """One actor's three clients: ``reg`` (AgentRegistry), ``rep`` (Reputation), ``val`` (Validation)."""

    def __init__(self, actor, deployment):
        self.address, self.key = actor.address, actor.key
        self.reg = AgentRegistryClient(actor.chain, deployment.agent_registry)  # the actor's chain: one nonce
        self.rep = ReputationClient(actor.chain, deployment.reputation)
        self.val = ValidationClient(actor.chain, deployment.validation)


@pytest.fixture
def ag(actors):
    """The actors' agent clients by role: ``ag["client"].rep.give(...)``."""
    return {role: Agents(getattr(actors, role), actors.d) for role in actors.ROLES}


def consent(a, agent_id, wallet_key, owner=None, nonce=None, deadline=None, chain_id=None, registry=None, wallet=None):
    """A wallet's signed consent to become agent ``agent_id``'s wallet (current owner and nonce by default)."""
    reg = AgentRegistryClient(a.stranger.chain, a.d.agent_registry)
    owner = owner or reg.owner_of(agent_id)
    nonce = reg.wallet_nonce(agent_id) if nonce is None else nonce
    deadline = a.now() + 600 if deadline is None else deadline
    sig = sign_wallet_consent(agent_id, owner, nonce, deadline, chain_id or a.d.chain_id, registry or a.d.agent_registry,
                              wallet_key, wallet)
    return deadline, sig


def fresh_wallet():
    acct = Account.create()
    return acct.address, "0x" + bytes(acct.key).hex()


# identity -------------------------------------------------------------------------------------

def test_anyone_registers_and_owns_the_next_id(actors, ag):
    first = ag["provider"].reg.register(URI, {"model": b"smollm2-135m", "price": b"1 VRC / 1k tokens"})
    second = ag["stranger"].reg.register()
    assert (first, second) == (1, 2)
    reg = ag["client"].reg
    assert reg.owner_of(first) == actors.provider.address and reg.owner_of(second) == actors.stranger.address
    assert reg.uri(first) == URI and reg.uri(second) == ""
    assert reg.metadata(first, "model") == b"smollm2-135m" and reg.metadata(first, "absent") == b""
    # the wallet starts as the owner, readable as ERC-8004's reserved metadata key too
    assert reg.wallet(first) == actors.provider.address
    assert reg.metadata(first, "agentWallet") == bytes.fromhex(actors.provider.address[2:])
    assert reg.fn.totalSupply().call() == 2 and reg.fn.balanceOf(actors.provider.address).call() == 1


def test_register_emits_what_an_indexer_needs(actors, ag):
    stream = EventStream(actors.stranger.chain, {"AgentRegistry": actors.d.agent_registry},
                         start=actors.stranger.chain.w3.eth.block_number + 1)
    agent = ag["provider"].reg.register(URI, {"endpoint": b"https://agent.example/v1"})
    events = stream.poll()
    assert [e.name for e in events] == ["Transfer", "MetadataUpdate", "Registered", "MetadataSet", "MetadataSet"]
    registered, wallet, endpoint = events[2].args, events[3].args, events[4].args
    assert registered == {"agentId": agent, "agentURI": URI, "owner": actors.provider.address}
    assert (wallet["metadataKey"], wallet["metadataValue"]) == ("agentWallet", actors.provider.address.lower())
    assert (endpoint["metadataKey"], endpoint["metadataValue"]) == ("endpoint", "0x" + b"https://agent.example/v1".hex())


def test_the_wallet_key_is_not_plain_metadata(ag):
    reg = ag["provider"].reg
    with pytest.raises(ChainError, match="agents: the agentWallet key is set only by setAgentWallet"):
        reg.register(URI, {"agentWallet": bytes(20)})
    agent = reg.register(URI)
    with pytest.raises(ChainError, match="agents: the agentWallet key is set only by setAgentWallet"):
        reg.set_metadata(agent, "agentWallet", bytes.fromhex("11" * 20))


def test_only_the_owner_or_its_operators_change_an_agent(actors, ag):
    agent = ag["provider"].reg.register(URI)
    for attacker in ("stranger", "client"):
        with pytest.raises(ChainError, match="agents: only the agent's owner or an operator it approved"):
            ag[attacker].reg.set_uri(agent, "https://evil.example/agent.json")
        with pytest.raises(ChainError, match="agents: only the agent's owner or an operator it approved"):
            ag[attacker].reg.set_metadata(agent, "price", b"0")
    with pytest.raises(ChainError, match="agents: no such agent"):
        ag["stranger"].reg.set_uri(99, URI)
    ag["provider"].reg.approve(actors.provider2.address, agent)  # an operator for this one agent
    ag["provider2"].reg.set_uri(agent, "ipfs://bafkreinewcard")
    ag["provider2"].reg.set_metadata(agent, "price", b"2 VRC")
    assert ag["stranger"].reg.uri(agent) == "ipfs://bafkreinewcard"
    assert ag["stranger"].reg.metadata(agent, "price") == b"2 VRC"


def test_a_wallet_is_set_by_its_own_signature(actors, ag):
    reg = ag["provider"].reg
    agent = reg.register(URI)
    wallet, key = fresh_wallet()
    deadline, sig = consent(actors, agent, key)
    assert wallet_digest(agent, wallet, actors.provider.address, 0, deadline, actors.d.chain_id,
                         actors.d.agent_registry) == reg.wallet_digest(agent, wallet, actors.provider.address, 0,
                                                                       deadline)
    assert consent_signer(agent, wallet, actors.provider.address, 0, deadline, actors.d.chain_id,
                          actors.d.agent_registry, sig) == wallet
    reg.set_wallet(agent, wallet, deadline, sig)
    assert reg.wallet(agent) == wallet and reg.wallet_nonce(agent) == 1
    assert reg.metadata(agent, "agentWallet") == bytes.fromhex(wallet[2:])


def test_a_forged_wallet_signature_is_refused(actors, ag):
    """The owner cannot claim someone else's address as its wallet: only that address can sign."""
    reg = ag["provider"].reg
    agent = reg.register(URI)
    deadline, forged = consent(actors, agent, actors.provider.key)  # the owner signs, not the wallet
    with pytest.raises(ChainError, match="agents: the signature is not the wallet's consent"):
        reg.set_wallet(agent, actors.stranger.address, deadline, forged)
    with pytest.raises(ChainError, match="ecdsa: invalid signature"):
        reg.set_wallet(agent, actors.stranger.address, deadline, b"\x01" * 65)
    assert reg.wallet(agent) == actors.provider.address


def test_a_wallet_consent_is_good_once_for_one_agent_chain_and_registry(actors, ag):
    reg = ag["provider"].reg
    agent, other = reg.register(URI), reg.register(URI)
    wallet, key = fresh_wallet()
    deadline, sig = consent(actors, agent, key)
    with pytest.raises(ChainError, match="agents: the signature is not the wallet's consent"):
        reg.set_wallet(other, wallet, deadline, sig)  # another agent of the same owner
    for replay in (consent(actors, agent, key, chain_id=actors.d.chain_id + 1),
                   consent(actors, agent, key, registry=actors.d.reputation)):  # another chain, another contract
        with pytest.raises(ChainError, match="agents: the signature is not the wallet's consent"):
            reg.set_wallet(agent, wallet, *replay)
    # another deployment of the registry, where the same owner holds the same agent id
    twin = AgentRegistryClient(reg.chain, reg.chain.deploy("AgentRegistry"))
    assert twin.register(URI) == agent
    with pytest.raises(ChainError, match="agents: the signature is not the wallet's consent"):
        twin.set_wallet(agent, wallet, deadline, sig)
    reg.set_wallet(agent, wallet, deadline, sig)
    with pytest.raises(ChainError, match="agents: the signature is not the wallet's consent"):
        reg.set_wallet(agent, wallet, deadline, sig)  # the same consent again: its nonce is used


def test_an_expired_or_far_off_consent_is_refused(actors, ag):
    reg = ag["provider"].reg
    agent = reg.register(URI)
    wallet, key = fresh_wallet()
    with pytest.raises(ChainError, match="agents: the wallet's consent has expired"):
        reg.set_wallet(agent, wallet, *consent(actors, agent, key, deadline=actors.now() - 1))
    with pytest.raises(ChainError, match="agents: the consent's deadline is more than an hour away"):
        reg.set_wallet(agent, wallet, *consent(actors, agent, key, deadline=actors.now() + 7200))


def test_only_the_owner_uses_a_wallets_consent(actors, ag):
    """A consent intercepted on its way to the owner is of no use to anyone else."""
    agent = ag["provider"].reg.register(URI)
    wallet, key = fresh_wallet()
    deadline, sig = consent(actors, agent, key)
    with pytest.raises(ChainError, match="agents: only the agent's owner or an operator it approved"):
        ag["stranger"].reg.set_wallet(agent, wallet, deadline, sig)


def test_a_contract_wallet_consents_through_erc1271(actors, ag):
    """A team's contract wallet (examples/contracts/KeyWallet.vy) becomes the agent's wallet when
    it says the consent is its signature; a consent its key did not sign is refused."""
    reg = ag["provider"].reg
    agent = reg.register(URI)
    key_address, key = fresh_wallet()
    contract_wallet = reg.chain.deploy(KEY_WALLET, key_address)
    with pytest.raises(ChainError, match="agents: the signature is not the wallet's consent"):
        reg.set_wallet(agent, contract_wallet, *consent(actors, agent, actors.stranger.key, wallet=contract_wallet))
    reg.set_wallet(agent, contract_wallet, *consent(actors, agent, key, wallet=contract_wallet))
    assert reg.wallet(agent) == contract_wallet


def test_a_transfer_keeps_the_identity_and_clears_the_wallet(actors, ag):
    old, new = ag["provider"], ag["provider2"]
    agent = old.reg.register(URI, {"model": b"smollm2-135m"})
    wallet, key = fresh_wallet()
    old.reg.set_wallet(agent, wallet, *consent(actors, agent, key))
    ag["client"].rep.give(agent, 90)
    deadline, stale = consent(actors, agent, key)  # signed for the old owner, not yet used
    old.reg.transfer(actors.provider2.address, agent)
    reg = ag["stranger"].reg
    assert reg.owner_of(agent) == actors.provider2.address
    assert reg.uri(agent) == URI and reg.metadata(agent, "model") == b"smollm2-135m"
    assert reg.wallet(agent) == ZERO and reg.metadata(agent, "agentWallet") == b""
    assert ag["stranger"].rep.summary(agent).count == 1  # its history stays with it
    with pytest.raises(ChainError, match="agents: only the agent's owner or an operator it approved"):
        old.reg.set_uri(agent, "https://old-owner.example")
    with pytest.raises(ChainError, match="agents: the signature is not the wallet's consent"):
        new.reg.set_wallet(agent, wallet, deadline, stale)  # consent was for the old owner
    new.reg.set_uri(agent, "ipfs://bafkreinewowner")
    new.reg.set_wallet(agent, wallet, *consent(actors, agent, key))
    assert reg.wallet(agent) == wallet and reg.uri(agent) == "ipfs://bafkreinewowner"
    with pytest.raises(ChainError, match="agents: only the agent's owner or an operator can move it"):
        old.reg._send(old.reg.fn.transferFrom(actors.provider2.address, actors.provider.address, agent))


def test_a_used_consent_is_not_replayed_after_a_round_trip(actors, ag):
    """Where ERC-8004's reference contract (no nonce) would take a used consent again within its
    deadline: the agent goes to another owner and back, and the old consent is replayed."""
    owner, friend = ag["provider"], ag["provider2"]
    agent = owner.reg.register(URI)
    wallet, key = fresh_wallet()
    deadline, sig = consent(actors, agent, key)
    owner.reg.set_wallet(agent, wallet, deadline, sig)
    owner.reg.transfer(actors.provider2.address, agent)
    friend.reg.transfer(actors.provider.address, agent)
    assert owner.reg.wallet(agent) == ZERO
    with pytest.raises(ChainError, match="agents: the signature is not the wallet's consent"):
        owner.reg.set_wallet(agent, wallet, deadline, sig)


# reputation -----------------------------------------------------------------------------------

def test_feedback_is_counted_in_the_summary(actors, ag):
    agent = ag["provider"].reg.register(URI)
    assert ag["client"].rep.give(agent, 87, 0, "starred", "chat") == 1
    assert ag["client2"].rep.give(agent, 9950, 2, "starred", "code") == 1
    assert ag["client"].rep.give(agent, -5, 0, "uptime") == 2
    rep = ag["stranger"].rep
    assert rep.read(agent, actors.client2.address, 1).amount == Decimal("99.50")
    every = rep.summary(agent)
    assert every.count == 3 and every.average == Decimal("60.5") and every.decimals == 18
    assert rep.summary(agent, tag1="starred").average == Decimal("93.25")
    assert rep.summary(agent, tag1="starred", tag2="code").count == 1
    assert rep.summary(agent, tag2="chat").average == 87
    assert rep.summary(agent, tag1="nothing").count == 0
    assert rep.summary(agent, clients=(actors.client.address,)).average == 41  # (87 - 5) / 2
    assert rep.summary(agent, clients=(actors.client.address, actors.client.address)).count == 2  # listed twice
    assert rep.totals(agent, tag1="starred") == (2, (87 + 99) * 10**18 + 5 * 10**17)
    assert rep.clients(agent) == [actors.client.address, actors.client2.address]
    assert rep.summary(ag["provider"].reg.register()).count == 0


def test_the_average_is_exact_at_the_ends_of_the_range(actors, ag):
    """Values at the int128 limits sum without overflow; the average keeps 18 decimals while it fits."""
    top, bottom = 2**127 - 1, -(2**127)
    agent = ag["provider"].reg.register(URI)
    ag["client"].rep.give(agent, top)
    rep = ag["stranger"].rep
    assert rep.summary(agent) == FeedbackSummary(1, top, 0)  # top * 10**18 does not fit an int128: 0 decimals
    ag["client2"].rep.give(agent, bottom)
    assert rep.summary(agent).average == Decimal("-0.5") and rep.totals(agent) == (2, -(10**18))


def test_only_its_author_revokes_feedback(actors, ag):
    agent = ag["provider"].reg.register(URI)
    ag["client"].rep.give(agent, 10, 0, "starred")
    ag["client2"].rep.give(agent, 100, 0, "starred")
    for attacker in ("stranger", "provider"):  # the agent's owner would love to drop a bad review
        with pytest.raises(ChainError, match="reputation: no such feedback from the caller"):
            ag[attacker].rep.revoke(agent, 1)
    assert ag["stranger"].rep.summary(agent).count == 2
    ag["client2"].rep.revoke(agent, 1)  # its own entry: the client's 10 stays
    rep = ag["stranger"].rep
    assert rep.read(agent, actors.client2.address, 1).revoked and not rep.read(agent, actors.client.address, 1).revoked
    assert rep.summary(agent) == rep.summary(agent, tag1="starred") and rep.summary(agent).average == 10
    with pytest.raises(ChainError, match="reputation: the feedback is already revoked"):
        ag["client2"].rep.revoke(agent, 1)
    ag["client"].rep.revoke(agent, 1)
    assert rep.summary(agent).count == 0 and rep.totals(agent) == (0, 0)


def test_an_agent_cannot_rate_itself(actors, ag):
    """Its owner, the operators it approved (a sybil it set up) and its wallet are the agent."""
    owner = ag["provider"]
    agent = owner.reg.register(URI)
    owner.reg.set_operator(actors.stranger.address)  # a sybil approved for all the owner's agents
    owner.reg.approve(actors.provider2.address, agent)  # a sybil approved for this agent
    wallet, key = fresh_wallet()
    actors.rpc("anvil_setBalance", [wallet, hex(10**18)])  # gas for its own transaction
    owner.reg.set_wallet(agent, wallet, *consent(actors, agent, key))
    as_wallet = ReputationClient(Chain(actors.d.rpc_url, key), actors.d.reputation)
    for insider in (owner.rep, ag["stranger"].rep, ag["provider2"].rep, as_wallet):
        with pytest.raises(ChainError, match="reputation: an agent's owner, its operators and its wallet cannot"):
            insider.give(agent, 100)
    assert ag["client"].rep.summary(agent).count == 0
    # once the owner drops its operator, that address is just a client (a fresh sybil always is):
    # readers filter by the clients they trust, which the sybil is not
    owner.reg.set_operator(actors.stranger.address, False)
    ag["stranger"].rep.give(agent, 100)
    ag["client"].rep.give(agent, 20)
    assert ag["client"].rep.summary(agent).average == 60
    assert ag["client"].rep.summary(agent, clients=(actors.client.address,)).average == 20


def test_bad_feedback_is_refused(ag):
    agent = ag["provider"].reg.register(URI)
    with pytest.raises(ChainError, match="reputation: no such agent"):
        ag["client"].rep.give(99, 50)
    with pytest.raises(ChainError, match="reputation: valueDecimals is at most 18"):
        ag["client"].rep.give(agent, 50, 19)
    with pytest.raises(ChainError, match="reputation: no such feedback"):
        ag["client"].rep.read(agent, ag["client"].address, 1)


def test_anyone_may_respond_to_feedback(actors, ag):
    agent = ag["provider"].reg.register(URI)
    ag["client"].rep.give(agent, 0, 0, "starred")
    ag["provider"].rep.respond(agent, actors.client.address, 1, "ipfs://bafkreirefund")
    ag["stranger"].rep.respond(agent, actors.client.address, 1, "ipfs://bafkreispam")
    rep = ag["client"].rep
    assert rep.response_count(agent, actors.client.address, 1) == 2
    assert rep.response_count(agent, actors.client.address, 1, (actors.provider.address,)) == 1
    with pytest.raises(ChainError, match="reputation: no such feedback"):
        rep.respond(agent, actors.client.address, 2, "ipfs://x")
    assert rep.summary(agent).count == 1  # a response changes no summary


# validation -----------------------------------------------------------------------------------

WORK = hashlib.sha256(b"receipts of jobs 1..40").digest()


def test_validation_is_asked_by_the_owner_and_answered_by_its_validator(actors, ag):
    agent = ag["provider"].reg.register(URI)
    for attacker in ("stranger", "validator"):
        with pytest.raises(ChainError, match="validation: only the agent's owner or an operator it approved"):
            ag[attacker].val.request(actors.validator.address, agent, "ipfs://bafkreiwork", WORK)
    ag["provider"].val.request(actors.validator.address, agent, "ipfs://bafkreiwork", WORK)
    val = ag["stranger"].val
    pending = val.status(WORK)
    assert pending.pending and pending.validator == actors.validator.address and pending.agent_id == agent
    assert val.summary(agent) == (0, 0) and val.agent_requests(agent) == [WORK]
    for attacker in ("stranger", "provider"):  # nobody answers for the validator, the agent least of all
        with pytest.raises(ChainError, match="validation: only the request's validator can answer it"):
            ag[attacker].val.respond(WORK, 100)
    with pytest.raises(ChainError, match="validation: a response is a score from 0 to 100"):
        ag["validator"].val.respond(WORK, 101)
    ag["validator"].val.respond(WORK, 100, "ipfs://bafkreievidence", hashlib.sha256(b"ev").digest(), "soft")
    done = val.status(WORK)
    assert not done.pending and done.response == 100 and done.tag == "soft" and done.answers == 1
    assert val.summary(agent) == (1, 100) and val.summary(agent, (actors.validator.address,), "soft") == (1, 100)
    assert val.summary(agent, (actors.stranger.address,)) == (0, 0) and val.summary(agent, tag="hard") == (0, 0)


def test_a_later_answer_replaces_the_earlier(actors, ag):
    """A validator revises its verdict (fraud found after a pass): the request counts once, as last answered."""
    agent = ag["provider"].reg.register(URI)
    other = hashlib.sha256(b"more work").digest()
    ag["provider"].val.request(actors.validator.address, agent, "ipfs://bafkreiwork", WORK)
    ag["provider"].val.request(actors.client.address, agent, "ipfs://bafkreimore", other)
    ag["validator"].val.respond(WORK, 100, tag="soft")
    ag["client"].val.respond(other, 80)
    val = ag["stranger"].val
    assert val.summary(agent) == (2, 90)
    ag["validator"].val.respond(WORK, 0, "ipfs://bafkreifraud", tag="hard")
    assert val.status(WORK).answers == 2 and val.status(WORK).response == 0
    assert val.summary(agent) == (2, 40) and val.summary(agent, tag="soft") == (0, 0)
    assert val.summary(agent, tag="hard") == (1, 0)
    assert val.summary(agent, (actors.validator.address, actors.validator.address)) == (1, 0)


def test_bad_validation_requests_are_refused(actors, ag):
    owner = ag["provider"]
    agent = owner.reg.register(URI)
    owner.reg.set_operator(actors.stranger.address)
    with pytest.raises(ChainError, match="validation: an agent cannot validate itself"):
        owner.val.request(actors.provider.address, agent, "ipfs://w", WORK)
    with pytest.raises(ChainError, match="validation: an agent cannot validate itself"):
        owner.val.request(actors.stranger.address, agent, "ipfs://w", WORK)  # its operator
    with pytest.raises(ChainError, match="validation: the validator cannot be the zero address"):
        owner.val.request(ZERO, agent, "ipfs://w", WORK)
    with pytest.raises(ChainError, match="validation: the request hash names the request: it cannot be zero"):
        owner.val.request(actors.validator.address, agent, "ipfs://w", bytes(32))
    with pytest.raises(ChainError, match="validation: no such agent"):
        owner.val.request(actors.validator.address, 99, "ipfs://w", WORK)
    ag["stranger"].val.request(actors.validator.address, agent, "ipfs://w", WORK)  # an operator may ask
    with pytest.raises(ChainError, match="validation: this request hash was already requested"):
        owner.val.request(actors.client.address, agent, "ipfs://w", WORK)
    with pytest.raises(ChainError, match="validation: no such request"):
        ag["validator"].val.respond(hashlib.sha256(b"never asked").digest(), 50)
    assert ag["client"].val.status(hashlib.sha256(b"never asked").digest()) is None


# gas and deployments --------------------------------------------------------------------------

def test_gas_of_the_main_calls(actors, ag, capsys):
    reg, rep, val = ag["provider"].reg, ag["client"].rep, ag["provider"].val
    gas = {}
    fn = reg.contract.get_function_by_signature("register(string,(string,bytes)[])")
    gas["register(uri)"] = reg._send(fn(URI, []))["gasUsed"]
    gas["register(uri, 2 metadata)"] = reg._send(fn(URI, [("model", b"smollm2-135m"), ("price", b"1")]))["gasUsed"]
    wallet, key = fresh_wallet()
    gas["setAgentWallet"] = reg.set_wallet(1, wallet, *consent(actors, 1, key))["gasUsed"]
    gas["giveFeedback (first, no tags)"] = rep._send(rep.fn.giveFeedback(1, 90, 0, "", "", "", "", bytes(32)))[
        "gasUsed"]
    gas["giveFeedback (two tags, URI)"] = rep._send(rep.fn.giveFeedback(
        1, 9950, 2, "starred", "chat", "https://agent.example/v1", URI, bytes(32)))["gasUsed"]
    gas["revokeFeedback (two tags)"] = rep.revoke(1, 2)["gasUsed"]
    gas["validationRequest"] = val.request(actors.validator.address, 1, URI, WORK)["gasUsed"]
    gas["validationResponse (first, tag)"] = ag["validator"].val.respond(WORK, 100, URI, WORK, "soft")["gasUsed"]
    gas["validationResponse (again)"] = ag["validator"].val.respond(WORK, 90, URI, WORK, "hard")["gasUsed"]
    with capsys.disabled():
        print("\n" + "\n".join(f"  {k:34} {v:>9,}" for k, v in gas.items()))
    assert all(v < 400_000 for v in gas.values())


def test_deployments_from_before_the_agents_still_load(actors, tmp_path):
    old = actors.d.model_dump(exclude={"agent_registry", "reputation", "validation"})
    path = tmp_path / "deployment.json"
    Deployment.model_validate(old).write(path)
    loaded = Deployment.read(path)
    assert loaded.market == actors.d.market and loaded.agent_registry is None
    with pytest.raises(ChainError, match="no agent registries .* redeploy it"):
        loaded.agent_clients(actors.client.key)
