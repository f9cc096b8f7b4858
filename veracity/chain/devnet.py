"""Deploy Veracity's contracts and write a deployment file (the devnet, or any EVM chain)."""

from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account
from pydantic import BaseModel

from veracity.chain.anvil import MNEMONIC
from veracity.chain.client import Chain, MarketClient, RegistryClient, TokenClient

TOKEN = 10**18
DEFAULTS = {"supply": 10**9 * TOKEN, "min_stake": 100 * TOKEN, "unbonding_delay": 3600, "fee_bps": 500,
            "fund": 100_000 * TOKEN}


class AccountInfo(BaseModel):
    address: str
    key: str


class Deployment(BaseModel):
    """Where the contracts are and who may use them: what every node and CLI command reads."""

    rpc_url: str
    chain_id: int
    token: str
    registry: str
    market: str
    deployer: AccountInfo
    accounts: list[AccountInfo]
    min_stake: int
    unbonding_delay: int
    fee_bps: int

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> "Deployment":
        return cls.model_validate(json.loads(Path(path).read_text()))

    def clients(self, key: str) -> tuple[Chain, TokenClient, RegistryClient, MarketClient]:
        """Typed clients acting as the account with private key ``key``."""
        chain = Chain(self.rpc_url, key)
        token = TokenClient(chain, self.token)
        return chain, token, RegistryClient(chain, self.registry, token), MarketClient(chain, self.market, token)


def dev_accounts(n: int) -> list[AccountInfo]:
    """The first n accounts of anvil's well-known development mnemonic (never use on a real chain)."""
    Account.enable_unaudited_hdwallet_features()
    out = []
    for i in range(n):
        acct = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        out.append(AccountInfo(address=acct.address, key="0x" + bytes(acct.key).hex()))
    return out


def deploy(rpc_url: str, deployer: AccountInfo, accounts: list[AccountInfo], devnet: bool = True,
           **params: int) -> Deployment:
    """Deploy Token, Registry and Market, wire them, and fund ``accounts`` with tokens."""
    p = {**DEFAULTS, **params}
    chain = Chain(rpc_url, deployer.key)
    token = chain.deploy("Token", p["supply"], devnet)
    registry = chain.deploy("Registry", token, p["min_stake"], p["unbonding_delay"])
    market = chain.deploy("Market", token, registry, p["fee_bps"])
    reg = RegistryClient(chain, registry, TokenClient(chain, token))
    chain.send(reg.fn.set_market(market))
    tok = TokenClient(chain, token)
    for a in accounts:
        if a.address != deployer.address:
            tok.transfer(a.address, p["fund"])
    return Deployment(rpc_url=rpc_url, chain_id=chain.w3.eth.chain_id, token=token, registry=registry,
                      market=market, deployer=deployer, accounts=accounts, min_stake=p["min_stake"],
                      unbonding_delay=p["unbonding_delay"], fee_bps=p["fee_bps"])
