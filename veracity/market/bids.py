"""EIP-712 bids and windows: providers sign them off-chain; the Market checks them byte for byte.

A bid is ``Bid(uint256 orderId,address provider,uint256 price,uint256 collateral,uint256 expiry,
uint256 runTime)``: ``runTime`` is the seconds the provider needs to run and commit, and the
Market accepts the bid only while that still fits before the order's deadline. A standing lease's
window is ``Window(uint256 orderId,bytes32 specCid,bytes32 programRoot,uint256 programLength)``,
signed by the lease's provider once it has checked the window is what it served. Both live in the
domain ``("Veracity Market", "1", chainId, market address)``.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_typed_data
from pydantic import BaseModel, Field
from web3 import Web3

DOMAIN_NAME, DOMAIN_VERSION = "Veracity Market", "1"
BID_TYPES = {
    "Bid": [
        {"name": "orderId", "type": "uint256"},
        {"name": "provider", "type": "address"},
        {"name": "price", "type": "uint256"},
        {"name": "collateral", "type": "uint256"},
        {"name": "expiry", "type": "uint256"},
        {"name": "runTime", "type": "uint256"},
    ]
}
WINDOW_TYPES = {
    "Window": [
        {"name": "orderId", "type": "uint256"},
        {"name": "specCid", "type": "bytes32"},
        {"name": "programRoot", "type": "bytes32"},
        {"name": "programLength", "type": "uint256"},
    ]
}


class Bid(BaseModel):
    """A provider's offer for one order; ``signature`` is 65 bytes hex (r, s, v)."""

    order_id: int = Field(ge=1)
    provider: str
    price: int = Field(ge=0)
    collateral: int = Field(ge=0)
    expiry: int = Field(ge=0)
    run_time: int = Field(0, ge=0)  # seconds it needs to run and commit once accepted
    signature: str = ""


def _typed_data(types: dict, primary: str, message: dict, chain_id: int, market: str) -> dict:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **types,
        },
        "primaryType": primary,
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
                   "verifyingContract": Web3.to_checksum_address(market)},
        "message": message,
    }


def _typed(bid: Bid, chain_id: int, market: str) -> dict:
    return _typed_data(BID_TYPES, "Bid", {"orderId": bid.order_id, "provider": Web3.to_checksum_address(bid.provider),
                                          "price": bid.price, "collateral": bid.collateral, "expiry": bid.expiry,
                                          "runTime": bid.run_time}, chain_id, market)


def _window(order_id: int, spec_cid: bytes, program_root: bytes, program_length: int, chain_id: int,
            market: str) -> dict:
    return _typed_data(WINDOW_TYPES, "Window", {"orderId": order_id, "specCid": bytes(spec_cid),
                                                "programRoot": bytes(program_root),
                                                "programLength": program_length}, chain_id, market)


def sign_window(order_id: int, spec_cid: bytes, program_root: bytes, program_length: int, private_key: str,
                chain_id: int, market: str) -> str:
    """A lease provider's signature (hex) agreeing to the window ``post_window`` will fix."""
    msg = encode_typed_data(full_message=_window(order_id, spec_cid, program_root, program_length, chain_id, market))
    return "0x" + bytes(Account.sign_message(msg, private_key).signature).hex()


def window_signer(order_id: int, spec_cid: bytes, program_root: bytes, program_length: int, signature: str,
                  chain_id: int, market: str) -> str:
    msg = encode_typed_data(full_message=_window(order_id, spec_cid, program_root, program_length, chain_id, market))
    return Account.recover_message(msg, signature=bytes.fromhex(signature.removeprefix("0x")))


def bid_digest(bid: Bid, chain_id: int, market: str) -> bytes:
    """The 32-byte EIP-712 digest (what the contract's ``bid_digest`` returns)."""
    from eth_utils import keccak

    msg = encode_typed_data(full_message=_typed(bid, chain_id, market))  # EIP-191 version 0x01: "\x19\x01" || domain || struct
    return keccak(b"\x19" + msg.version + msg.header + msg.body)


def sign_bid(bid: Bid, private_key: str, chain_id: int, market: str) -> Bid:
    signed = Account.sign_message(encode_typed_data(full_message=_typed(bid, chain_id, market)), private_key)
    return bid.model_copy(update={"signature": "0x" + bytes(signed.signature).hex()})


def bid_signer(bid: Bid, chain_id: int, market: str) -> str:
    """The address that signed ``bid`` (compare it with ``bid.provider``)."""
    return Account.recover_message(encode_typed_data(full_message=_typed(bid, chain_id, market)),
                                   signature=bytes.fromhex(bid.signature.removeprefix("0x")))
