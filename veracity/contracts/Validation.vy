# pragma version ~=0.4.3
"""
@title Veracity Validation
@notice Independent checks of an agent's work, after the draft ERC-8004's validation registry.
        An agent's owner (or an operator it approved) asks a named validator to check a piece of
        work (`validationRequest`): the request's URI holds everything the validator needs (the
        inputs, the outputs, for Veracity the jobs' receipts and orders) and its hash commits to
        it and names the request. Only that validator answers (`validationResponse`) with a score
        from 0 (failed) to 100 (passed), a URI to its evidence, the evidence's hash and a tag.

        A validator may answer again: as ERC-8004 has it, a later answer replaces the earlier one
        (progressive validation, "soft" then "hard" finality in the tag, or a verdict revised when
        fraud comes to light), and each answer is an event. The request then counts once in the
        summaries, with its latest answer; `getRequest` says how many answers it had. Unlike the
        reference contract we let a score go down: a validator that finds fraud after a pass must
        be able to say so.

        Summaries are on chain for contracts to use: running totals (answered requests and their
        scores' sum) per agent, per agent and tag, per agent and validator, and per agent,
        validator and tag, so `getSummary` is a few storage reads per validator filtered by,
        whatever the agent's history. A reader should filter by validators it trusts: an owner
        can name any address as its validator. The agent's owner, operators and wallet cannot be
        named (the agent checking itself); a request's hash is its key, so a hash already
        requested is refused (salt the request file to ask again).

        Where this differs from ERC-8004: a request hash must not be zero (it is the key);
        scores may go down; the agent cannot name itself; `getAgentValidations` and
        `getValidatorRequests` return a page of MAX_PAGE at a time (with counts).
"""

from interfaces import IAgentRegistry

MAX_TAG: constant(uint256) = 32
MAX_URI: constant(uint256) = 256
MAX_FILTER: constant(uint256) = 32
MAX_PAGE: constant(uint256) = 100
MAX_SCORE: constant(uint8) = 100


struct Request:
    validatorAddress: address
    agentId: uint256
    response: uint8
    responseHash: bytes32
    tag: String[MAX_TAG]
    requestedAt: uint256
    lastUpdate: uint256
    answers: uint256  # 0 while pending


event ValidationRequest:
    validatorAddress: indexed(address)
    agentId: indexed(uint256)
    requestURI: String[MAX_URI]
    requestHash: indexed(bytes32)

event ValidationResponse:
    validatorAddress: indexed(address)
    agentId: indexed(uint256)
    requestHash: indexed(bytes32)
    response: uint8
    responseURI: String[MAX_URI]
    responseHash: bytes32
    tag: String[MAX_TAG]


identityRegistry: immutable(IAgentRegistry)
agentValidationCount: public(HashMap[uint256, uint256])
validatorRequestCount: public(HashMap[address, uint256])
_requests: HashMap[bytes32, Request]
_agent_requests: HashMap[uint256, HashMap[uint256, bytes32]]
_validator_requests: HashMap[address, HashMap[uint256, bytes32]]
_totals: HashMap[bytes32, uint256]  # a running total's key -> answered count << 128 | scores' sum


@deploy
def __init__(identity_registry: IAgentRegistry):
    identityRegistry = identity_registry


@internal
@pure
def _key(agent_id: uint256, validator: address, tag: String[MAX_TAG]) -> bytes32:
    """A running total's key: the agent, the validator (zero: any) and the tag ("": any)."""
    return keccak256(abi_encode(agent_id, validator, tag))


@internal
@pure
def _keys(agent_id: uint256, validator: address, tag: String[MAX_TAG]) -> DynArray[bytes32, 4]:
    """Every running total an answer by `validator` with `tag` counts in."""
    keys: DynArray[bytes32, 4] = [self._key(agent_id, empty(address), ""), self._key(agent_id, validator, "")]
    if len(tag) != 0:
        keys.append(self._key(agent_id, empty(address), tag))
        keys.append(self._key(agent_id, validator, tag))
    return keys


@internal
@pure
def _packed(count: uint256, total: uint256) -> uint256:
    """A running total in one storage word: the count high, the scores' sum (at most 100 each) low."""
    return (count << 128) | total


@internal
@pure
def _unpacked(word: uint256) -> (uint256, uint256):
    return word >> 128, word & convert(max_value(uint128), uint256)


@internal
def _count(agent_id: uint256, validator: address, tag: String[MAX_TAG], score: uint8, add: bool):
    """Count an answer in (`add`) or out of every running total it belongs to."""
    keys: DynArray[bytes32, 4] = self._keys(agent_id, validator, tag)
    for k: bytes32 in keys:
        count: uint256 = 0
        total: uint256 = 0
        count, total = self._unpacked(self._totals[k])
        if add:
            self._totals[k] = self._packed(count + 1, total + convert(score, uint256))
        else:
            self._totals[k] = self._packed(count - 1, total - convert(score, uint256))


@internal
@pure
def _listed_before(items: DynArray[address, MAX_FILTER], i: uint256) -> bool:
    """Whether items[i] is also at an earlier place."""
    for j: uint256 in range(i, bound=MAX_FILTER):
        if items[j] == items[i]:
            return True
    return False


@internal
@view
def _owner_of(agent_id: uint256) -> address:
    """The agent's owner; a clear revert for an agent the identity registry does not know."""
    ok: bool = False
    out: Bytes[32] = b""
    ok, out = raw_call(identityRegistry.address, abi_encode(agent_id, method_id=method_id("ownerOf(uint256)")),
                       max_outsize=32, is_static_call=True, revert_on_failure=False)
    assert ok and len(out) == 32, "validation: no such agent"
    return abi_decode(out, address)


@internal
@view
def _manages(agent_id: uint256, owner: address, who: address) -> bool:
    """The agent's owner or an operator it approved."""
    return (who == owner or staticcall identityRegistry.isApprovedForAll(owner, who)
            or staticcall identityRegistry.getApproved(agent_id) == who)


@external
def validationRequest(validatorAddress: address, agentId: uint256, requestURI: String[MAX_URI],
                      requestHash: bytes32):
    """
    @notice Ask `validatorAddress` to check a piece of the agent's work (its owner or operators).
    @param validatorAddress The one account that may answer.
    @param agentId The agent's id.
    @param requestURI Everything the validator needs to check the work.
    @param requestHash A commitment to that data; the request's key.
    """
    owner: address = self._owner_of(agentId)
    assert self._manages(agentId, owner, msg.sender), \
        "validation: only the agent's owner or an operator it approved can ask for validation"
    assert validatorAddress != empty(address), "validation: the validator cannot be the zero address"
    assert not self._manages(agentId, owner, validatorAddress) and \
        staticcall identityRegistry.getAgentWallet(agentId) != validatorAddress, \
        "validation: an agent cannot validate itself: name an independent validator"
    assert requestHash != empty(bytes32), "validation: the request hash names the request: it cannot be zero"
    assert self._requests[requestHash].validatorAddress == empty(address), \
        "validation: this request hash was already requested"
    self._requests[requestHash] = Request(validatorAddress=validatorAddress, agentId=agentId, response=0,
                                          responseHash=empty(bytes32), tag="", requestedAt=block.timestamp,
                                          lastUpdate=block.timestamp, answers=0)
    n: uint256 = self.agentValidationCount[agentId]
    self._agent_requests[agentId][n] = requestHash
    self.agentValidationCount[agentId] = n + 1
    m: uint256 = self.validatorRequestCount[validatorAddress]
    self._validator_requests[validatorAddress][m] = requestHash
    self.validatorRequestCount[validatorAddress] = m + 1
    log ValidationRequest(validatorAddress=validatorAddress, agentId=agentId, requestURI=requestURI,
                          requestHash=requestHash)


@external
def validationResponse(requestHash: bytes32, response: uint8, responseURI: String[MAX_URI], responseHash: bytes32,
                       tag: String[MAX_TAG]):
    """
    @notice Answer a validation request (its validator only); a later answer replaces this one.
    @param requestHash The request.
    @param response The score: 0 (failed) to 100 (passed).
    @param responseURI The evidence ("" for none).
    @param responseHash The evidence's keccak-256 (zero for none or a content address).
    @param tag A label for the answer ("" for none), e.g. "soft" or "hard" finality.
    """
    r: Request = self._requests[requestHash]
    assert r.validatorAddress != empty(address), "validation: no such request"
    assert msg.sender == r.validatorAddress, "validation: only the request's validator can answer it"
    assert response <= MAX_SCORE, "validation: a response is a score from 0 to 100"
    if r.answers != 0:
        self._count(r.agentId, r.validatorAddress, r.tag, r.response, False)
    self._count(r.agentId, r.validatorAddress, tag, response, True)
    self._requests[requestHash] = Request(validatorAddress=r.validatorAddress, agentId=r.agentId, response=response,
                                          responseHash=responseHash, tag=tag, requestedAt=r.requestedAt,
                                          lastUpdate=block.timestamp, answers=r.answers + 1)
    log ValidationResponse(validatorAddress=r.validatorAddress, agentId=r.agentId, requestHash=requestHash,
                           response=response, responseURI=responseURI, responseHash=responseHash, tag=tag)


@external
@view
def getIdentityRegistry() -> address:
    """
    @notice The identity registry whose agents this one validates.
    @return Its address.
    """
    return identityRegistry.address


@external
@view
def getRequest(requestHash: bytes32) -> Request:
    """
    @notice A request in full: its validator, agent, latest answer, when it was asked and last
            answered, and how many answers it had (0: still pending). Empty for an unknown hash.
    @param requestHash The request.
    @return The request.
    """
    return self._requests[requestHash]


@external
@view
def getValidationStatus(requestHash: bytes32) -> (address, uint256, uint8, bytes32, String[MAX_TAG], uint256):
    """
    @notice A request's status, as ERC-8004 returns it (a pending request: response 0, lastUpdate
            the request's time; `getRequest` tells pending from a 0 answer).
    @param requestHash The request.
    @return (validatorAddress, agentId, response, responseHash, tag, lastUpdate).
    """
    r: Request = self._requests[requestHash]
    assert r.validatorAddress != empty(address), "validation: no such request"
    return r.validatorAddress, r.agentId, r.response, r.responseHash, r.tag, r.lastUpdate


@external
@view
def getSummary(agentId: uint256, validatorAddresses: DynArray[address, MAX_FILTER], tag: String[MAX_TAG]) -> (
        uint64, uint8):
    """
    @notice How many of the agent's requests were answered, and their latest scores' average
            (rounded down).
    @param agentId The agent's id.
    @param validatorAddresses Count only these validators' answers (empty: everyone's).
    @param tag Only answers with this tag ("" for any).
    @return (count, average score).
    """
    count: uint256 = 0
    total: uint256 = 0
    if len(validatorAddresses) == 0:
        count, total = self._unpacked(self._totals[self._key(agentId, empty(address), tag)])
    for i: uint256 in range(len(validatorAddresses), bound=MAX_FILTER):
        v: address = validatorAddresses[i]
        if v == empty(address) or self._listed_before(validatorAddresses, i):
            continue  # zero would mean "any"; a validator listed twice counts once
        c: uint256 = 0
        t: uint256 = 0
        c, t = self._unpacked(self._totals[self._key(agentId, v, tag)])
        count += c
        total += t
    if count == 0:
        return 0, 0
    return convert(count, uint64), convert(total // count, uint8)


@external
@view
def getAgentValidations(agentId: uint256, start: uint256 = 0) -> DynArray[bytes32, MAX_PAGE]:
    """
    @notice The agent's request hashes in order, a page at a time (`agentValidationCount` says how many).
    @param agentId The agent's id.
    @param start The first one's position (0 first).
    @return Up to MAX_PAGE request hashes.
    """
    out: DynArray[bytes32, MAX_PAGE] = []
    for i: uint256 in range(MAX_PAGE):
        if start + i >= self.agentValidationCount[agentId]:
            break
        out.append(self._agent_requests[agentId][start + i])
    return out


@external
@view
def getValidatorRequests(validatorAddress: address, start: uint256 = 0) -> DynArray[bytes32, MAX_PAGE]:
    """
    @notice The request hashes naming the validator, a page at a time (`validatorRequestCount` says how many).
    @param validatorAddress The validator.
    @param start The first one's position (0 first).
    @return Up to MAX_PAGE request hashes.
    """
    out: DynArray[bytes32, MAX_PAGE] = []
    for i: uint256 in range(MAX_PAGE):
        if start + i >= self.validatorRequestCount[validatorAddress]:
            break
        out.append(self._validator_requests[validatorAddress][start + i])
    return out
