"""Deploy Veracity's contracts and write a deployment file (the devnet, or any EVM chain)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account
from pydantic import BaseModel

from veracity.chain.agents import AgentRegistryClient, CollectiveClient, ReputationClient, ValidationClient
from veracity.chain.anvil import MNEMONIC
from veracity.chain.client import Chain, DisputesClient, MarketClient, OracleClient, RegistryClient, TokenClient
from veracity.chain.labels import LabelTasksClient
from veracity.chain.pools import DataPoolClient
from veracity.errors import ChainError

TOKEN = 10**18
DEFAULTS = {"supply": 10**9 * TOKEN, "min_stake": 100 * TOKEN, "unbonding_delay": 3600, "fee_bps": 500,
            "fund": 100_000 * TOKEN, "dispute_bond": 10 * TOKEN, "move_time": 60,
            "oracle_deadline": 600, "oracle_window": 30, "oracle_spot_bps": 10_000, "oracle_collateral_bps": 2_000,
            "pool_deadline": 600, "pool_window": 30, "pool_spot_bps": 10_000}


class AccountInfo(BaseModel):
    address: str
    key: str


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by its owner only (0600), from its creation
    on (a file that holds keys: a daemon's config, a devnet's deployment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: set it
    with os.fdopen(fd, "w") as f:
        f.write(text)


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
    disputes: str | None = None  # deployments from before the dispute game have none
    referee: str | None = None
    attention_referee: str | None = None
    train_referee: str | None = None
    llama_referee: str | None = None
    llama_attention_referee: str | None = None
    train_norm_referee: str | None = None  # the tiny GPT's step (through the TrainReferee's relay)
    train_attention_referee: str | None = None
    finetune_referee: str | None = None
    dispute_bond: int = 0
    move_time: int = 0
    oracle: str | None = None  # contract-callable inference (deployments from before it have none)
    agent_registry: str | None = None  # agents after ERC-8004 (deployments from before them have none)
    reputation: str | None = None
    validation: str | None = None
    collective: str | None = None  # payments split among agents by their verified work (``Collective``)
    data_pool: str | None = None  # data pools with scored contributions (``DataPool``)
    label_tasks: str | None = None  # labelling tasks aggregated by Dawid-Skene on chain (``LabelTasks``)

    def write(self, path: Path) -> None:
        """Written readable by its owner only: a devnet's holds its accounts' keys."""
        write_private(path, self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> "Deployment":
        return cls.model_validate(json.loads(Path(path).read_text()))

    def clients(self, key: str) -> tuple[Chain, TokenClient, RegistryClient, MarketClient]:
        """Typed clients acting as the account with private key ``key``."""
        chain = Chain(self.rpc_url, key)
        token = TokenClient(chain, self.token)
        return chain, token, RegistryClient(chain, self.registry, token), MarketClient(chain, self.market, token)

    @property
    def referees(self) -> tuple[str, ...]:
        """(Referee, AttentionReferee, TrainReferee, LlamaReferee, LlamaAttentionReferee,
        TrainNormReferee, TrainAttentionReferee, FinetuneReferee): the contracts that judge a located
        element (the last three through the TrainReferee's relay)."""
        return (self.referee or "", self.attention_referee or "", self.train_referee or "", self.llama_referee or "",
                self.llama_attention_referee or "", self.train_norm_referee or "", self.train_attention_referee or "",
                self.finetune_referee or "")

    def oracle_client(self, key: str) -> OracleClient:
        if self.oracle is None:
            raise ChainError("this deployment has no Oracle contract: redeploy it")
        chain = Chain(self.rpc_url, key)
        return OracleClient(chain, self.oracle)

    def agent_clients(self, key: str) -> tuple[AgentRegistryClient, ReputationClient, ValidationClient]:
        """Clients of the agent registries (identity, reputation, validation) acting as ``key``."""
        if self.agent_registry is None or self.reputation is None or self.validation is None:
            raise ChainError("this deployment has no agent registries (AgentRegistry, Reputation, Validation): "
                             "redeploy it")
        chain = Chain(self.rpc_url, key)
        return (AgentRegistryClient(chain, self.agent_registry), ReputationClient(chain, self.reputation),
                ValidationClient(chain, self.validation))

    def collective_client(self, key: str) -> CollectiveClient:
        """The Collective contract's client acting as ``key`` (payments split among agents)."""
        if self.collective is None:
            raise ChainError("this deployment has no Collective contract: redeploy it")
        chain = Chain(self.rpc_url, key)
        return CollectiveClient(chain, self.collective, TokenClient(chain, self.token))

    def data_pool_client(self, key: str) -> DataPoolClient:
        """The DataPool contract's client acting as ``key``."""
        if self.data_pool is None:
            raise ChainError("this deployment has no DataPool contract: redeploy it")
        chain = Chain(self.rpc_url, key)
        return DataPoolClient(chain, self.data_pool, TokenClient(chain, self.token))

    def label_tasks_client(self, key: str) -> LabelTasksClient:
        """The LabelTasks contract's client acting as ``key``."""
        if self.label_tasks is None:
            raise ChainError("this deployment has no LabelTasks contract: redeploy it")
        chain = Chain(self.rpc_url, key)
        return LabelTasksClient(chain, self.label_tasks, TokenClient(chain, self.token))

    def disputes_client(self, key: str) -> DisputesClient:
        if self.disputes is None:
            raise ChainError("this deployment has no Disputes contract: redeploy it")
        chain = Chain(self.rpc_url, key)
        return DisputesClient(chain, self.disputes, TokenClient(chain, self.token))


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
    """Deploy the contracts (Token, Registry, Market, OneStep and LlamaOneStep, the eight referees,
    OutputFaults, Disputes, the Oracle, the agent registries, DataPool and LabelTasks), wire them to each
    other, and fund ``accounts`` with tokens."""
    p = {**DEFAULTS, **params}
    chain = Chain(rpc_url, deployer.key)
    token = chain.deploy("Token", p["supply"], devnet)
    registry = chain.deploy("Registry", token, p["min_stake"], p["unbonding_delay"])
    market = chain.deploy("Market", token, registry, p["fee_bps"])
    reg = RegistryClient(chain, registry, TokenClient(chain, token))
    chain.send(reg.fn.set_market(market))
    onestep = chain.deploy("OneStep")
    referee = chain.deploy("Referee", onestep)
    attention_referee = chain.deploy("AttentionReferee", onestep)
    train_referee = chain.deploy("TrainReferee")
    llama_onestep = chain.deploy("LlamaOneStep")
    llama_referee = chain.deploy("LlamaReferee", llama_onestep)
    llama_attention_referee = chain.deploy("LlamaAttentionReferee", llama_onestep)
    referees = [referee, attention_referee, train_referee, llama_referee, llama_attention_referee]
    train_norm_referee = chain.deploy("TrainNormReferee", train_referee)
    train_attention_referee = chain.deploy("TrainAttentionReferee", train_referee)
    finetune_referee = chain.deploy("FinetuneReferee", train_referee)
    chain.send(chain.contract("TrainReferee", train_referee).functions.set_relays(
        [train_norm_referee, train_attention_referee, finetune_referee]))
    output_faults = chain.deploy("OutputFaults", market)
    disputes = chain.deploy("Disputes", token, market, p["dispute_bond"], p["move_time"], referees, output_faults)
    chain.send(chain.contract("OutputFaults", output_faults).functions.set_disputes(disputes))
    for name, address in zip(("Referee", "AttentionReferee", "TrainReferee", "LlamaReferee", "LlamaAttentionReferee"),
                             referees):
        chain.send(chain.contract(name, address).functions.set_disputes(disputes))
    chain.send(MarketClient(chain, market, TokenClient(chain, token)).fn.set_disputes(disputes))
    oracle = chain.deploy("Oracle", token, market, p["oracle_deadline"], p["oracle_window"], p["oracle_spot_bps"],
                          p["oracle_collateral_bps"])
    chain.send(MarketClient(chain, market, TokenClient(chain, token)).fn.set_gated(oracle))  # paid on delivery
    agent_registry = chain.deploy("AgentRegistry")
    reputation = chain.deploy("Reputation", agent_registry)
    validation = chain.deploy("Validation", agent_registry)
    collective = chain.deploy("Collective", token, agent_registry, validation)
    treasury = MarketClient(chain, market, TokenClient(chain, token)).treasury()  # forfeits and slashes go here
    data_pool = chain.deploy("DataPool", token, market, treasury, p["pool_deadline"], p["pool_window"],
                             p["pool_spot_bps"])
    chain.send(MarketClient(chain, market, TokenClient(chain, token)).fn.set_gated(data_pool))  # scores settle through it
    label_tasks = chain.deploy("LabelTasks", token, treasury)  # slashed labellers' stakes go to the treasury
    tok = TokenClient(chain, token)
    for a in accounts:
        if a.address != deployer.address:
            tok.transfer(a.address, p["fund"])
    return Deployment(rpc_url=rpc_url, chain_id=chain.w3.eth.chain_id, token=token, registry=registry,
                      market=market, deployer=deployer, accounts=accounts, min_stake=p["min_stake"],
                      unbonding_delay=p["unbonding_delay"], fee_bps=p["fee_bps"], disputes=disputes, referee=referee,
                      attention_referee=attention_referee, train_referee=train_referee, llama_referee=llama_referee,
                      llama_attention_referee=llama_attention_referee, train_norm_referee=train_norm_referee,
                      train_attention_referee=train_attention_referee, finetune_referee=finetune_referee,
                      dispute_bond=p["dispute_bond"], move_time=p["move_time"], oracle=oracle,
                      agent_registry=agent_registry, reputation=reputation, validation=validation,
                      collective=collective, data_pool=data_pool, label_tasks=label_tasks)


# the embedded devnet: anvil as a background process, its state in a folder -----------------

def home() -> Path:
    import os

    return Path(os.environ.get("VERACITY_HOME", Path.home() / ".veracity")) / "devnet"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def running() -> Deployment | None:
    """The running devnet's deployment, or None (stale state is cleaned up)."""
    state = home()
    pid_file, dep_file = state / "anvil.pid", state / "deployment.json"
    if not pid_file.is_file() or not dep_file.is_file():
        return None
    if not _alive(int(pid_file.read_text())):
        pid_file.unlink(missing_ok=True)
        return None
    return Deployment.read(dep_file)


def up(accounts: int = 10, port: int | None = None) -> tuple[Deployment, bool]:
    """Start anvil in the background and deploy; returns (deployment, started_now)."""
    from veracity.chain.anvil import Anvil

    current = running()
    if current is not None:
        return current, False
    state = home()
    state.mkdir(parents=True, exist_ok=True)
    node = Anvil(port=port, accounts=accounts, detach=True, log=state / "anvil.log", block_time=1)
    try:
        accts = dev_accounts(accounts)
        dep = deploy(node.rpc_url, accts[0], accts)
    except Exception:
        node.stop()
        raise
    (state / "anvil.pid").write_text(str(node.pid))
    dep.write(state / "deployment.json")
    return dep, True


def down() -> bool:
    """Stop the background devnet; False when none was running."""
    import os
    import signal
    import time

    state = home()
    pid_file = state / "anvil.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    stopped = _alive(pid)
    if stopped:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    (state / "deployment.json").unlink(missing_ok=True)
    return stopped


def find_deployment(path: "Path | None" = None) -> Deployment:
    """The deployment at ``path``, or the devnet's; UsageError that says how to get one."""
    from veracity.errors import UsageError

    p = Path(path) if path is not None else home() / "deployment.json"
    if not p.is_file():
        raise UsageError(f"no deployment file at {p}: start a devnet (`veracity devnet up`) or pass --deployment")
    return Deployment.read(p)
