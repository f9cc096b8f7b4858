"""An agent wallet's consent: the EIP-712 signature the AgentRegistry asks for before it makes an
address an agent's wallet.

A wallet signs ``AgentWalletSet(uint256 agentId,address newWallet,address owner,uint256 nonce,
uint256 deadline)`` in the domain ``("Veracity AgentRegistry", "1", chainId, registry address)``.
Every field is there to stop a replay: the agent's id (not another agent), the chain id and the
registry's address (not another chain or deployment), the agent's current owner (not after a
transfer), its wallet nonce (once only) and a deadline at most an hour away (an unused consent
does not live for ever). Pure functions: the caller reads the owner and nonce from the chain.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import keccak
from web3 import Web3

DOMAIN_NAME, DOMAIN_VERSION = "Veracity AgentRegistry", "1"
WALLET_TYPES = {
    "AgentWalletSet": [
        {"name": "agentId", "type": "uint256"},
        {"name": "newWallet", "type": "address"},
        {"name": "owner", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}


def wallet_consent(agent_id: int, wallet: str, owner: str, nonce: int, deadline: int, chain_id: int,
                   registry: str) -> SignableMessage:
    """The EIP-712 message by which ``wallet`` agrees to be agent ``agent_id``'s wallet."""
    return encode_typed_data(full_message={
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **WALLET_TYPES,
        },
        "primaryType": "AgentWalletSet",
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
                   "verifyingContract": Web3.to_checksum_address(registry)},
        "message": {"agentId": agent_id, "newWallet": Web3.to_checksum_address(wallet),
                    "owner": Web3.to_checksum_address(owner), "nonce": nonce, "deadline": deadline},
    })


def wallet_digest(agent_id: int, wallet: str, owner: str, nonce: int, deadline: int, chain_id: int,
                  registry: str) -> bytes:
    """The 32-byte digest the wallet signs (what the registry's ``walletDigest`` returns)."""
    msg = wallet_consent(agent_id, wallet, owner, nonce, deadline, chain_id, registry)
    return keccak(b"\x19" + msg.version + msg.header + msg.body)


def sign_wallet_consent(agent_id: int, owner: str, nonce: int, deadline: int, chain_id: int, registry: str,
                        wallet_key: str, wallet: str | None = None) -> bytes:
    """The 65-byte signature (r, s, v) with private key ``wallet_key`` of the consent of ``wallet``:
    the key's own address by default, or a contract wallet (ERC-1271) that accepts the key's
    signatures as its own."""
    wallet = wallet or Account.from_key(wallet_key).address
    msg = wallet_consent(agent_id, wallet, owner, nonce, deadline, chain_id, registry)
    return bytes(Account.sign_message(msg, wallet_key).signature)


def consent_signer(agent_id: int, wallet: str, owner: str, nonce: int, deadline: int, chain_id: int,
                   registry: str, signature: bytes) -> str:
    """The address that signed ``signature`` over this consent (compare it with ``wallet``)."""
    msg = wallet_consent(agent_id, wallet, owner, nonce, deadline, chain_id, registry)
    return Account.recover_message(msg, signature=signature)
