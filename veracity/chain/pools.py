"""A typed client of the data pools (``contracts/DataPool.vy``): pools, committed and signed
contributions, score orders, delivery, settlement and payments. The pool's events carry what a settlement needs (the
topic embedding, the accepted items' embeddings), so ``topic`` and ``accepted`` read them back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web3 import Web3

from veracity.chain.client import Chain, TokenClient, _Bound
from veracity.chain.events import EventStream

CONTRIBUTION_STATES = {0: "none", 1: "submitted", 2: "scoring", 3: "scored", 4: "rejected", 5: "delivered"}
DOMAIN_NAME, DOMAIN_VERSION = "Veracity DataPool", "1"
CONTRIBUTION_TYPES = {"Contribution": [{"name": "pool", "type": "uint256"}, {"name": "cid", "type": "bytes32"},
                                       {"name": "contributor", "type": "address"},
                                       {"name": "programRoot", "type": "bytes32"},
                                       {"name": "programLength", "type": "uint256"}]}


def contribution_message(chain_id: int, data_pool: str, pool: int, cid: bytes, contributor: str,
                         program: tuple[bytes, int]) -> dict[str, Any]:
    """The EIP-712 message a contributor (and its device) signs: bound to the chain, the DataPool
    contract, the pool, the blob's CID, the contributor, and its score job's program (root, length)."""
    return {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                       {"name": "chainId", "type": "uint256"},
                                       {"name": "verifyingContract", "type": "address"}], **CONTRIBUTION_TYPES},
            "primaryType": "Contribution",
            "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
                       "verifyingContract": Web3.to_checksum_address(data_pool)},
            "message": {"pool": pool, "cid": cid, "contributor": Web3.to_checksum_address(contributor),
                        "programRoot": program[0], "programLength": program[1]}}


def sign_contribution(key: str, chain_id: int, data_pool: str, pool: int, cid: bytes, contributor: str,
                      program: tuple[bytes, int]) -> bytes:
    """``key``'s signature of a contribution (the contributor's own, or its device's)."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    msg = encode_typed_data(full_message=contribution_message(chain_id, data_pool, pool, cid, contributor, program))
    return bytes(Account.sign_message(msg, key).signature)


def commitment(cid: bytes, contributor: str, salt: bytes) -> bytes:
    """What a contributor commits before revealing: keccak256(abi_encode(cid, contributor, salt))."""
    from eth_abi import encode
    from eth_utils import keccak

    return keccak(encode(["bytes32", "address", "bytes32"], [cid, Web3.to_checksum_address(contributor), salt]))


@dataclass(frozen=True)
class PoolInfo:
    owner: str
    curator: str
    schema_cid: bytes
    topic_hash: bytes
    threshold_bps: int
    devices: bool
    start: int
    epoch_length: int
    epochs: int
    epoch_reward: int
    score_budget: int
    contributions: int
    next_settled: int
    accepted: int
    total_score: int
    deposit: int


@dataclass(frozen=True)
class ContributionInfo:
    contributor: str
    cid: bytes
    epoch: int
    state: int
    order_id: int
    score: int
    program_root: bytes
    program_length: int

    @property
    def state_name(self) -> str:
        return CONTRIBUTION_STATES.get(self.state, str(self.state))


def _raw(v: Any) -> bytes:
    """Bytes from an event argument (the event stream gives them as 0x hex)."""
    return bytes.fromhex(v.removeprefix("0x")) if isinstance(v, str) else bytes(v)


class DataPoolClient(_Bound):
    name = "DataPool"

    def __init__(self, chain: Chain, address: str, token: TokenClient) -> None:
        super().__init__(chain, address)
        self.token = token

    # pools
    def create_pool(self, schema_cid: bytes, topic: bytes, threshold_bps: int, devices: bool, epoch_length: int,
                    epochs: int, epoch_reward: int, score_budget: int, deposit: int = 0,
                    curator: str | None = None) -> int:
        funds = epochs * epoch_reward + score_budget
        if funds:
            self.token.approve(self.address, funds)
        pool = self.fn.pool_count().call()
        self._send(self.fn.create_pool(schema_cid, topic, threshold_bps, devices, epoch_length, epochs, epoch_reward,
                                       score_budget, deposit, Web3.to_checksum_address(curator or self.chain.address)))
        return pool

    def register_device(self, pool: int, device: str, contributor: str) -> Any:
        return self._send(self.fn.register_device(pool, Web3.to_checksum_address(device),
                                                  Web3.to_checksum_address(contributor)))

    def pool(self, pool: int) -> PoolInfo:
        return PoolInfo(*self._read(self.fn.pools(pool)))

    def item(self, pool: int, index: int) -> ContributionInfo:
        return ContributionInfo(*self._read(self.fn.items(pool, index)))

    # contributions
    def commit(self, pool: int, commitment: bytes) -> Any:
        return self._send(self.fn.commit(pool, commitment))

    def contribute(self, pool: int, contributor: str, cid: bytes, salt: bytes, program: tuple[bytes, int],
                   signature: bytes, device_signature: bytes = b"") -> int:
        """Reveal a committed contribution (this account puts down the pool's deposit); its index."""
        info = self.pool(pool)
        if info.deposit:
            self.token.approve(self.address, info.deposit)
        self.chain.send(self.fn.contribute(pool, Web3.to_checksum_address(contributor), cid, salt, program[0],
                                           program[1], signature, device_signature), estimate_at="pending")
        return info.contributions

    def digest(self, pool: int, cid: bytes, contributor: str, program: tuple[bytes, int]) -> bytes:
        return bytes(self.fn.contribution_digest(pool, cid, Web3.to_checksum_address(contributor), *program).call())

    # scoring
    def score_spec(self, cid: bytes) -> bytes:
        return bytes(self.fn.score_spec(cid).call())

    def order_score(self, pool: int, index: int, max_price: int) -> int:
        self._send(self.fn.order_score(pool, index, max_price))
        return self.item(pool, index).order_id

    def accept(self, bid: Any) -> Any:
        return self._send(self.fn.accept(bid.order_id, Web3.to_checksum_address(bid.provider), bid.price,
                                         bid.collateral, bid.expiry, bid.run_time,
                                         bytes.fromhex(bid.signature.removeprefix("0x"))))

    def deliver(self, order_id: int, output: bytes) -> Any:
        return self._send(self.fn.deliver(order_id, output))

    def settle(self, pool: int, index: int, embedding: bytes, topic: bytes, accepted: list[bytes]) -> Any:
        return self._send(self.fn.settle(pool, index, embedding, topic, accepted))

    def order_item(self, order_id: int) -> tuple[int, int] | None:
        """The (pool, index) a score order scores, or None for another order."""
        tagged = self.fn.order_pool(order_id).call()
        return (tagged - 1, self.fn.order_index(order_id).call()) if tagged else None

    def reject(self, pool: int, index: int, reason: str) -> Any:
        return self._send(self.fn.reject(pool, index, reason[:48]))

    def score_binding(self, pool: int, index: int) -> bytes:
        return bytes(self.fn.score_binding(pool, index).call())

    # payments
    def pay_epoch(self, pool: int, epoch: int) -> Any:
        return self._send(self.fn.pay_epoch(pool, epoch))

    def buy(self, pool: int, amount: int, dataset_cid: bytes) -> Any:
        self.token.approve(self.address, amount)
        return self._send(self.fn.buy(pool, amount, dataset_cid))

    def withdraw_budget(self, pool: int) -> Any:
        return self._send(self.fn.withdraw_budget(pool))

    # what the events hold
    def events(self, pool: int | None = None) -> list[Any]:
        """The DataPool's events (of one pool), in chain order."""
        evs = EventStream(self.chain, {"DataPool": self.address}, 0).poll()
        return [e for e in evs if pool is None or e.args.get("pool") == pool]

    def topic(self, pool: int) -> bytes:
        """The pool's topic embedding (its ``PoolCreated`` event's)."""
        for e in self.events(pool):
            if e.name == "PoolCreated":
                return _raw(e.args["topic"])
        raise LookupError(f"no pool {pool}")

    def accepted(self, pool: int) -> list[bytes]:
        """The embeddings of the pool's accepted items, in acceptance order (its ``Accepted`` events)."""
        got = sorted((e.args["position"], _raw(e.args["embedding"])) for e in self.events(pool) if e.name == "Accepted")
        return [emb for _, emb in got]
