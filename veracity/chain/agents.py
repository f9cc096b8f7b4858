"""Typed clients of the agent contracts (``AgentRegistry``, ``Reputation``, ``Validation``: the
draft ERC-8004 "Trustless Agents" registries, docs/agents.md), on the ``chain.client`` pattern."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from web3 import Web3
from web3.logs import DISCARD

from veracity.chain.client import _Bound

ZERO32 = bytes(32)


def _addresses(items: tuple[str, ...]) -> list[str]:
    return [Web3.to_checksum_address(a) for a in items]


@dataclass(frozen=True)
class Feedback:
    """One client's feedback entry on an agent: ``value`` with ``decimals`` (87, 0 is 87)."""

    value: int
    decimals: int
    tag1: str
    tag2: str
    revoked: bool

    @property
    def amount(self) -> Decimal:
        return Decimal(self.value).scaleb(-self.decimals)


@dataclass(frozen=True)
class FeedbackSummary:
    """Count and average of an agent's non-revoked feedback (the average as value and decimals)."""

    count: int
    value: int
    decimals: int

    @property
    def average(self) -> Decimal:
        return Decimal(self.value).scaleb(-self.decimals)


@dataclass(frozen=True)
class ValidationInfo:
    """A validation request: its validator and agent, its latest answer, and how many answers it had."""

    validator: str
    agent_id: int
    response: int
    response_hash: bytes
    tag: str
    requested_at: int
    last_update: int
    answers: int

    @property
    def pending(self) -> bool:
        return self.answers == 0


class AgentRegistryClient(_Bound):
    """Agent identities (``contracts/AgentRegistry.vy``): ERC-721 tokens with a registration-file
    URI, on-chain metadata and a wallet set with the wallet's signed consent
    (``veracity.agents.identity`` makes it)."""

    name = "AgentRegistry"

    def register(self, uri: str = "", metadata: dict[str, bytes] | None = None) -> int:
        """Register an agent owned by this account; its id (from the Registered event)."""
        fn = self.contract.get_function_by_signature("register(string,(string,bytes)[])")
        receipt = self._send(fn(uri, [(k, bytes(v)) for k, v in (metadata or {}).items()]))
        (event,) = self.contract.events.Registered().process_receipt(receipt, errors=DISCARD)
        return int(event["args"]["agentId"])

    def uri(self, agent_id: int) -> str:
        return self._read(self.fn.tokenURI(agent_id))

    def set_uri(self, agent_id: int, uri: str) -> Any:
        return self._send(self.fn.setAgentURI(agent_id, uri))

    def owner_of(self, agent_id: int) -> str:
        return self._read(self.fn.ownerOf(agent_id))

    def agent_ids(self) -> list[int]:
        """Every registered agent's id, in registration order (ERC-721 enumeration)."""
        return [int(self._read(self.fn.tokenByIndex(i))) for i in range(int(self._read(self.fn.totalSupply())))]

    def agents_of(self, owner: str) -> list[int]:
        """The ids of the agents ``owner`` holds."""
        who = Web3.to_checksum_address(owner)
        n = int(self._read(self.fn.balanceOf(who)))
        return [int(self._read(self.fn.tokenOfOwnerByIndex(who, i))) for i in range(n)]

    def metadata(self, agent_id: int, key: str) -> bytes:
        return bytes(self._read(self.fn.getMetadata(agent_id, key)))

    def set_metadata(self, agent_id: int, key: str, value: bytes) -> Any:
        return self._send(self.fn.setMetadata(agent_id, key, value))

    def wallet(self, agent_id: int) -> str:
        """The agent's verified wallet (the zero address after a transfer, until re-proved)."""
        return self._read(self.fn.getAgentWallet(agent_id))

    def wallet_nonce(self, agent_id: int) -> int:
        """The nonce the next wallet consent for this agent must sign."""
        return self._read(self.fn.walletNonces(agent_id))

    def wallet_digest(self, agent_id: int, wallet: str, owner: str, nonce: int, deadline: int) -> bytes:
        return bytes(self._read(self.fn.walletDigest(agent_id, Web3.to_checksum_address(wallet),
                                                     Web3.to_checksum_address(owner), nonce, deadline)))

    def set_wallet(self, agent_id: int, wallet: str, deadline: int, signature: bytes) -> Any:
        """Make ``wallet`` the agent's wallet with its signed consent (as its owner or operator)."""
        return self._send(self.fn.setAgentWallet(agent_id, Web3.to_checksum_address(wallet), deadline,
                                                 bytes(signature)))

    def transfer(self, to: str, agent_id: int) -> Any:
        """Give the agent to ``to``: its id, URI, metadata and history stay; its wallet is cleared."""
        return self._send(self.fn.transferFrom(self.chain.address, Web3.to_checksum_address(to), agent_id))

    def approve(self, operator: str, agent_id: int) -> Any:
        return self._send(self.fn.approve(Web3.to_checksum_address(operator), agent_id))

    def set_operator(self, operator: str, approved: bool = True) -> Any:
        """Let ``operator`` manage every agent of this account (ERC-721 ``setApprovalForAll``)."""
        return self._send(self.fn.setApprovalForAll(Web3.to_checksum_address(operator), approved))


class ReputationClient(_Bound):
    """Client feedback on agents (``contracts/Reputation.vy``) and its on-chain summaries."""

    name = "Reputation"

    def give(self, agent_id: int, value: int, decimals: int = 0, tag1: str = "", tag2: str = "",
             endpoint: str = "", uri: str = "", uri_hash: bytes = ZERO32) -> int:
        """Give feedback on an agent; the entry's index among this client's (from 1)."""
        receipt = self._send(self.fn.giveFeedback(agent_id, value, decimals, tag1, tag2, endpoint, uri, uri_hash))
        (event,) = self.contract.events.NewFeedback().process_receipt(receipt, errors=DISCARD)
        return int(event["args"]["feedbackIndex"])

    def revoke(self, agent_id: int, index: int) -> Any:
        return self._send(self.fn.revokeFeedback(agent_id, index))

    def respond(self, agent_id: int, client: str, index: int, uri: str, uri_hash: bytes = ZERO32) -> Any:
        return self._send(self.fn.appendResponse(agent_id, Web3.to_checksum_address(client), index, uri, uri_hash))

    def read(self, agent_id: int, client: str, index: int) -> Feedback:
        return Feedback(*self._read(self.fn.readFeedback(agent_id, Web3.to_checksum_address(client), index)))

    def last_index(self, agent_id: int, client: str) -> int:
        return self._read(self.fn.getLastIndex(agent_id, Web3.to_checksum_address(client)))

    def summary(self, agent_id: int, clients: tuple[str, ...] = (), tag1: str = "", tag2: str = "") -> FeedbackSummary:
        """Count and average of the non-revoked feedback (only ``clients``' when given: a sybil is free)."""
        return FeedbackSummary(*self._read(self.fn.getSummary(agent_id, _addresses(clients), tag1, tag2)))

    def totals(self, agent_id: int, clients: tuple[str, ...] = (), tag1: str = "", tag2: str = "") -> tuple[int, int]:
        """(count, sum) of the non-revoked feedback, the sum at 18 decimals."""
        count, total = self._read(self.fn.getTotals(agent_id, _addresses(clients), tag1, tag2))
        return int(count), int(total)

    def clients(self, agent_id: int) -> list[str]:
        """Every client that gave the agent feedback, in order of its first entry."""
        n = self._read(self.fn.clientCount(agent_id))
        fn = self.contract.get_function_by_signature("getClients(uint256,uint256)")
        return [c for start in range(0, n, 100) for c in self._read(fn(agent_id, start))]

    def response_count(self, agent_id: int, client: str, index: int, responders: tuple[str, ...] = ()) -> int:
        return self._read(self.fn.getResponseCount(agent_id, Web3.to_checksum_address(client), index,
                                                   _addresses(responders)))


class ValidationClient(_Bound):
    """Validation requests and answers (``contracts/Validation.vy``) and their on-chain summaries."""

    name = "Validation"

    def request(self, validator: str, agent_id: int, uri: str, request_hash: bytes) -> Any:
        """Ask ``validator`` to check the work ``uri`` describes (as the agent's owner or operator)."""
        return self._send(self.fn.validationRequest(Web3.to_checksum_address(validator), agent_id, uri, request_hash))

    def respond(self, request_hash: bytes, response: int, uri: str = "", response_hash: bytes = ZERO32,
                tag: str = "") -> Any:
        """Answer a request (as its validator) with a score from 0 (failed) to 100 (passed)."""
        return self._send(self.fn.validationResponse(request_hash, response, uri, response_hash, tag))

    def status(self, request_hash: bytes) -> ValidationInfo | None:
        """The request, or None for a hash never requested."""
        r = self._read(self.fn.getRequest(request_hash))
        if int(r[0], 16) == 0:
            return None
        return ValidationInfo(r[0], int(r[1]), int(r[2]), bytes(r[3]), r[4], int(r[5]), int(r[6]), int(r[7]))

    def summary(self, agent_id: int, validators: tuple[str, ...] = (), tag: str = "") -> tuple[int, int]:
        """(answered requests, their latest scores' average) (only ``validators``' when given)."""
        count, avg = self._read(self.fn.getSummary(agent_id, _addresses(validators), tag))
        return int(count), int(avg)

    def validator_requests(self, validator: str) -> list[bytes]:
        """The hashes of every request addressed to ``validator``, oldest first."""
        who = Web3.to_checksum_address(validator)
        n = self._read(self.fn.validatorRequestCount(who))
        fn = self.contract.get_function_by_signature("getValidatorRequests(address,uint256)")
        return [bytes(h) for start in range(0, n, 100) for h in self._read(fn(who, start))]

    def request_uris(self, validator: str, from_block: int = 0) -> dict[bytes, str]:
        """Request hash -> request URI of the requests addressed to ``validator`` (the URI is in the
        ``ValidationRequest`` event only), from block ``from_block`` on."""
        logs = self.contract.events.ValidationRequest().get_logs(
            from_block=from_block, argument_filters={"validatorAddress": Web3.to_checksum_address(validator)})
        return {bytes(lg["args"]["requestHash"]): str(lg["args"]["requestURI"]) for lg in logs}

    def agent_requests(self, agent_id: int) -> list[bytes]:
        n = self._read(self.fn.agentValidationCount(agent_id))
        fn = self.contract.get_function_by_signature("getAgentValidations(uint256,uint256)")
        return [bytes(h) for start in range(0, n, 100) for h in self._read(fn(agent_id, start))]


@dataclass(frozen=True)
class CollectivePayment:
    """A payment for an agent's run (``contracts/Collective.vy``)."""

    payer: str
    agent_id: int
    request_hash: bytes
    validator: str
    amount: int
    deadline: int
    tag: str
    state: int  # 1 open, 2 released, 3 refunded

    @property
    def state_name(self) -> str:
        return {1: "open", 2: "released", 3: "refunded"}.get(self.state, "none")


def split_hash(agent_ids: list[int], work: list[int]) -> bytes:
    """What a validator attests for a run it passed (its answer's response hash) and the
    Collective pays by: keccak-256 of ``abi.encode(uint256[] agentIds, uint256[] work)``."""
    from eth_abi import encode

    return bytes(Web3.keccak(encode(["uint256[]", "uint256[]"], [agent_ids, work])))


class CollectiveClient(_Bound):
    """Payments for agents' runs, split by the verified work a validator attested
    (``contracts/Collective.vy``)."""

    name = "Collective"

    def __init__(self, chain: Any, address: str, token: Any) -> None:
        super().__init__(chain, address)
        self.token = token

    def pay(self, agent_id: int, request_hash: bytes, validator: str, amount: int, deadline: int, tag: str = "") -> int:
        """Escrow ``amount`` (approving it first); the payment's id."""
        self.token.approve(self.address, amount)
        receipt = self._send(self.fn.pay(agent_id, request_hash, Web3.to_checksum_address(validator), amount,
                                         deadline, tag))
        (event,) = self.contract.events.PaymentOpened().process_receipt(receipt, errors=DISCARD)
        return int(event["args"]["paymentId"])

    def release(self, payment_id: int, agent_ids: list[int], work: list[int]) -> list[tuple[int, str, int]]:
        """Pay the shares by the attested split: (agent id, payee, amount) of each."""
        receipt = self._send(self.fn.release(payment_id, agent_ids, work))
        return [(int(e["args"]["agentId"]), e["args"]["payee"], int(e["args"]["amount"]))
                for e in self.contract.events.SharePaid().process_receipt(receipt, errors=DISCARD)]

    def refund(self, payment_id: int) -> Any:
        return self._send(self.fn.refund(payment_id))

    def payment(self, payment_id: int) -> CollectivePayment:
        p = self._read(self.fn.payment(payment_id))
        return CollectivePayment(p[0], int(p[1]), bytes(p[2]), p[3], int(p[4]), int(p[5]), p[6], int(p[7]))
