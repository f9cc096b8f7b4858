"""Typed client of ``contracts/LabelTasks.vy``: labelling tasks settled by an on-chain consensus.

A requester posts a task and escrows its reward; labellers stake and commit, then reveal, their
labels; ``finalize`` aggregates them by the fixed-point Dawid-Skene of
``veracity.data.consensus`` and pays or slashes (a slow round takes a few ``finalize``
transactions, each under EIP-7825's 2**24 gas: the client sends them until the task settles).
The commitment is computed here, so a labeller can keep its labels and salt locally between
commit and reveal.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from web3 import Web3
from web3.logs import DISCARD

from veracity.chain.client import Chain, TokenClient, _Bound
from veracity.errors import ChainError, UsageError

TASK_STATES = {0: "none", 1: "open", 2: "finalized", 3: "cancelled"}
MAX_FINALIZE_CALLS = 4  # ceil(MAX_ITERATIONS / ITERATIONS_PER_CALL) of LabelTasks, and one to spare


def label_commitment(task_id: int, labeller: str, labels: Sequence[int] | bytes, salt: bytes) -> bytes:
    """keccak256(abi_encode(task_id, labeller, labels, salt)): what ``join_and_commit`` takes and
    ``reveal`` checks. It names the labeller, so another address cannot reveal a copy of it."""
    if len(salt) != 32:
        raise UsageError(f"a commitment's salt is 32 bytes, not {len(salt)}: make one with new_salt()")
    data = encode(["uint256", "address", "bytes", "bytes32"],
                  [task_id, Web3.to_checksum_address(labeller), bytes(labels), salt])
    return Web3.keccak(data)


def new_salt() -> bytes:
    """A fresh random salt: without one, labels over few items and classes could be guessed from
    the commitment by trying them all."""
    return secrets.token_bytes(32)


@dataclass(frozen=True)
class LabelTask:
    """A task as the contract stores it."""

    task_id: int
    requester: str
    items_cid: bytes
    n_items: int
    classes: int
    labels_per_item: int
    reward: int
    min_stake: int
    commit_deadline: int
    reveal_deadline: int
    accuracy_threshold_bps: int
    slash_bps: int
    state: int

    @property
    def state_name(self) -> str:
        return TASK_STATES.get(self.state, str(self.state))


@dataclass(frozen=True)
class Settlement:
    """What ``finalize`` did: the consensus labels (empty when too few revealed), what each
    revealer got (reward share, stake returned, accuracy in bps), what each labeller lost to the
    treasury, what went back to the requester, the EM iterations the aggregation ran, and the gas
    of each ``finalize`` transaction it took."""

    consensus: bytes
    revealed: int
    paid: dict[str, tuple[int, int, int]]
    slashed: dict[str, int]
    refunded: int
    iterations: int
    gas_per_call: tuple[int, ...]

    @property
    def gas_used(self) -> int:
        return sum(self.gas_per_call)


class LabelTasksClient(_Bound):
    """Post, join, reveal and finalize labelling tasks (``contracts/LabelTasks.vy``)."""

    name = "LabelTasks"

    def __init__(self, chain: Chain, address: str, token: TokenClient) -> None:
        super().__init__(chain, address)
        self.token = token

    def post_task(self, items_cid: bytes, n_items: int, classes: int, labels_per_item: int, reward: int,
                  min_stake: int, commit_deadline: int, reveal_deadline: int, accuracy_threshold_bps: int,
                  slash_bps: int) -> int:
        """Escrow ``reward`` (approving it first) and post the task; its id."""
        self.token.approve(self.address, reward)
        receipt = self._send(self.fn.post_task(items_cid, n_items, classes, labels_per_item, reward, min_stake,
                                               commit_deadline, reveal_deadline, accuracy_threshold_bps, slash_bps))
        (event,) = self.contract.events.TaskPosted().process_receipt(receipt, errors=DISCARD)
        return int(event["args"]["task_id"])

    def join_and_commit(self, task_id: int, commitment: bytes) -> Any:
        """Stake the task's ``min_stake`` (approving it first) and commit."""
        self.token.approve(self.address, self.task(task_id).min_stake)
        return self._send(self.fn.join_and_commit(task_id, commitment))

    def commit_labels(self, task_id: int, labels: Sequence[int], salt: bytes) -> Any:
        """Join with a commitment to ``labels`` under ``salt`` (keep both: ``reveal`` needs them)."""
        return self.join_and_commit(task_id, label_commitment(task_id, self.chain.address, labels, salt))

    def reveal(self, task_id: int, labels: Sequence[int] | bytes, salt: bytes) -> Any:
        return self._send(self.fn.reveal(task_id, bytes(labels), salt))

    def finalize(self, task_id: int) -> Settlement:
        """Aggregate and settle (after the reveal deadline), calling ``finalize`` again while the
        contract reports the aggregation still running; what happened, from the events."""
        ev = self.contract.events
        gas: list[int] = []
        for _ in range(MAX_FINALIZE_CALLS):
            receipt = self._send(self.fn.finalize(task_id))
            gas.append(int(receipt["gasUsed"]))
            done = ev.Finalized().process_receipt(receipt, errors=DISCARD)
            if done:
                break
        else:
            raise ChainError(f"task {task_id} is still aggregating after {len(gas)} finalize calls: call finalize again")
        (done,) = done
        paid = {e["args"]["labeller"]: (int(e["args"]["amount"]), int(e["args"]["stake_returned"]),
                                        int(e["args"]["accuracy_bps"]))
                for e in ev.Paid().process_receipt(receipt, errors=DISCARD)}
        slashed = {e["args"]["labeller"]: int(e["args"]["amount"])
                   for e in ev.Slashed().process_receipt(receipt, errors=DISCARD)}
        refunded = sum(int(e["args"]["amount"]) for e in ev.Refunded().process_receipt(receipt, errors=DISCARD))
        return Settlement(bytes(done["args"]["consensus"]), int(done["args"]["revealed"]), paid, slashed, refunded,
                          int(done["args"]["iterations"]), tuple(gas))

    def task(self, task_id: int) -> LabelTask:
        return LabelTask(task_id, *self._read(self.fn.task(task_id)))

    def labellers(self, task_id: int) -> list[str]:
        return list(self._read(self.fn.labellers(task_id)))

    def revealed(self, task_id: int, labeller: str) -> bytes:
        return bytes(self._read(self.fn.revealed(task_id, Web3.to_checksum_address(labeller))))

    def consensus(self, task_id: int) -> bytes:
        return bytes(self._read(self.fn.consensus(task_id)))

    def accuracy(self, task_id: int, labeller: str) -> int:
        return int(self._read(self.fn.accuracy(task_id, Web3.to_checksum_address(labeller))))

    def iterations(self, task_id: int) -> int:
        """The EM iterations of a task's aggregation (so far, while ``finalize`` is still at it)."""
        return int(self._read(self.fn.iterations(task_id)))

    def aggregate(self, labels: Sequence[Sequence[int] | bytes], classes: int) -> tuple[bytes, list[int], int]:
        """The contract's aggregation of any labels (one label set per labeller), without a task,
        in one call: consensus labels, accuracies in bps and the EM iterations run."""
        consensus, accuracy, iterations = self._read(self.fn.aggregate([bytes(x) for x in labels], classes))
        return bytes(consensus), [int(a) for a in accuracy], int(iterations)

    def treasury(self) -> str:
        return self.fn.treasury().call()
