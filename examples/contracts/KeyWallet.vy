# pragma version ~=0.4.3
"""
@title KeyWallet
@notice An example ERC-1271 contract wallet for an agent: it holds the agent's earnings and
        accepts as its own signature whatever its key signed. To make it an agent's wallet on
        the AgentRegistry, the key signs the wallet's consent (`veracity.agents.identity`) and
        the registry asks this contract, through `isValidSignature`, whether that is its
        signature. A contract wallet is how a team or a multisig can be paid for an agent; this
        one has a single key to stay small.
"""

from snekmate.utils import ecdsa

MAGIC: constant(bytes4) = 0x1626BA7E  # ERC-1271: "this is my signature"

key: public(immutable(address))


@deploy
def __init__(key_: address):
    key = key_


@external
@view
def isValidSignature(digest: bytes32, signature: Bytes[65]) -> bytes4:
    """
    @notice ERC-1271: whether `signature` over `digest` is this wallet's (its key signed it).
    @param digest The signed digest.
    @param signature The key's signature (65 bytes r, s, v).
    @return MAGIC when it is, 0xffffffff when not.
    """
    if len(signature) == 65 and ecdsa._recover_sig(digest, signature) == key:
        return MAGIC
    return 0xFFFFFFFF
