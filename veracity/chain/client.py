"""Typed clients over web3.py: one signing account, one method per contract call.

Transactions are signed locally with the account's key, so any EVM JSON-RPC URL works (the
devnet is configuration, not code). A revert becomes a ``ChainError`` carrying the contract's
reason, which tells the user what was wrong.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_abi import encode
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception
from web3.logs import DISCARD

from veracity.chain.build import compile_contract
from veracity.errors import ChainError

if TYPE_CHECKING:
    from eth_typing import ChecksumAddress

PROVIDER, VALIDATOR = 1, 2
ORDER_STATES = {0: "none", 1: "open", 2: "accepted", 3: "committed", 4: "finalized", 5: "refunded",
                6: "cancelled", 7: "overturned"}


def revert_reason(exc: Exception) -> str:
    msg = str(exc.args[0] if exc.args else exc)
    reason = msg.removeprefix("execution reverted: ").removeprefix("execution reverted").strip(": ")
    return reason or f"the contract reverted without a reason ({msg})"


class Chain:
    """A connection to an EVM node with one local signing account.

    Transactions are built and signed here: the nonce is tracked locally and the chain id and
    fee are cached, so a transaction costs three round trips (estimate, which also surfaces a
    revert's reason; send; receipt) instead of a dozen. Sends take turns, whichever thread makes
    them, so the local nonce stays in step (a provider's dispute thread shares its Chain).
    """

    FEE_TTL = 5.0  # seconds a fetched gas price is reused

    def __init__(self, rpc_url: str, private_key: str | None = None, timeout: float = 30) -> None:
        self.rpc_url = rpc_url
        # web3 asks for the chain id twice per contract call and it never changes: asked once, a
        # read is one round trip instead of three
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout},
                                         cache_allowed_requests=True, cacheable_requests={"eth_chainId"}))
        self.account = Account.from_key(private_key) if private_key else None
        self._chain_id: int | None = None
        self._nonce: int | None = None
        self._fee: tuple[float, int] = (0.0, 0)
        self._sending = threading.Lock()

    @property
    def address(self) -> ChecksumAddress:
        if self.account is None:
            raise ChainError("this client has no account: pass a private key to send transactions")
        return self.account.address

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self._rpc(lambda: self.w3.eth.chain_id)
        return self._chain_id

    def _rpc(self, call: Any) -> Any:
        try:
            return call()
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"cannot reach the chain at {self.rpc_url}: {exc}") from None

    def _fees(self) -> dict[str, int]:
        """EIP-1559 fees: twice the latest base fee plus a 1 gwei tip, refreshed every few seconds."""
        at, base = self._fee
        if time.monotonic() - at > self.FEE_TTL:
            block = self._rpc(lambda: self.w3.eth.get_block("latest"))
            base = int(block.get("baseFeePerGas", 0))
            self._fee = (time.monotonic(), base)
        tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def contract(self, name: str, address: str) -> Any:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=compile_contract(name).abi)

    def send(self, fn: Any, estimate_at: str = "latest") -> Any:
        """Sign, send and wait for a contract call; a revert raises ChainError with its reason.
        ``estimate_at="pending"``: estimate its gas in the next block's context (a call that must
        come a block after another, as a reveal after its commitment)."""
        with self._sending:
            return self._send(fn, estimate_at)

    def _send(self, fn: Any, estimate_at: str = "latest") -> Any:
        sender = self.address
        if self._nonce is None:
            self._nonce = self._rpc(lambda: self.w3.eth.get_transaction_count(sender, "pending"))
        try:
            gas = fn.estimate_gas({"from": sender}, block_identifier=estimate_at)
            # headroom: storage another sender touches in between can cost more than estimated
            tx = fn.build_transaction({"from": sender, "nonce": self._nonce, "chainId": self.chain_id,
                                       "gas": gas * 5 // 4 + 25_000, **self._fees()})
        except ContractLogicError as exc:
            raise ChainError(revert_reason(exc)) from None
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"the chain at {self.rpc_url} refused the transaction: {exc}") from None
        signed = self.account.sign_transaction(tx)  # type: ignore[union-attr]
        try:
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            self._nonce += 1
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.01)
        except (Web3Exception, OSError) as exc:
            self._nonce = None  # resynchronise from the chain next time
            raise ChainError(f"the chain at {self.rpc_url} did not take the transaction: {exc}") from None
        if receipt["status"] != 1:
            raise ChainError(f"transaction {tx_hash.hex()} reverted")
        return receipt

    def deploy(self, name: str, *args: Any) -> str:
        art = compile_contract(name)
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        return self.send(factory.constructor(*args)).contractAddress

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])


class _Bound:
    name = ""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = Web3.to_checksum_address(address)
        self.contract = chain.contract(self.name, address)
        self.fn = self.contract.functions

    def _send(self, fn: Any) -> Any:
        return self.chain.send(fn)

    def _read(self, fn: Any) -> Any:
        """A view call; a revert raises ChainError with its reason (an agent that does not exist)."""
        try:
            return fn.call()
        except ContractLogicError as exc:
            raise ChainError(revert_reason(exc)) from None


class TokenClient(_Bound):
    name = "Token"

    def balance_of(self, who: str) -> int:
        return self.fn.balanceOf(Web3.to_checksum_address(who)).call()

    def total_supply(self) -> int:
        return self.fn.totalSupply().call()

    def approve(self, spender: str, amount: int) -> Any:
        return self._send(self.fn.approve(Web3.to_checksum_address(spender), amount))

    def transfer(self, to: str, amount: int) -> Any:
        return self._send(self.fn.transfer(Web3.to_checksum_address(to), amount))

    def faucet(self, amount: int) -> Any:
        return self._send(self.fn.faucet(amount))


@dataclass(frozen=True)
class NodeInfo:
    address: str
    role: int
    stake: int
    locked: int
    unbonding: int
    unbond_at: int
    device: str
    memory_gb: int
    models: list[bytes]
    price_floor: int
    endpoint: str
    reputation: int


class RegistryClient(_Bound):
    name = "Registry"

    def __init__(self, chain: Chain, address: str, token: TokenClient) -> None:
        super().__init__(chain, address)
        self.token = token

    def register(self, role: int, stake: int, device: str = "cpu", memory_gb: int = 16,
                 models: list[bytes] | None = None, price_floor: int = 0, endpoint: str = "") -> Any:
        self.token.approve(self.address, stake)
        return self._send(self.fn.register(role, stake, device, memory_gb, models or [], price_floor, endpoint))

    def add_stake(self, amount: int) -> Any:
        self.token.approve(self.address, amount)
        return self._send(self.fn.add_stake(amount))

    def request_unbond(self, amount: int) -> Any:
        return self._send(self.fn.request_unbond(amount))

    def withdraw(self) -> Any:
        return self._send(self.fn.withdraw())

    def free_stake(self, who: str) -> int:
        return self.fn.free_stake(Web3.to_checksum_address(who)).call()

    def total_stake(self) -> int:
        return self.fn.total_stake().call()

    def node(self, who: str) -> NodeInfo:
        return NodeInfo(Web3.to_checksum_address(who), *self.fn.nodes(Web3.to_checksum_address(who)).call())


@dataclass(frozen=True)
class OrderInfo:
    order_id: int
    client: str
    spec_cid: bytes
    kind: int
    model_id: bytes
    max_price: int
    deadline: int
    challenge_window: int
    spot_check_bps: int
    state: int
    provider: str
    price: int
    collateral: int
    output_cid: bytes
    trace_root: bytes
    trace_length: int
    committed_at: int

    @property
    def state_name(self) -> str:
        return ORDER_STATES.get(self.state, str(self.state))


class MarketClient(_Bound):
    name = "Market"

    def __init__(self, chain: Chain, address: str, token: TokenClient) -> None:
        super().__init__(chain, address)
        self.token = token

    def open_order(self, spec_cid: bytes, kind: int, model_id: bytes, max_price: int, deadline: int,
                   challenge_window: int, spot_check_bps: int = 0, program_root: bytes = bytes(32),
                   program_length: int = 0) -> int:
        """Approve the escrow, open the order, and return its id (from the OrderOpened event).
        ``program_root``/``program_length`` (``exact.program``) fix what each trace record must be;
        without them (length 0) a dispute can locate a record but not judge inside it."""
        self.token.approve(self.address, max_price)
        receipt = self._send(self.fn.open_order(spec_cid, kind, model_id, max_price, deadline,
                                                challenge_window, spot_check_bps, program_root, program_length))
        (event,) = self.contract.events.OrderOpened().process_receipt(receipt, errors=DISCARD)
        return int(event["args"]["order_id"])

    def accept_bid(self, bid: Any) -> Any:
        return self._send(self.fn.accept_bid(bid.order_id, Web3.to_checksum_address(bid.provider), bid.price,
                                             bid.collateral, bid.expiry, bid.run_time,
                                             bytes.fromhex(bid.signature.removeprefix("0x"))))

    def commit_result(self, order_id: int, outputs: list[bytes] | bytes, trace_root: bytes, trace_length: int) -> Any:
        """Commit a result: its output records' digests (one 32-byte value: a single output; the
        order's output CID becomes their output root) and its trace's root and length."""
        digests = [outputs] if isinstance(outputs, (bytes, bytearray)) else list(outputs)
        return self._send(self.fn.commit_result(order_id, digests, trace_root, trace_length))

    def committed_outputs(self, order_id: int) -> list[bytes]:
        """The output digests of the order's latest result commitment (the Market's own
        ResultCommitted event), checked against the output root the Market stored."""
        from veracity.exact.trace import outputs_root

        logs = self.contract.events.ResultCommitted().get_logs(from_block=0, argument_filters={"order_id": order_id})
        if not logs:
            raise ChainError(f"order {order_id} has no committed result")
        digests = [bytes(d) for d in logs[-1]["args"]["outputs"]]
        if outputs_root(digests) != self.order(order_id).output_cid:
            raise ChainError(f"order {order_id}'s committed outputs do not give its output root")
        return digests

    def post_window(self, order_id: int, spec_cid: bytes, program_root: bytes, program_length: int,
                    signature: str) -> Any:
        """Fix what a standing lease served: the window's spec and program (its client only),
        co-signed by the lease's provider (``market.bids.sign_window``)."""
        return self._send(self.fn.post_window(order_id, spec_cid, program_root, program_length,
                                              bytes.fromhex(signature.removeprefix("0x"))))

    def run_time(self, order_id: int) -> int:
        """The accepted bid's run time (seconds its provider needs to run and commit)."""
        return int(self.fn.run_times(order_id).call())

    def pay_fees(self) -> Any:
        """Pay the fee pool to the treasury (anyone may)."""
        return self._send(self.fn.pay_fees())

    def gated(self, client: str) -> bool:
        """Whether ``client`` (the Oracle) alone finalizes its orders (its providers are paid on delivery)."""
        return bool(self.fn.gated(Web3.to_checksum_address(client)).call())

    def treasury(self) -> str:
        return self.fn.treasury().call()

    def finalize(self, order_id: int) -> Any:
        return self._send(self.fn.finalize(order_id))

    def reclaim(self, order_id: int) -> Any:
        return self._send(self.fn.reclaim(order_id))

    def order(self, order_id: int) -> OrderInfo:
        return OrderInfo(order_id, *self.fn.orders(order_id).call())

    def program(self, order_id: int) -> tuple[bytes, int]:
        """The order's program: (root, length); length 0 when it has none."""
        root, length = self.fn.programs(order_id).call()
        return bytes(root), int(length)

    def bid_digest(self, order_id: int, provider: str, price: int, collateral: int, expiry: int,
                   run_time: int = 0) -> bytes:
        return self.fn.bid_digest(order_id, Web3.to_checksum_address(provider), price, collateral, expiry,
                                  run_time).call()

    def escrow_total(self) -> int:
        return self.fn.escrow_total().call()

    def fee_pool(self) -> int:
        return self.fn.fee_pool().call()


class OracleClient(_Bound):
    """Contract-callable inference (``contracts/Oracle.vy``): the spec an Oracle request's order
    names, taking a request with a signed bid, delivering a committed result, ending a failed one."""

    name = "Oracle"

    def spec(self, request_id: int) -> bytes:
        return bytes(self.fn.specs(request_id).call())

    def accept(self, bid: Any) -> Any:
        return self._send(self.fn.accept(bid.order_id, bid.price, bid.collateral, bid.expiry, bid.run_time,
                                         bytes.fromhex(bid.signature.removeprefix("0x"))))

    def fulfil(self, request_id: int, output: bytes) -> Any:
        return self._send(self.fn.fulfil(request_id, output))

    def cancel(self, request_id: int) -> Any:
        return self._send(self.fn.cancel(request_id))


ATTENTION_JUDGES = ("scores", "probs", "probsum", "vt", "context", "argmax", "append", "select_last")
GAME_STAGES = {0: "none", 1: "bisecting", 2: "located", 3: "settled", 4: "descending", 5: "chunk", 6: "judging"}


@dataclass(frozen=True)
class GameInfo:
    challenger: str
    bond: int
    root: bytes
    size: int
    agree: int
    differ: int
    query: int
    provider_value: bytes
    challenger_value: bytes
    revealed: int
    deadline: int
    stage: int
    agreed: bytes = b""
    provider_at: bytes = b""
    challenger_at: bytes = b""
    desc_hash: bytes = b""
    provider_node: bytes = b""
    challenger_node: bytes = b""
    provider_left: bytes = b""
    provider_right: bytes = b""
    challenger_left: bytes = b""
    challenger_right: bytes = b""
    chunks: int = 0
    level: int = 0
    index: int = 0
    element: int = 0
    provider_element: int = 0
    challenger_element: int = 0
    provider_root: bytes = b""
    prog_root: bytes = b""
    prog_len: int = 0
    offset: int = 0  # inside a step: the index of its first record in the order's trace
    fine: bool = False  # the game is inside a step's op-level trace
    provider_sub: bytes = b""
    challenger_sub: bytes = b""

    @property
    def stage_name(self) -> str:
        return GAME_STAGES.get(self.stage, str(self.stage))


class DisputesClient(_Bound):
    name = "Disputes"

    def __init__(self, chain: Chain, address: str, token: TokenClient) -> None:
        super().__init__(chain, address)
        self.token = token

    def challenge(self, order_id: int, root: bytes) -> Any:
        """Approve the bond (priced by what the game holds up) and challenge a committed result
        with your own trace root."""
        self.token.approve(self.address, self.bond_for(order_id))
        return self._send(self.fn.challenge(order_id, root))

    def bond_for(self, order_id: int) -> int:
        return int(self.fn.bond_for(order_id).call())

    def reveal(self, order_id: int, chain_value: bytes, proof: list[bytes]) -> Any:
        return self._send(self.fn.reveal(order_id, chain_value, proof))

    def prove_output_fault(self, order_id: int, fault: Any) -> Any:
        """Overturn a result whose output root is not its trace's (``verify.outputs.find_fault``), on
        the OutputFaults contract this Disputes contract settles for."""
        faults = self.chain.contract("OutputFaults", self.fn.output_faults().call())
        return self._send(faults.functions.prove_output_fault(*fault.args(order_id)))

    def outputs(self) -> "OutputFaultsClient":
        """The OutputFaults contract this Disputes contract settles for (output faults and the
        output data's availability)."""
        return OutputFaultsClient(self.chain, self.fn.output_faults().call(), self.token)

    def open_step(self, order_id: int, *args: Any) -> Any:
        """Open the located coarse record's step (``verify.levels``): its op-level trace's root, tied
        to the record and to the agreed chain value before the step."""
        return self._send(self.fn.open_step(order_id, *args))

    def timeout(self, order_id: int) -> Any:
        return self._send(self.fn.timeout(order_id))

    def open_record(self, order_id: int, desc: tuple, desc_proof: list[bytes], chunk_root: bytes) -> Any:
        return self._send(self.fn.open_record(order_id, desc, desc_proof, chunk_root))

    def descend(self, order_id: int, left: bytes, right: bytes) -> Any:
        return self._send(self.fn.descend(order_id, left, right))

    def reveal_chunk(self, order_id: int, desc: tuple, chunk: bytes, other: bytes = b"") -> Any:
        return self._send(self.fn.reveal_chunk(order_id, desc, chunk, other))

    def revealed_chunk(self, order_id: int, index: int) -> bytes:
        """The chunk the challenger revealed (from its ChunkRevealed event)."""
        logs = self.contract.events.ChunkRevealed().get_logs(from_block=0, argument_filters={"order_id": order_id})
        hits = [e for e in logs if int(e["args"]["index"]) == index]
        if not hits:
            raise ChainError(f"no chunk {index} was revealed in the dispute over order {order_id}")
        return bytes(hits[-1]["args"]["chunk"])

    def judge(self, referees: tuple[str, ...], kind: str, order_id: int, *args: Any) -> Any:
        """Call ``judge_<kind>`` (anyone may) with the element's proven inputs, on the Referee or,
        for the attention ops, the AttentionReferee; a training record (``kind`` "train") goes to
        the TrainReferee's one ``judge``, a tiny-GPT or fine-tuning step's record ("train_norm",
        "train_attention", "finetune") to the TrainNormReferee's, TrainAttentionReferee's or
        FinetuneReferee's, and a Llama-family record ("llama" or "llama_attention") to the
        LlamaReferee's or LlamaAttentionReferee's (``referees``: the eight addresses, as
        ``Deployment.referees``)."""
        one_judge = {"train": ("TrainReferee", 2), "llama": ("LlamaReferee", 3),
                     "llama_attention": ("LlamaAttentionReferee", 4), "train_norm": ("TrainNormReferee", 5),
                     "train_attention": ("TrainAttentionReferee", 6), "finetune": ("FinetuneReferee", 7)}
        if kind in one_judge:
            name, at = one_judge[kind]
            ref = self.chain.contract(name, referees[at])
            return self._send(ref.functions.judge(order_id, *args))
        attention = kind in ATTENTION_JUDGES
        ref = self.chain.contract("AttentionReferee" if attention else "Referee", referees[attention])
        return self._send(getattr(ref.functions, f"judge_{kind}")(order_id, *args))

    def game(self, order_id: int) -> GameInfo:
        return GameInfo(*self.fn.games(order_id).call())


@dataclass(frozen=True)
class ChunkAsk:
    """An output chunk asked for (``OutputFaults.ChunkRequested``)."""

    order_id: int
    asker: str
    output: int
    chunk: int
    deadline: int


class OutputFaultsClient(_Bound):
    """Output data availability: ask for a chunk of a committed output (with a bond), serve one
    with its proofs (``verify.available.serve_args``), or settle one nobody served in time."""

    name = "OutputFaults"

    def __init__(self, chain: Chain, address: str, token: TokenClient) -> None:
        super().__init__(chain, address)
        self.token = token

    def request_bond(self, order_id: int) -> int:
        return int(self.fn.request_bond(order_id).call())

    def request_chunk(self, order_id: int, output: int, chunk: int) -> Any:
        self.token.approve(self.address, self.request_bond(order_id))
        return self._send(self.fn.request_chunk(order_id, output, chunk))

    def was_served(self, order_id: int, output: int, chunk: int) -> bool:
        key = Web3.keccak(encode(["uint256", "uint256", "uint256"], [order_id, output, chunk]))
        return bool(self.fn.served(key).call())

    def serve_chunk(self, order_id: int, output: int, chunk: int, served: Any) -> Any:
        return self._send(self.fn.serve_chunk(*served.args(order_id, output, chunk)))

    def claim_unserved(self, order_id: int, output: int, chunk: int) -> Any:
        return self._send(self.fn.claim_unserved(order_id, output, chunk))

    def open_request(self, order_id: int, output: int, chunk: int) -> ChunkAsk | None:
        """The open request for that chunk, or None (never asked, served or settled)."""
        key = Web3.keccak(encode(["uint256", "uint256", "uint256"], [order_id, output, chunk]))
        asker, deadline, _ = self.fn.requests(key).call()
        if int(asker, 16) == 0:
            return None
        return ChunkAsk(order_id, asker, output, chunk, int(deadline))

    def asked(self, from_block: int = 0, to_block: Any = "latest") -> list[ChunkAsk]:
        """Chunks asked for in blocks ``from_block`` to ``to_block``."""
        logs = self.contract.events.ChunkRequested().get_logs(from_block=from_block, to_block=to_block)
        return [ChunkAsk(int(e["args"]["order_id"]), e["args"]["asker"], int(e["args"]["output"]),
                         int(e["args"]["chunk"]), int(e["args"]["deadline"])) for e in logs]

    def served(self, order_id: int) -> dict[tuple[int, int], bytes]:
        """The chunks served for an order: (output, chunk) -> its bytes (empty: the request named
        no chunk)."""
        logs = self.contract.events.ChunkServed().get_logs(from_block=0, argument_filters={"order_id": order_id})
        return {(int(e["args"]["output"]), int(e["args"]["chunk"])): bytes(e["args"]["data"]) for e in logs}
