# pragma version ~=0.4.3
"""
@title Veracity Collective payments
@notice A client pays for an agent's run, and the payment is split among the agents that did
        the run's work, in proportion to their verified work, as a validator attested it.

        The client escrows the payment (`pay`) naming the run's validation request (on the
        Validation contract), the validator whose answer it trusts, and a deadline. Veracity's
        validators answer a run they passed with the run's work by agent as the answer's
        `responseHash`: keccak256(abi_encode(agentIds, work)), agent ids ascending, work the count
        of each agent's verified model calls (the collective's own, and each member's it called:
        `veracity.agents.validate.work_split`). Anyone may then `release` the payment with that
        split: the contract checks the validation names this payment's validator and agent, has
        the score 100 (and the tag the client asked for, if any) and the attested hash, and pays
        each agent its share: to its wallet on the AgentRegistry, or its owner when it has none
        (the payee is read here, not given by whoever releases). The remainder of the division
        goes to the last agent listed. A payment not released by its deadline goes back to the
        client (`refund`), as one whose validator answered anything but a pass never can be.
"""

from ethereum.ercs import IERC20

from interfaces import IAgentRegistry

interface IValidation:
    def getValidationStatus(requestHash: bytes32) -> (address, uint256, uint8, bytes32, String[32], uint256): view

MAX_AGENTS: constant(uint256) = 16
MAX_TAG: constant(uint256) = 32
PASSED: constant(uint8) = 100
OPEN: constant(uint8) = 1
RELEASED: constant(uint8) = 2
REFUNDED: constant(uint8) = 3


struct Payment:
    payer: address
    agentId: uint256
    requestHash: bytes32
    validator: address
    amount: uint256
    deadline: uint256
    tag: String[MAX_TAG]  # the answer's tag the client asks for ("" for any passing answer)
    state: uint8


event PaymentOpened:
    paymentId: indexed(uint256)
    payer: indexed(address)
    agentId: indexed(uint256)
    requestHash: bytes32
    validator: address
    amount: uint256
    deadline: uint256

event SharePaid:
    paymentId: indexed(uint256)
    agentId: indexed(uint256)
    payee: indexed(address)
    amount: uint256
    work: uint256

event PaymentRefunded:
    paymentId: indexed(uint256)
    payer: indexed(address)
    amount: uint256


token: public(immutable(IERC20))
identityRegistry: public(immutable(IAgentRegistry))
validation: public(immutable(IValidation))
paymentCount: public(uint256)
_payments: HashMap[uint256, Payment]


@deploy
def __init__(token_: IERC20, identity: IAgentRegistry, validation_: IValidation):
    token = token_
    identityRegistry = identity
    validation = validation_


@external
def pay(agentId: uint256, requestHash: bytes32, validator: address, amount: uint256, deadline: uint256,
        tag: String[MAX_TAG]) -> uint256:
    """
    @notice Escrow `amount` for agent `agentId`'s run, released by `validator`'s passing answer to
            the validation request `requestHash` (with `tag`, unless it is ""), before `deadline`.
    @return The payment's id (from 1).
    """
    assert amount > 0, "collective: pay something"
    assert deadline > block.timestamp, "collective: the deadline has passed"
    assert validator != empty(address), "collective: name the validator whose answer releases it"
    assert requestHash != empty(bytes32), "collective: name the run's validation request"
    assert staticcall identityRegistry.ownerOf(agentId) != empty(address), "collective: no such agent"
    pid: uint256 = self.paymentCount + 1
    self.paymentCount = pid
    self._payments[pid] = Payment(payer=msg.sender, agentId=agentId, requestHash=requestHash, validator=validator,
                                  amount=amount, deadline=deadline, tag=tag, state=OPEN)
    assert extcall token.transferFrom(msg.sender, self, amount, default_return_value=True), "collective: transfer failed"
    log PaymentOpened(paymentId=pid, payer=msg.sender, agentId=agentId, requestHash=requestHash,
                      validator=validator, amount=amount, deadline=deadline)
    return pid


@internal
@view
def _payee(agentId: uint256) -> address:
    wallet: address = staticcall identityRegistry.getAgentWallet(agentId)
    if wallet != empty(address):
        return wallet
    return staticcall identityRegistry.ownerOf(agentId)


@external
def release(paymentId: uint256, agentIds: DynArray[uint256, MAX_AGENTS], work: DynArray[uint256, MAX_AGENTS]):
    """
    @notice Pay the shares of an open payment, by the split its validator attested (anyone may).
    @param agentIds The agents that did the run's work, ascending.
    @param work Each one's verified model calls.
    """
    p: Payment = self._payments[paymentId]
    assert p.state == OPEN, "collective: not an open payment"
    assert block.timestamp <= p.deadline, "collective: the payment's deadline has passed: refund it"
    v: address = empty(address)
    agent: uint256 = 0
    score: uint8 = 0
    attested: bytes32 = empty(bytes32)
    tag: String[MAX_TAG] = ""
    last: uint256 = 0
    v, agent, score, attested, tag, last = staticcall validation.getValidationStatus(p.requestHash)
    assert v == p.validator and agent == p.agentId, "collective: the validation is not this payment's"
    assert score == PASSED, "collective: the run has not passed its validation"
    assert len(p.tag) == 0 or keccak256(tag) == keccak256(p.tag), "collective: not the answer's tag the payer asked for"
    assert len(agentIds) == len(work) and len(agentIds) > 0, "collective: one work count per agent"
    assert keccak256(abi_encode(agentIds, work)) == attested, "collective: not the split the validator attested"
    total: uint256 = 0
    for w: uint256 in work:
        total += w
    assert total > 0, "collective: no verified work to pay for"
    self._payments[paymentId].state = RELEASED
    paid: uint256 = 0
    n: uint256 = len(agentIds)
    for i: uint256 in range(MAX_AGENTS):
        if i == n:
            break
        share: uint256 = p.amount * work[i] // total
        if i == n - 1:
            share = p.amount - paid
        paid += share
        payee: address = self._payee(agentIds[i])
        if share > 0:
            assert extcall token.transfer(payee, share, default_return_value=True), "collective: transfer failed"
        log SharePaid(paymentId=paymentId, agentId=agentIds[i], payee=payee, amount=share, work=work[i])


@external
def refund(paymentId: uint256):
    """
    @notice Return a payment not released by its deadline to its payer (anyone may call it).
    """
    p: Payment = self._payments[paymentId]
    assert p.state == OPEN, "collective: not an open payment"
    assert block.timestamp > p.deadline, "collective: the payment can still be released until its deadline"
    self._payments[paymentId].state = REFUNDED
    assert extcall token.transfer(p.payer, p.amount, default_return_value=True), "collective: transfer failed"
    log PaymentRefunded(paymentId=paymentId, payer=p.payer, amount=p.amount)


@external
@view
def payment(paymentId: uint256) -> Payment:
    """
    @notice A payment in full (empty for an unknown id).
    """
    return self._payments[paymentId]
