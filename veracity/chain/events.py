"""Follow contract events from a block onward; restartable from the last block seen.

Nodes follow events, never poll storage: ``EventStream.poll`` returns the new events of the
watched contracts in chain order (block, log index) and advances a cursor that a daemon stores
(in SQLite) to resume after a restart without missing or repeating an event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eth_utils import event_abi_to_log_topic
from pydantic import BaseModel
from web3 import Web3

from veracity.chain.client import Chain
from veracity.errors import ChainError

if TYPE_CHECKING:
    from eth_typing import ChecksumAddress


class ChainEvent(BaseModel):
    contract: str  # the contract's name (Token, Registry, Market)
    name: str
    block: int
    log_index: int
    tx_hash: str
    args: dict[str, Any]


class EventStream:
    """New events of ``contracts`` (name -> address) from block ``start`` on."""

    def __init__(self, chain: Chain, contracts: dict[str, str], start: int = 0) -> None:
        self.chain = chain
        self.next_block = start
        self._by_address: dict[ChecksumAddress, tuple[str, Any, dict[bytes, Any]]] = {}
        for name, address in contracts.items():
            c = chain.contract(name, address)
            topics = {event_abi_to_log_topic(e): getattr(c.events, e["name"])
                      for e in c.abi if e["type"] == "event"}
            self._by_address[Web3.to_checksum_address(address)] = (name, c, topics)

    def poll(self, max_blocks: int = 5000) -> list[ChainEvent]:
        """Events in blocks [cursor, latest] (at most ``max_blocks`` at a time), in chain order."""
        try:
            latest = self.chain.w3.eth.block_number
        except Exception as exc:
            raise ChainError(f"cannot reach the chain at {self.chain.rpc_url}: {exc}") from None
        if latest < self.next_block:
            return []
        to_block = min(latest, self.next_block + max_blocks - 1)
        logs = self.chain.w3.eth.get_logs({"fromBlock": self.next_block, "toBlock": to_block,
                                           "address": list(self._by_address)})
        events = []
        for log in sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"])):
            name, _, topics = self._by_address[Web3.to_checksum_address(log["address"])]
            event_type = topics.get(bytes(log["topics"][0])) if log["topics"] else None
            if event_type is None:
                continue
            decoded = event_type().process_log(log)
            events.append(ChainEvent(contract=name, name=decoded["event"], block=log["blockNumber"],
                                     log_index=log["logIndex"], tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                                     args={k: (("0x" + v.hex()) if isinstance(v, bytes) else v)
                                           for k, v in dict(decoded["args"]).items()}))  # a field may be named items
        self.next_block = to_block + 1
        return events
