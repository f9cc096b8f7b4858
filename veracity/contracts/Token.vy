# pragma version ~=0.4.3
"""
@title Veracity Token
@notice The network's unit for stake, escrow and fees: snekmate's audited ERC-20, plus a faucet
        that exists only on devnet deployments (``faucet_enabled`` is fixed at deployment). The
        supply is fixed at deployment: snekmate's owner-only `mint` and `set_minter` are not
        exported and the deployer's minter role is dropped, so nobody can mint on a production
        deployment. `burn` is exported: the Registry burns part of every slash.
"""

from ethereum.ercs import IERC20
implements: IERC20

from interfaces import IToken
implements: IToken

from snekmate.auth import ownable as ow
from snekmate.tokens import erc20

initializes: ow
initializes: erc20[ownable := ow]

exports: (
    erc20.totalSupply, erc20.balanceOf, erc20.allowance, erc20.name, erc20.symbol, erc20.decimals,
    erc20.transfer, erc20.approve, erc20.transferFrom, erc20.burn, erc20.burn_from, erc20.permit,
    erc20.nonces, erc20.DOMAIN_SEPARATOR, erc20.eip712Domain, erc20.is_minter, erc20.owner,
)

FAUCET_MAX: constant(uint256) = 10**6 * 10**18

faucet_enabled: public(immutable(bool))


@deploy
def __init__(initial_supply: uint256, devnet: bool):
    ow.__init__()
    erc20.__init__("Veracity", "VRC", 18, "Veracity", "1")
    erc20._mint(msg.sender, initial_supply)
    erc20.is_minter[msg.sender] = False
    faucet_enabled = devnet


@external
def faucet(amount: uint256):
    """
    @notice Mint up to 1,000,000 VRC to the caller; devnet deployments only.
    @param amount The amount to mint (18 decimals).
    """
    assert faucet_enabled, "token: the faucet exists only on devnet"
    assert amount <= FAUCET_MAX, "token: faucet gives at most 1,000,000 VRC per call"
    erc20._mint(msg.sender, amount)
