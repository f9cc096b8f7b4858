# pragma version ~=0.4.3
"""
@title Veracity AgentRegistry
@notice Agent identities after the draft ERC-8004 ("Trustless Agents"), identity registry: every
        agent is an ERC-721 token (snekmate's audited module), so any NFT tool can list and
        move it. Anyone `register`s and gets the next id (from 1: 0 means "no agent") and owns
        it. The token's URI (ERC-8004's `agentURI`) points at the agent's registration file:
        JSON off chain with its name, description, endpoints, model, tools and price. Its owner
        (or an operator it approved, as ERC-721 allows) changes the URI (`setAgentURI`) and sets
        key/value metadata on chain (`setMetadata`), each change an event for indexers.

        The agent's wallet (the reserved metadata key "agentWallet": where it is paid, and the
        address it uses as a client) starts as its owner and is changed only with the new
        wallet's consent: an EIP-712 signature (or ERC-1271 for a contract wallet) of
        `AgentWalletSet(agentId, newWallet, owner, nonce, deadline)` in the domain
        ("Veracity AgentRegistry", "1", chainId, this contract). The agent's id, the chain and
        this contract bind it to one agent of one registry; the owner and the per-agent nonce
        make it good for one use by one owner; the deadline (at most an hour away) bounds how
        long an unused consent lives. A transfer keeps the identity (id, URI, metadata, and in
        Reputation and Validation its history) but clears the wallet: the new owner proves its
        own.

        Where this differs from the ERC-8004 reference: the signed struct has a nonce (the
        reference's has none, so within its deadline a consent could be replayed, e.g. after a
        transfer away and back); the deadline may be an hour away (the reference's five
        minutes is short for a hardware wallet on a busy chain); ids start at 1; `burn` is not
        exported, so an id and its history are never reused or orphaned; there is no admin and
        no upgrade. Names follow ERC-8004's ABI (camelCase) so its tools read this registry.
"""

from ethereum.ercs import IERC721
implements: IERC721

from interfaces import IAgentRegistry
implements: IAgentRegistry

from snekmate.auth import ownable as ow
from snekmate.tokens import erc721
from snekmate.utils import signature_checker

initializes: ow
initializes: erc721[ownable := ow]

exports: (
    erc721.supportsInterface, erc721.balanceOf, erc721.ownerOf, erc721.getApproved, erc721.isApprovedForAll,
    erc721.approve, erc721.setApprovalForAll, erc721.name, erc721.symbol, erc721.tokenURI, erc721.totalSupply,
    erc721.tokenByIndex, erc721.tokenOfOwnerByIndex, erc721.permit, erc721.nonces, erc721.DOMAIN_SEPARATOR,
    erc721.eip712Domain,
)

MAX_URI: constant(uint256) = 432  # snekmate's stored token URI (its tokenURI is at most 512 with no base URI)
MAX_KEY: constant(uint256) = 64
MAX_VALUE: constant(uint256) = 1024
MAX_ENTRIES: constant(uint256) = 16  # metadata entries in one `register`
MAX_DEADLINE_DELAY: constant(uint256) = 3600
WALLET_KEY: constant(String[11]) = "agentWallet"
WALLET_TYPEHASH: constant(bytes32) = keccak256(
    "AgentWalletSet(uint256 agentId,address newWallet,address owner,uint256 nonce,uint256 deadline)")


struct MetadataEntry:
    metadataKey: String[MAX_KEY]
    metadataValue: Bytes[MAX_VALUE]


event Registered:
    agentId: indexed(uint256)
    agentURI: String[MAX_URI]
    owner: indexed(address)

event URIUpdated:
    agentId: indexed(uint256)
    newURI: String[MAX_URI]
    updatedBy: indexed(address)

event MetadataSet:
    agentId: indexed(uint256)
    indexedMetadataKey: indexed(String[MAX_KEY])
    metadataKey: String[MAX_KEY]
    metadataValue: Bytes[MAX_VALUE]


walletNonces: public(HashMap[uint256, uint256])  # consents used per agent: the next one signs this value
_metadata: HashMap[uint256, HashMap[String[MAX_KEY], Bytes[MAX_VALUE]]]
_wallets: HashMap[uint256, address]
_last_id: uint256


@deploy
def __init__():
    ow.__init__()
    erc721.__init__("Veracity Agent", "AGENT", "", "Veracity AgentRegistry", "1")


@internal
@pure
def _is_wallet_key(key: String[MAX_KEY]) -> bool:
    return keccak256(key) == keccak256(WALLET_KEY)


@internal
@pure
def _packed(wallet: address) -> Bytes[MAX_VALUE]:
    """The wallet as ERC-8004 stores it under "agentWallet": its 20 bytes, or none when unset."""
    if wallet == empty(address):
        return b""
    return slice(concat(convert(wallet, bytes20), b""), 0, 20)


@internal
def _set_wallet(agent_id: uint256, wallet: address):
    self._wallets[agent_id] = wallet
    log MetadataSet(agentId=agent_id, indexedMetadataKey=WALLET_KEY, metadataKey=WALLET_KEY,
                    metadataValue=self._packed(wallet))


@internal
def _set_metadata(agent_id: uint256, key: String[MAX_KEY], val: Bytes[MAX_VALUE]):
    assert not self._is_wallet_key(key), "agents: the agentWallet key is set only by setAgentWallet"
    self._metadata[agent_id][key] = val
    log MetadataSet(agentId=agent_id, indexedMetadataKey=key, metadataKey=key, metadataValue=val)


@internal
def _check_manager(agent_id: uint256):
    """The caller is the agent's owner or an operator it approved (ERC-721 `approve` or
    `setApprovalForAll`); reverts for an agent that does not exist."""
    assert erc721._exists(agent_id), "agents: no such agent"
    assert erc721._is_approved_or_owner(msg.sender, agent_id), \
        "agents: only the agent's owner or an operator it approved can change it"


@internal
@view
def _wallet_digest(agent_id: uint256, new_wallet: address, owner: address, nonce: uint256,
                   deadline: uint256) -> bytes32:
    return erc721.eip712_domain_separator._hash_typed_data_v4(
        keccak256(abi_encode(WALLET_TYPEHASH, agent_id, new_wallet, owner, nonce, deadline)))


@external
def register(agentURI: String[MAX_URI] = "", metadata: DynArray[MetadataEntry, MAX_ENTRIES] = []) -> uint256:
    """
    @notice Register a new agent: the caller gets the next id as an ERC-721 token and is its
            owner and, until it sets another, its wallet. ERC-8004's three `register` forms.
    @param agentURI Where the agent's registration file is (may be set later by `setAgentURI`).
    @param metadata On-chain key/value entries to set at once (not "agentWallet").
    @return The new agent's id.
    """
    agent_id: uint256 = self._last_id + 1
    self._last_id = agent_id
    erc721._mint(msg.sender, agent_id)
    if len(agentURI) != 0:
        erc721._set_token_uri(agent_id, agentURI)
    log Registered(agentId=agent_id, agentURI=agentURI, owner=msg.sender)
    self._set_wallet(agent_id, msg.sender)
    for entry: MetadataEntry in metadata:
        self._set_metadata(agent_id, entry.metadataKey, entry.metadataValue)
    # last, once the agent is whole: a contract owner must accept the token (ERC-721 safe mint)
    assert erc721._check_on_erc721_received(empty(address), msg.sender, agent_id, b""), \
        "agents: the registering contract does not accept ERC-721 tokens"
    return agent_id


@external
def setAgentURI(agentId: uint256, newURI: String[MAX_URI]):
    """
    @notice Point the agent at a new registration file.
    @param agentId The agent's id.
    @param newURI The registration file's URI.
    """
    self._check_manager(agentId)
    erc721._set_token_uri(agentId, newURI)
    log URIUpdated(agentId=agentId, newURI=newURI, updatedBy=msg.sender)


@external
def setMetadata(agentId: uint256, metadataKey: String[MAX_KEY], metadataValue: Bytes[MAX_VALUE]):
    """
    @notice Set one on-chain metadata entry of the agent (an empty value clears it).
    @param agentId The agent's id.
    @param metadataKey The key (not "agentWallet": that one needs the wallet's signature).
    @param metadataValue The value.
    """
    self._check_manager(agentId)
    self._set_metadata(agentId, metadataKey, metadataValue)


@external
@view
def getMetadata(agentId: uint256, metadataKey: String[MAX_KEY]) -> Bytes[MAX_VALUE]:
    """
    @notice One on-chain metadata entry ("agentWallet": the wallet's 20 bytes).
    @param agentId The agent's id.
    @param metadataKey The key.
    @return The value, empty when unset.
    """
    if self._is_wallet_key(metadataKey):
        return self._packed(self._wallets[agentId])
    return self._metadata[agentId][metadataKey]


@external
@view
def getAgentWallet(agentId: uint256) -> address:
    """
    @notice The wallet the agent proved control of (zero after a transfer until re-proved).
    @param agentId The agent's id.
    @return The wallet.
    """
    assert erc721._exists(agentId), "agents: no such agent"
    return self._wallets[agentId]


@external
@view
def walletDigest(agentId: uint256, newWallet: address, owner: address, nonce: uint256, deadline: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a wallet signs to become the agent's wallet (what `setAgentWallet`
            checks with the agent's current owner and nonce).
    @param agentId The agent's id.
    @param newWallet The wallet.
    @param owner The agent's owner the consent is for.
    @param nonce The agent's wallet nonce the consent uses.
    @param deadline The last second the consent is good for.
    @return The digest.
    """
    return self._wallet_digest(agentId, newWallet, owner, nonce, deadline)


@external
def setAgentWallet(agentId: uint256, newWallet: address, deadline: uint256, signature: Bytes[65]):
    """
    @notice Make `newWallet` the agent's wallet, with its signature of the consent
            `AgentWalletSet(agentId, newWallet, owner, nonce, deadline)` (EIP-712; ERC-1271 for
            a contract wallet). Called by the agent's owner or an operator.
    @param agentId The agent's id.
    @param newWallet The wallet.
    @param deadline The consent's deadline (unix time, at most an hour away).
    @param signature The wallet's signature (65 bytes, or 64 in the EIP-2098 short form).
    """
    self._check_manager(agentId)
    assert newWallet != empty(address), "agents: the wallet cannot be the zero address"
    assert block.timestamp <= deadline, "agents: the wallet's consent has expired"
    assert deadline <= block.timestamp + MAX_DEADLINE_DELAY, "agents: the consent's deadline is more than an hour away"
    nonce: uint256 = self.walletNonces[agentId]
    digest: bytes32 = self._wallet_digest(agentId, newWallet, erc721._owner_of(agentId), nonce, deadline)
    assert signature_checker._is_valid_signature_now(newWallet, digest, signature), \
        "agents: the signature is not the wallet's consent for this agent, owner and nonce"
    self.walletNonces[agentId] = nonce + 1
    self._set_wallet(agentId, newWallet)


@internal
def _before_transfer(owner: address, to: address, token_id: uint256):
    """A transfer to another owner clears the wallet: it consented to serve the old owner."""
    assert erc721._is_approved_or_owner(msg.sender, token_id), "agents: only the agent's owner or an operator can move it"
    if owner != to and self._wallets[token_id] != empty(address):
        self._set_wallet(token_id, empty(address))


@external
@payable
def transferFrom(owner: address, to: address, token_id: uint256):
    """
    @notice ERC-721 transfer; the agent keeps its id, URI, metadata and history; its wallet is cleared.
    @param owner The current owner.
    @param to The new owner.
    @param token_id The agent's id.
    """
    self._before_transfer(owner, to, token_id)
    erc721._transfer(owner, to, token_id)


@external
@payable
def safeTransferFrom(owner: address, to: address, token_id: uint256, data: Bytes[1_024] = b""):
    """
    @notice ERC-721 safe transfer (a contract receiver must accept it); as `transferFrom` otherwise.
    @param owner The current owner.
    @param to The new owner.
    @param token_id The agent's id.
    @param data Passed to the receiver's `onERC721Received`.
    """
    self._before_transfer(owner, to, token_id)
    erc721._safe_transfer(owner, to, token_id, data)
