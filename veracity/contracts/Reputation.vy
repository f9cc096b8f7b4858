# pragma version ~=0.4.3
"""
@title Veracity Reputation
@notice Client feedback on agents, after the draft ERC-8004's reputation registry. Any account
        but the agent's own gives feedback (`giveFeedback`): a signed fixed-point value (int128
        `value` with `valueDecimals` from 0 to 18: 87 and 0 is 87, 9977 and 2 is 99.77), up to
        two short tags ("starred", "uptime", a model's name...), the endpoint it used, and a URI
        to an off-chain file with its hash (both only in the event). Each client's feedback on an
        agent is numbered from 1; only its author revokes it (`revokeFeedback`), and anyone may
        append a response to it (`appendResponse`: the agent showing a refund, a spam tagger).

        An agent's owner, the operators it approved, and its wallet cannot rate it: they are the
        agent. A fresh address can still (a sybil is free), which is why `getSummary` takes the
        clients to count, as ERC-8004 advises: a reader counts only reviewers it trusts.

        Summaries are on chain for contracts to use. Running totals (count and sum, every value
        scaled to 18 decimals) are kept per agent, per agent and tag1, per agent and tag2, and
        per agent and tag pair, so `getSummary` without a client list, and `getTotals`, are a
        few storage reads whatever the agent's history. With a client list it adds up those
        clients' entries (each client gives an agent at most MAX_PER_CLIENT entries, so the
        read is bounded). The average comes back as ERC-8004 returns it, a value and its
        decimals: 18 decimals while it fits an int128, fewer (truncated toward zero) when not.

        Where this differs from ERC-8004: the agent's wallet is also refused as a reviewer;
        `getClients` returns clients a page of MAX_PAGE at a time (`clientCount` says how many);
        `readAllFeedback` is left out (read `NewFeedback` events, or `readFeedback` per index);
        `getResponseCount` counts one feedback entry's responses (not whole clients' or agents').
"""

from interfaces import IAgentRegistry

MAX_TAG: constant(uint256) = 32
MAX_URI: constant(uint256) = 256
MAX_DECIMALS: constant(uint8) = 18
MAX_PER_CLIENT: constant(uint64) = 1024  # feedback entries one client gives one agent
MAX_FILTER: constant(uint256) = 32  # clients (or responders) one read filters by
MAX_PAGE: constant(uint256) = 100


struct Feedback:
    value: int128
    valueDecimals: uint8
    tag1: String[MAX_TAG]
    tag2: String[MAX_TAG]
    isRevoked: bool


event NewFeedback:
    agentId: indexed(uint256)
    clientAddress: indexed(address)
    feedbackIndex: uint64
    value: int128
    valueDecimals: uint8
    indexedTag1: indexed(String[MAX_TAG])
    tag1: String[MAX_TAG]
    tag2: String[MAX_TAG]
    endpoint: String[MAX_URI]
    feedbackURI: String[MAX_URI]
    feedbackHash: bytes32

event FeedbackRevoked:
    agentId: indexed(uint256)
    clientAddress: indexed(address)
    feedbackIndex: indexed(uint64)

event ResponseAppended:
    agentId: indexed(uint256)
    clientAddress: indexed(address)
    feedbackIndex: uint64
    responder: indexed(address)
    responseURI: String[MAX_URI]
    responseHash: bytes32


identityRegistry: immutable(IAgentRegistry)
clientCount: public(HashMap[uint256, uint256])
_feedback: HashMap[uint256, HashMap[address, HashMap[uint64, Feedback]]]
_last_index: HashMap[uint256, HashMap[address, uint64]]
_clients: HashMap[uint256, HashMap[uint256, address]]
_count: HashMap[bytes32, uint64]  # a running total's key -> non-revoked entries
_sum: HashMap[bytes32, int256]  # a running total's key -> their values' sum at 18 decimals
_responses: HashMap[uint256, HashMap[address, HashMap[uint64, HashMap[address, uint64]]]]
_response_total: HashMap[uint256, HashMap[address, HashMap[uint64, uint64]]]


@deploy
def __init__(identity_registry: IAgentRegistry):
    identityRegistry = identity_registry


@internal
@pure
def _key(agent_id: uint256, tag1: String[MAX_TAG], tag2: String[MAX_TAG]) -> bytes32:
    """A running total's key: the agent and the tag filter ("" is any tag)."""
    return keccak256(abi_encode(agent_id, tag1, tag2))


@internal
@pure
def _keys(agent_id: uint256, tag1: String[MAX_TAG], tag2: String[MAX_TAG]) -> DynArray[bytes32, 4]:
    """Every running total an entry with these tags counts in."""
    keys: DynArray[bytes32, 4] = [self._key(agent_id, "", "")]
    if len(tag1) != 0:
        keys.append(self._key(agent_id, tag1, ""))
    if len(tag2) != 0:
        keys.append(self._key(agent_id, "", tag2))
    if len(tag1) != 0 and len(tag2) != 0:
        keys.append(self._key(agent_id, tag1, tag2))
    return keys


@internal
@pure
def _scaled(v: int128, decimals: uint8) -> int256:
    """The value at 18 decimals (exact: at most 2**127 * 10**18, far inside an int256)."""
    return convert(v, int256) * convert(10 ** convert(MAX_DECIMALS - decimals, uint256), int256)


@internal
@pure
def _fit(wad: int256) -> (int128, uint8):
    """An 18-decimal value as (value, decimals) in an int128, dropping decimals until it fits."""
    v: int256 = wad
    decimals: uint8 = MAX_DECIMALS
    for _: uint256 in range(18):
        if v <= convert(max_value(int128), int256) and v >= convert(min_value(int128), int256):
            break
        v = v // 10  # truncates toward zero, as the EVM's sdiv does
        decimals -= 1
    return convert(v, int128), decimals


@internal
@pure
def _matches(f: Feedback, tag1: String[MAX_TAG], tag2: String[MAX_TAG]) -> bool:
    if f.isRevoked:
        return False
    if len(tag1) != 0 and keccak256(tag1) != keccak256(f.tag1):
        return False
    return len(tag2) == 0 or keccak256(tag2) == keccak256(f.tag2)


@internal
@view
def _owner_of(agent_id: uint256) -> address:
    """The agent's owner; a clear revert for an agent the identity registry does not know."""
    ok: bool = False
    out: Bytes[32] = b""
    ok, out = raw_call(identityRegistry.address, abi_encode(agent_id, method_id=method_id("ownerOf(uint256)")),
                       max_outsize=32, is_static_call=True, revert_on_failure=False)
    assert ok and len(out) == 32, "reputation: no such agent"
    return abi_decode(out, address)


@internal
@view
def _is_insider(agent_id: uint256, who: address) -> bool:
    """The agent's owner, an operator it approved, or its wallet: the agent itself."""
    owner: address = self._owner_of(agent_id)
    return (who == owner or staticcall identityRegistry.isApprovedForAll(owner, who)
            or staticcall identityRegistry.getApproved(agent_id) == who
            or staticcall identityRegistry.getAgentWallet(agent_id) == who)


@internal
def _add(agent_id: uint256, f: Feedback, sign: int256):
    """Count the entry in (sign 1) or out of (sign -1) every running total it belongs to."""
    amount: int256 = sign * self._scaled(f.value, f.valueDecimals)
    keys: DynArray[bytes32, 4] = self._keys(agent_id, f.tag1, f.tag2)
    for k: bytes32 in keys:
        self._sum[k] += amount
        if sign > 0:
            self._count[k] += 1
        else:
            self._count[k] -= 1


@external
def giveFeedback(agentId: uint256, score: int128, valueDecimals: uint8, tag1: String[MAX_TAG],
                 tag2: String[MAX_TAG], endpoint: String[MAX_URI], feedbackURI: String[MAX_URI],
                 feedbackHash: bytes32) -> uint64:
    """
    @notice Give feedback on an agent, as its client.
    @param agentId The agent's id.
    @param score The signed fixed-point value (ERC-8004's `value`).
    @param valueDecimals Its decimals (0 to 18).
    @param tag1 A first tag ("" for none).
    @param tag2 A second tag ("" for none).
    @param endpoint The agent's endpoint the feedback is about ("" for none).
    @param feedbackURI An off-chain file with the details ("" for none).
    @param feedbackHash The file's keccak-256 (zero for none; not needed for a content address).
    @return The entry's index among this client's feedback on the agent (from 1).
    """
    assert valueDecimals <= MAX_DECIMALS, "reputation: valueDecimals is at most 18"
    assert not self._is_insider(agentId, msg.sender), \
        "reputation: an agent's owner, its operators and its wallet cannot rate it"
    index: uint64 = self._last_index[agentId][msg.sender] + 1
    assert index <= MAX_PER_CLIENT, "reputation: a client gives one agent at most 1024 feedback entries"
    f: Feedback = Feedback(value=score, valueDecimals=valueDecimals, tag1=tag1, tag2=tag2, isRevoked=False)
    self._feedback[agentId][msg.sender][index] = f
    self._last_index[agentId][msg.sender] = index
    if index == 1:
        n: uint256 = self.clientCount[agentId]
        self._clients[agentId][n] = msg.sender
        self.clientCount[agentId] = n + 1
    self._add(agentId, f, 1)
    log NewFeedback(agentId=agentId, clientAddress=msg.sender, feedbackIndex=index, value=score,
                    valueDecimals=valueDecimals, indexedTag1=tag1, tag1=tag1, tag2=tag2, endpoint=endpoint,
                    feedbackURI=feedbackURI, feedbackHash=feedbackHash)
    return index


@external
def revokeFeedback(agentId: uint256, feedbackIndex: uint64):
    """
    @notice Revoke one of the caller's own feedback entries: it leaves every summary.
    @param agentId The agent's id.
    @param feedbackIndex The entry's index among the caller's feedback on the agent.
    """
    assert feedbackIndex >= 1 and feedbackIndex <= self._last_index[agentId][msg.sender], \
        "reputation: no such feedback from the caller (only its author revokes an entry)"
    f: Feedback = self._feedback[agentId][msg.sender][feedbackIndex]
    assert not f.isRevoked, "reputation: the feedback is already revoked"
    self._feedback[agentId][msg.sender][feedbackIndex].isRevoked = True
    self._add(agentId, f, -1)
    log FeedbackRevoked(agentId=agentId, clientAddress=msg.sender, feedbackIndex=feedbackIndex)


@external
def appendResponse(agentId: uint256, clientAddress: address, feedbackIndex: uint64, responseURI: String[MAX_URI],
                   responseHash: bytes32):
    """
    @notice Append a response to a feedback entry (anyone: the agent showing a refund, a spam
            tagger). It changes no summary; readers decide whom to listen to.
    @param agentId The agent's id.
    @param clientAddress The entry's author.
    @param feedbackIndex The entry's index.
    @param responseURI The response's file.
    @param responseHash The file's keccak-256 (zero for a content address).
    """
    assert feedbackIndex >= 1 and feedbackIndex <= self._last_index[agentId][clientAddress], \
        "reputation: no such feedback"
    assert len(responseURI) != 0, "reputation: a response needs a URI"
    self._responses[agentId][clientAddress][feedbackIndex][msg.sender] += 1
    self._response_total[agentId][clientAddress][feedbackIndex] += 1
    log ResponseAppended(agentId=agentId, clientAddress=clientAddress, feedbackIndex=feedbackIndex,
                         responder=msg.sender, responseURI=responseURI, responseHash=responseHash)


@external
@view
def getIdentityRegistry() -> address:
    """
    @notice The identity registry whose agents this one rates.
    @return Its address.
    """
    return identityRegistry.address


@external
@view
def getLastIndex(agentId: uint256, clientAddress: address) -> uint64:
    """
    @notice How many feedback entries the client gave the agent (revoked ones included).
    @param agentId The agent's id.
    @param clientAddress The client.
    @return The last index (0 for none).
    """
    return self._last_index[agentId][clientAddress]


@external
@view
def readFeedback(agentId: uint256, clientAddress: address, feedbackIndex: uint64) -> (
        int128, uint8, String[MAX_TAG], String[MAX_TAG], bool):
    """
    @notice One feedback entry.
    @param agentId The agent's id.
    @param clientAddress Its author.
    @param feedbackIndex Its index.
    @return (value, valueDecimals, tag1, tag2, isRevoked).
    """
    assert feedbackIndex >= 1 and feedbackIndex <= self._last_index[agentId][clientAddress], \
        "reputation: no such feedback"
    f: Feedback = self._feedback[agentId][clientAddress][feedbackIndex]
    return f.value, f.valueDecimals, f.tag1, f.tag2, f.isRevoked


@internal
@view
def _client_totals(agent_id: uint256, client: address, tag1: String[MAX_TAG], tag2: String[MAX_TAG]) -> (
        uint64, int256):
    count: uint64 = 0
    total: int256 = 0
    for i: uint64 in range(1, self._last_index[agent_id][client] + 1, bound=MAX_PER_CLIENT):
        f: Feedback = self._feedback[agent_id][client][i]
        if self._matches(f, tag1, tag2):
            count += 1
            total += self._scaled(f.value, f.valueDecimals)
    return count, total


@internal
@pure
def _listed_before(items: DynArray[address, MAX_FILTER], i: uint256) -> bool:
    """Whether items[i] is also at an earlier place: a client listed twice counts once."""
    for j: uint256 in range(i, bound=MAX_FILTER):
        if items[j] == items[i]:
            return True
    return False


@internal
@view
def _totals(agent_id: uint256, clients: DynArray[address, MAX_FILTER], tag1: String[MAX_TAG],
            tag2: String[MAX_TAG]) -> (uint64, int256):
    if len(clients) == 0:
        k: bytes32 = self._key(agent_id, tag1, tag2)
        return self._count[k], self._sum[k]
    count: uint64 = 0
    total: int256 = 0
    for i: uint256 in range(len(clients), bound=MAX_FILTER):
        if self._listed_before(clients, i):
            continue
        c: uint64 = 0
        s: int256 = 0
        c, s = self._client_totals(agent_id, clients[i], tag1, tag2)
        count += c
        total += s
    return count, total


@external
@view
def getTotals(agentId: uint256, clientAddresses: DynArray[address, MAX_FILTER], tag1: String[MAX_TAG],
              tag2: String[MAX_TAG]) -> (uint64, int256):
    """
    @notice Count and sum of the agent's non-revoked feedback, every value at 18 decimals.
    @param agentId The agent's id.
    @param clientAddresses Count only these clients' feedback (empty: everyone's).
    @param tag1 Only entries with this tag1 ("" for any).
    @param tag2 Only entries with this tag2 ("" for any).
    @return (count, sum at 18 decimals).
    """
    return self._totals(agentId, clientAddresses, tag1, tag2)


@external
@view
def getSummary(agentId: uint256, clientAddresses: DynArray[address, MAX_FILTER], tag1: String[MAX_TAG],
               tag2: String[MAX_TAG]) -> (uint64, int128, uint8):
    """
    @notice Count and average of the agent's non-revoked feedback (ERC-8004's summary).
    @param agentId The agent's id.
    @param clientAddresses Count only these clients' feedback (empty: everyone's, sybils too).
    @param tag1 Only entries with this tag1 ("" for any).
    @param tag2 Only entries with this tag2 ("" for any).
    @return (count, average value, its decimals); (0, 0, 0) for none.
    """
    count: uint64 = 0
    total: int256 = 0
    count, total = self._totals(agentId, clientAddresses, tag1, tag2)
    if count == 0:
        return 0, 0, 0
    value: int128 = 0
    decimals: uint8 = 0
    value, decimals = self._fit(total // convert(count, int256))
    return count, value, decimals


@external
@view
def getClients(agentId: uint256, start: uint256 = 0) -> DynArray[address, MAX_PAGE]:
    """
    @notice The clients that gave the agent feedback, in order of their first entry, a page at a time.
    @param agentId The agent's id.
    @param start The first client's position (0 first; `clientCount` says how many there are).
    @return Up to MAX_PAGE clients from `start`.
    """
    out: DynArray[address, MAX_PAGE] = []
    n: uint256 = self.clientCount[agentId]
    for i: uint256 in range(MAX_PAGE):
        if start + i >= n:
            break
        out.append(self._clients[agentId][start + i])
    return out


@external
@view
def getResponseCount(agentId: uint256, clientAddress: address, feedbackIndex: uint64,
                     responders: DynArray[address, MAX_FILTER]) -> uint64:
    """
    @notice How many responses a feedback entry has.
    @param agentId The agent's id.
    @param clientAddress The entry's author.
    @param feedbackIndex The entry's index.
    @param responders Count only these responders' (empty: everyone's).
    @return The count.
    """
    if len(responders) == 0:
        return self._response_total[agentId][clientAddress][feedbackIndex]
    count: uint64 = 0
    for i: uint256 in range(len(responders), bound=MAX_FILTER):
        if self._listed_before(responders, i):
            continue
        count += self._responses[agentId][clientAddress][feedbackIndex][responders[i]]
    return count
