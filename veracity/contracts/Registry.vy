# pragma version ~=0.4.3
"""
@title Veracity Registry
@notice Providers and validators register here with stake, hardware attributes, an HTTP endpoint
        and a reputation. Stake leaves only after an unbonding delay. The Market locks a lease's
        collateral out of the provider's free stake (never out of unbonding stake), and, while a
        result is disputed, the share of its other stake a lost dispute would take; nothing else
        is held, so an open lease or a dispute never freezes a provider's whole stake. Part of
        every slash for a wrong result is burnt, so slashing oneself through a sybil never pays.
"""

from ethereum.ercs import IERC20
from snekmate.auth import ownable as ow

from interfaces import IRegistry
from interfaces import IToken

implements: IRegistry

initializes: ow
exports: (ow.owner, ow.transfer_ownership)

PROVIDER: constant(uint8) = 1
VALIDATOR: constant(uint8) = 2
MAX_BPS: constant(uint256) = 10000


struct Node:
    role: uint8
    stake: uint256
    locked: uint256
    unbonding: uint256
    unbond_at: uint256
    device: String[32]
    memory_gb: uint256
    models: DynArray[bytes32, 16]
    price_floor: uint256
    endpoint: String[128]
    reputation: int256


event Registered:
    node: indexed(address)
    role: uint8
    stake: uint256
    endpoint: String[128]

event AttributesUpdated:
    node: indexed(address)
    device: String[32]
    memory_gb: uint256
    price_floor: uint256
    endpoint: String[128]

event StakeAdded:
    node: indexed(address)
    amount: uint256

event UnbondRequested:
    node: indexed(address)
    amount: uint256
    unbond_at: uint256

event Withdrawn:
    node: indexed(address)
    amount: uint256

event CollateralLocked:
    node: indexed(address)
    amount: uint256

event CollateralUnlocked:
    node: indexed(address)
    amount: uint256

event Slashed:
    node: indexed(address)
    amount: uint256
    to: address
    burnt: uint256

event ReputationChanged:
    node: indexed(address)
    reputation: int256

event MarketSet:
    market: address


token: public(immutable(IERC20))
min_stake: public(immutable(uint256))
unbonding_delay: public(immutable(uint256))
market: public(address)
nodes: public(HashMap[address, Node])
total_stake: public(uint256)


@deploy
def __init__(token_: IERC20, min_stake_: uint256, unbonding_delay_: uint256):
    ow.__init__()
    token = token_
    min_stake = min_stake_
    unbonding_delay = unbonding_delay_


@external
def set_market(market_: address):
    """
    @notice Name the Market contract, which alone may lock, unlock and slash collateral. Once.
    @param market_ The Market contract.
    """
    ow._check_owner()
    assert self.market == empty(address), "registry: the market is already set"
    self.market = market_
    log MarketSet(market=market_)


@external
def register(role: uint8, stake: uint256, device: String[32], memory_gb: uint256,
             models: DynArray[bytes32, 16], price_floor: uint256, endpoint: String[128]):
    """
    @notice Register as a provider (role 1) or validator (role 2), staking `stake` tokens
            (approve the Registry first).
    @param role 1 provider, 2 validator.
    @param stake The tokens to stake.
    @param device The hardware it runs on.
    @param memory_gb Its memory in GB.
    @param models Ids of the models it serves.
    @param price_floor The lowest price it bids.
    @param endpoint Its HTTP endpoint.
    """
    assert self.nodes[msg.sender].role == 0, "registry: this address is already registered"
    assert role == PROVIDER or role == VALIDATOR, "registry: role must be 1 (provider) or 2 (validator)"
    assert stake >= min_stake, "registry: stake is below the minimum stake"
    self.nodes[msg.sender] = Node(role=role, stake=stake, locked=0, unbonding=0, unbond_at=0, device=device,
                                  memory_gb=memory_gb, models=models, price_floor=price_floor,
                                  endpoint=endpoint, reputation=0)
    self.total_stake += stake
    assert extcall token.transferFrom(msg.sender, self, stake), "registry: stake transfer failed"
    log Registered(node=msg.sender, role=role, stake=stake, endpoint=endpoint)


@external
def update(device: String[32], memory_gb: uint256, models: DynArray[bytes32, 16], price_floor: uint256,
           endpoint: String[128]):
    """
    @notice Change your hardware attributes, models, price floor or endpoint.
    @param device The hardware it runs on.
    @param memory_gb Its memory in GB.
    @param models Ids of the models it serves.
    @param price_floor The lowest price it bids.
    @param endpoint Its HTTP endpoint.
    """
    assert self.nodes[msg.sender].role != 0, "registry: register first"
    self.nodes[msg.sender].device = device
    self.nodes[msg.sender].memory_gb = memory_gb
    self.nodes[msg.sender].models = models
    self.nodes[msg.sender].price_floor = price_floor
    self.nodes[msg.sender].endpoint = endpoint
    log AttributesUpdated(node=msg.sender, device=device, memory_gb=memory_gb, price_floor=price_floor,
                          endpoint=endpoint)


@external
def add_stake(amount: uint256):
    """
    @notice Add `amount` tokens to your stake (approve the Registry first).
    @param amount The tokens to add.
    """
    assert self.nodes[msg.sender].role != 0, "registry: register first"
    self.nodes[msg.sender].stake += amount
    self.total_stake += amount
    assert extcall token.transferFrom(msg.sender, self, amount), "registry: stake transfer failed"
    log StakeAdded(node=msg.sender, amount=amount)


@external
@view
def free_stake(node: address) -> uint256:
    """
    @notice Stake that neither backs a lease nor is unbonding.
    @param node The node's address.
    @return Its stake less locked and unbonding stake.
    """
    n: Node = self.nodes[node]
    return n.stake - n.locked - n.unbonding


@external
@view
def is_provider(node: address) -> bool:
    """
    @notice Whether `node` is registered as a provider.
    @param node The address to check.
    @return True for a registered provider.
    """
    return self.nodes[node].role == PROVIDER


@external
@view
def is_validator(node: address) -> bool:
    """
    @notice Whether `node` is registered as a validator.
    @param node The address to check.
    @return True for a registered validator.
    """
    return self.nodes[node].role == VALIDATOR


@external
def request_unbond(amount: uint256):
    """
    @notice Start unbonding `amount` of your free stake; `withdraw` after the unbonding delay.
    @param amount The free stake to unbond.
    """
    n: Node = self.nodes[msg.sender]
    assert n.role != 0, "registry: register first"
    assert amount > 0, "registry: unbond a positive amount"
    assert n.stake - n.locked - n.unbonding >= amount, "registry: stake is bonded to open leases or already unbonding"
    self.nodes[msg.sender].unbonding = n.unbonding + amount
    self.nodes[msg.sender].unbond_at = block.timestamp + unbonding_delay
    log UnbondRequested(node=msg.sender, amount=amount, unbond_at=block.timestamp + unbonding_delay)


@external
def withdraw():
    """
    @notice Withdraw your unbonded stake once the unbonding delay has passed. What backs open
            leases (their collateral) and open disputes (the stake share a lost one takes) is
            locked, and unbonding stake never includes it, so it cannot leave.
    """
    n: Node = self.nodes[msg.sender]
    assert n.unbonding > 0, "registry: nothing is unbonding; call request_unbond first"
    assert block.timestamp >= n.unbond_at, "registry: stake is still in its unbonding delay"
    amount: uint256 = n.unbonding
    self.nodes[msg.sender].unbonding = 0
    self.nodes[msg.sender].stake = n.stake - amount
    self.total_stake -= amount
    assert extcall token.transfer(msg.sender, amount), "registry: withdrawal transfer failed"
    log Withdrawn(node=msg.sender, amount=amount)


@internal
def _only_market():
    assert msg.sender == self.market, "registry: only the market may move collateral"


@external
def lock(node: address, amount: uint256):
    """
    @notice Lock `amount` of a provider's free stake as a lease's collateral (Market only). The
            provider's bonded stake (not unbonding) must still be at least the minimum stake.
    @param node The provider.
    @param amount The collateral to lock.
    """
    self._only_market()
    n: Node = self.nodes[node]
    assert n.stake - n.unbonding >= min_stake, \
        "registry: the provider's bonded stake (not unbonding) is below the minimum stake"
    assert n.stake - n.locked - n.unbonding >= amount, "registry: provider's free stake is below the bid's collateral"
    self.nodes[node].locked = n.locked + amount
    log CollateralLocked(node=node, amount=amount)


@external
def unlock(node: address, amount: uint256):
    """
    @notice Release locked stake: a settled lease's collateral, or a dispute's hold (Market only).
    @param node The provider.
    @param amount The amount to release.
    """
    self._only_market()
    self.nodes[node].locked -= amount
    log CollateralUnlocked(node=node, amount=amount)


@external
def hold(node: address, bps: uint256) -> uint256:
    """
    @notice Lock `bps` of a provider's stake beyond its locked collateral while a result of its
            is disputed (Market only): what a lost dispute takes. Unbonding stake is held too
            (that is what the unbonding delay is for).
    @param node The provider.
    @param bps The share to hold, in basis points.
    @return The amount held.
    """
    self._only_market()
    n: Node = self.nodes[node]
    amount: uint256 = (n.stake - n.locked) * bps // MAX_BPS
    self.nodes[node].locked = n.locked + amount
    self.nodes[node].unbonding = min(n.unbonding, n.stake - n.locked - amount)
    log CollateralLocked(node=node, amount=amount)
    return amount


@external
def slash(node: address, amount: uint256, to: address, burn_bps: uint256):
    """
    @notice Take `amount` of a provider's locked stake (Market only): `burn_bps` of it is burnt,
            the rest is paid to `to`.
    @param node The provider.
    @param amount The locked stake to take.
    @param to Who is paid what is not burnt.
    @param burn_bps The share burnt, in basis points.
    """
    self._only_market()
    assert burn_bps <= MAX_BPS, "registry: burn share above 100%"
    self.nodes[node].locked -= amount
    self.nodes[node].stake -= amount
    self.total_stake -= amount
    burnt: uint256 = amount * burn_bps // MAX_BPS
    if burnt > 0:
        extcall IToken(token.address).burn(burnt)
    if amount > burnt:
        assert extcall token.transfer(to, amount - burnt), "registry: slash transfer failed"
    log Slashed(node=node, amount=amount, to=to, burnt=burnt)


@external
def adjust_reputation(node: address, delta: int256):
    """
    @notice Move a node's reputation after a settled lease (Market only).
    @param node The node's address.
    @param delta The change, positive or negative.
    """
    self._only_market()
    self.nodes[node].reputation += delta
    log ReputationChanged(node=node, reputation=self.nodes[node].reputation)
