"""EIP-712 bids: providers sign them off-chain; the Market contract checks them byte for byte.

The typed data is ``Bid(uint256 orderId,address provider,uint256 price,uint256 collateral,
uint256 expiry)`` in the domain ``("Veracity Market", "1", chainId, market address)``.
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
    ]
}


class Bid(BaseModel):
    """A provider's offer for one order; ``signature`` is 65 bytes hex (r, s, v)."""

    order_id: int = Field(ge=1)
    provider: str
    price: int = Field(ge=0)
    collateral: int = Field(ge=0)
    expiry: int = Field(ge=0)
    signature: str = ""


def _typed(bid: Bid, chain_id: int, market: str) -> dict:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **BID_TYPES,
        },
        "primaryType": "Bid",
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
                   "verifyingContract": Web3.to_checksum_address(market)},
        "message": {"orderId": bid.order_id, "provider": Web3.to_checksum_address(bid.provider),
                    "price": bid.price, "collateral": bid.collateral, "expiry": bid.expiry},
    }


def bid_digest(bid: Bid, chain_id: int, market: str) -> bytes:
    """The 32-byte EIP-712 digest (what the contract's ``bid_digest`` returns)."""
    from eth_account.messages import _hash_eip191_message

    return bytes(_hash_eip191_message(encode_typed_data(full_message=_typed(bid, chain_id, market))))


def sign_bid(bid: Bid, private_key: str, chain_id: int, market: str) -> Bid:
    signed = Account.sign_message(encode_typed_data(full_message=_typed(bid, chain_id, market)), private_key)
    return bid.model_copy(update={"signature": "0x" + bytes(signed.signature).hex()})


def bid_signer(bid: Bid, chain_id: int, market: str) -> str:
    """The address that signed ``bid`` (compare it with ``bid.provider``)."""
    return Account.recover_message(encode_typed_data(full_message=_typed(bid, chain_id, market)),
                                   signature=bytes.fromhex(bid.signature.removeprefix("0x")))
