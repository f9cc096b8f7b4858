"""A real anvil node with the contracts deployed once per test session; each test runs inside an
EVM snapshot that is reverted afterwards, so tests stay independent and fast."""

import pytest

from veracity.chain.anvil import Anvil
from veracity.chain.devnet import deploy, dev_accounts

TOKEN = 10**18


@pytest.fixture(scope="session")
def devnet():
    node = Anvil(accounts=10)
    accounts = dev_accounts(10)
    try:
        yield deploy(node.rpc_url, accounts[0], accounts)
    finally:
        node.stop()


class Actors:
    """Named accounts with their clients: deployer, client, client2, provider, provider2, validator, stranger."""

    ROLES = ["deployer", "client", "client2", "provider", "provider2", "validator", "stranger"]

    def __init__(self, deployment):
        self.d = deployment
        for i, role in enumerate(self.ROLES):
            acct = deployment.accounts[i]
            chain, token, registry, market = deployment.clients(acct.key)
            setattr(self, role, type("Actor", (), dict(address=acct.address, key=acct.key, chain=chain,
                                                       token=token, registry=registry, market=market))())

    def rpc(self, method, params=()):
        return self.deployer.chain.w3.provider.make_request(method, list(params))["result"]

    def advance(self, seconds):
        self.rpc("evm_increaseTime", [seconds])
        self.rpc("evm_mine")

    def now(self):
        return self.deployer.chain.now()


@pytest.fixture
def actors(devnet):
    a = Actors(devnet)
    snap = a.rpc("evm_snapshot")
    try:
        yield a
    finally:
        a.rpc("evm_revert", [snap])


@pytest.fixture(scope="session")
def actors_cls():
    return Actors
