"""Receipts for requests served under a standing lease, as pure functions.

A standing lease is an order opened with no spec (``Market.open_order`` with ``spec_cid`` zero):
the provider serves requests as they come, before anything is on-chain, and the lease's client
later posts the window it served (``Market.post_window``: the window's spec, whose inputs are the
requests in order, and its program), which the provider commits like any result. So a request
never waits for a block, and every answer is still committed, checked by validators and
disputable.

A request is line ``index`` of the window's inputs JSONL (its item as one JSON line); its answer
is line ``index`` of the window's output JSONL (the item's fields plus ``"output"``, as every
``infer`` job writes it). The client signs each request (so a provider serves only its lease's
client); the provider signs each answer's receipt (so it is bound to it before the commitment
exists). Both sign an EIP-191 message over the Market's address, the chain, the order and the
index, so a signature is good for one lease on one deployment only.
"""

from __future__ import annotations

import json
from typing import Any

import coincurve
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict

from veracity.errors import SignatureError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def input_line(item: dict[str, Any]) -> str:
    """A request's line in the window's inputs JSONL."""
    return json.dumps(item) + "\n"


def output_line(item: dict[str, Any], shown: Any) -> str:
    """An answer's line in the window's output JSONL (``workloads.infer.output_lines``)."""
    return json.dumps({**item, "output": shown}) + "\n"


def line_hash(line: str) -> str:
    return "0x" + keccak(line.encode("utf-8")).hex()


def _digest(kind: bytes, chain_id: int, market: str, order_id: int, index: int, *hashes: str) -> bytes:
    """The EIP-191 hash ("\\x19Ethereum Signed Message:\\n32" + keccak(body)) a party signs."""
    body = encode(["bytes32", "uint256", "address", "uint256", "uint256", *["bytes32"] * len(hashes)],
                  [keccak(kind), chain_id, to_checksum_address(market), order_id, index,
                   *(bytes.fromhex(h[2:]) for h in hashes)])
    return keccak(b"\x19Ethereum Signed Message:\n32" + keccak(body))


def _sign(key: str, digest: bytes) -> str:
    """A standard 65-byte Ethereum signature (r, s, v = 27 + recovery id), by libsecp256k1:
    tens of microseconds, where eth-account's pure-Python path takes milliseconds per request."""
    sig = coincurve.PrivateKey(bytes.fromhex(key.removeprefix("0x"))).sign_recoverable(digest, hasher=None)
    return "0x" + (sig[:64] + bytes([sig[64] + 27])).hex()


def _signer(signature: str, digest: bytes) -> str:
    """The address that signed ``digest``. Only the canonical form is accepted (EIP-2, as
    ``ecrecover`` callers such as snekmate's ``ecdsa`` require): every ECDSA signature (r, s) has a
    twin (r, n - s) with the other recovery id that recovers the same signer, so accepting both
    would give one answer two receipts. libsecp256k1 always signs with s <= n/2."""
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        raise SignatureError("the signature is not hex: it must be 65 bytes (r, s, v) as 0x-prefixed hex") from None
    if len(raw) != 65:
        raise SignatureError(f"the signature is {len(raw)} bytes, not 65 (r, s, v)")
    r, s, v = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]
    if v not in (27, 28):
        raise SignatureError(f"the signature's v is {v}, not 27 or 28")
    if not 0 < r < SECP256K1_N or not 0 < s < SECP256K1_N:
        raise SignatureError("the signature's r or s is outside 1..secp256k1n-1")
    if s > SECP256K1_N // 2:
        raise SignatureError(f"the signature is malleable (high s): s = {hex(s)} is above secp256k1n/2; "
                             "only the low-s form (EIP-2) is accepted: sign again with a standard signer")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(raw[:64] + bytes([v - 27]), digest, hasher=None)
    except ValueError:  # coincurve: "failed to recover ECDSA public key" (no point has this r)
        raise SignatureError("the signature recovers no public key (r is not a point on secp256k1)") from None
    return to_checksum_address(keccak(pub.format(compressed=False)[1:])[-20:])


def sign_request(key: str, chain_id: int, market: str, order_id: int, index: int, input_hash: str) -> str:
    """The lease client's signature on request ``index`` (its input line's hash)."""
    return _sign(key, _digest(b"request", chain_id, market, order_id, index, input_hash))


def request_signer(signature: str, chain_id: int, market: str, order_id: int, index: int, input_hash: str) -> str:
    return _signer(signature, _digest(b"request", chain_id, market, order_id, index, input_hash))


class Receipt(BaseModel):
    """What a caller keeps for one answer: which lease and request it was, the hashes of its input
    and output lines, the provider's signature over them, and, once the window is committed on
    chain, that commitment (``window``: the spec, output and trace CIDs and roots)."""

    model_config = ConfigDict(extra="forbid")
    chain_id: int
    market: str
    lease: int  # the standing order's id
    index: int  # the request's line in the window
    input_hash: str
    output_hash: str
    provider: str
    signature: str  # the provider's
    window: dict[str, Any] | None = None

    def signer(self) -> str:
        return _signer(self.signature, _digest(b"receipt", self.chain_id, self.market, self.lease, self.index,
                                               self.input_hash, self.output_hash))


def sign_receipt(key: str, chain_id: int, market: str, lease: int, index: int, input_hash: str,
                 output_hash: str) -> Receipt:
    sig = _sign(key, _digest(b"receipt", chain_id, market, lease, index, input_hash, output_hash))
    sk = coincurve.PrivateKey(bytes.fromhex(key.removeprefix("0x")))
    provider = to_checksum_address(keccak(sk.public_key.format(compressed=False)[1:])[-20:])
    return Receipt(chain_id=chain_id, market=market, lease=lease, index=index, input_hash=input_hash,
                   output_hash=output_hash, provider=provider, signature=sig)
