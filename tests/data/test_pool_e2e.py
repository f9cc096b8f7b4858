"""A data pool end to end on the devnet, with provider and validator daemons as real processes:
three contributors with registered devices, one of whom submits a near-copy of another's text
and one forged device signature; each contribution scored by a ``score`` job that the validator
re-executes; a provider that commits a wrong embedding (the only way to change a score) caught
and slashed, the item scored again by an honest provider; epoch rewards exact to the wei; a
consumer that buys the pool's data and fine-tunes on it, paying the contributors by score."""

import pytest
from eth_account import Account
from nodenet import TOKEN, Net

from veracity.chain.client import PROVIDER
from veracity.client.jobs import submit
from veracity.data import curator as C
from veracity.data import pools as P
from veracity.errors import ChainError
from veracity.sim.traffic import anvil_advance
from veracity.workloads.spec import Inputs, JobSpec, Training, Verification

EPOCH = 900
DEPOSIT = TOKEN
TEXTS = {  # contributor -> (text, label)
    5: ("A quiet film about grief that earns every tear it asks for.", 1),
    6: ("The plot drags badly, but the lead actor carries every scene.", 0),
    7: ("A quiet film about grief that earns every single tear it asks for.", 1),  # 5's, near copied
}


def test_a_pool_scores_rewards_and_sells_its_data_and_a_cheating_scorer_loses(tmp_path):
    net = Net(tmp_path, accounts=9, move_time=20, pool_window=15)
    try:
        honest = net.provider(1, ["minilm"], wait=False)
        cheater = net.provider(2, ["minilm"], behaviour="wrong-output", wait=False)
        net._registered(1, PROVIDER)
        net._registered(2, PROVIDER)
        validator, _ = net.validator(3, poll_interval=1.0)
        dep = net.dep
        owner = net.accts[4]
        pool_client = dep.data_pool_client(owner.key)
        topic = P.embed("a short review of a film")
        pool = pool_client.create_pool(bytes(32), topic, 9000, True, EPOCH, 1, 90 * TOKEN + 3, 30 * TOKEN, DEPOSIT)
        devices = {i: Account.create() for i in TEXTS}
        for i, dev in devices.items():
            pool_client.register_device(pool, dev.address, net.accts[i].address)

        def key_of(acct):
            return "0x" + bytes(acct.key).hex()

        _, token, reg, market = dep.clients(owner.key)
        treasury = market.treasury()
        start = {net.accts[i].address: token.balance_of(net.accts[i].address) for i in TEXTS}
        for i, (text, label) in TEXTS.items():
            C.contribute(dep, net.accts[i].key, pool, P.contribution_line(text, label), key_of(devices[i]))
        forged = Account.create()  # a device key the pool never registered
        with pytest.raises(ChainError, match="not from a device registered to the contributor"):
            C.contribute(dep, net.accts[6].key, pool, P.contribution_line("Two hours I will not get back.", 0),
                         key_of(forged))
        assert pool_client.pool(pool).contributions == 3

        attempts: dict[int, int] = {}

        def only(index):  # the near-copy's first score order goes to the cheater, the rest to the honest one
            attempts[index] = attempts.get(index, 0) + 1
            return {cheater.address} if index == 2 and attempts[index] == 1 else {honest.address}

        curator = C.Curator(dep, owner.key, pool, max_price=5 * TOKEN, bid_wait=30, only=only, log=print)
        curator.run(timeout=600, interval=1.0)

        items = [pool_client.item(pool, i) for i in range(3)]
        assert [it.state_name for it in items] == ["scored"] * 3
        embs = [C.embedding_of(C.score_job(cid, P.contribution_line(*TEXTS[5 + i])),
                               C.score_job(cid, P.contribution_line(*TEXTS[5 + i])).run("torch").outputs)
                for i, cid in enumerate(C.cid_from_digest(it.cid) for it in items)]
        want = [P.score(embs[0], topic, [], 9000)[2], P.score(embs[1], topic, embs[:1], 9000)[2],
                P.score(embs[2], topic, embs[:2], 9000)[2]]
        assert [it.score for it in items] == want and want[0] > 0 and want[1] > 0 and want[2] == 0
        # the near-copy's first order: the cheater's wrong embedding, overturned by the validator
        scored = {e.args["index"]: e for e in pool_client.events(pool) if e.name == "ScoreOrdered"}
        orders = [e.args["order_id"] for e in pool_client.events(pool) if e.name == "ScoreOrdered" and e.args["index"] == 2]
        assert len(orders) == 2 and scored[2].args["order_id"] == orders[-1]
        assert market.order(orders[0]).state_name == "overturned" and market.order(orders[0]).provider == cheater.address
        assert reg.node(cheater.address).stake < 1000 * TOKEN  # slashed
        assert market.order(orders[1]).provider == honest.address and market.order(orders[1]).state_name == "finalized"

        # the deposits: back to the accepted contributors, the near-copy's to the treasury
        people = {net.accts[i].address: items[i - 5].score for i in TEXTS}
        assert {a: token.balance_of(a) - start[a] for a in people} == {a: 0 if s else -DEPOSIT for a, s in people.items()}
        # the epoch's reward, to the wei, by score
        before = {a: token.balance_of(a) for a in people}
        treasury0 = token.balance_of(treasury)
        anvil_advance(dep)(EPOCH)
        dep.data_pool_client(net.accts[8].key).pay_epoch(pool, 0)  # anyone
        paid = P.shares(90 * TOKEN + 3, people)
        assert {a: token.balance_of(a) - before[a] for a in people} == {a: paid.get(a, 0) for a in people}
        assert paid[net.accts[7].address] == 0
        assert token.balance_of(treasury) - treasury0 == 90 * TOKEN + 3 - sum(paid.values())  # not the owner's

        # a consumer buys the data and fine-tunes on it: the contributors are paid by score
        consumer = net.accts[8]
        before = {a: token.balance_of(a) for a in people}
        data = C.buy(dep, consumer.key, pool, 40 * TOKEN)
        sale = P.shares(40 * TOKEN, people)
        assert {a: token.balance_of(a) - before[a] for a in people} == {a: sale.get(a, 0) for a in people}
        assert data == P.contribution_line(*TEXTS[5]) + P.contribution_line(*TEXTS[6])  # the accepted items
        (tmp_path / "pool.jsonl").write_bytes(data)
        spec = JobSpec(kind="finetune", model="minilm", inputs=Inputs(path=str(tmp_path / "pool.jsonl")), max_price=5,
                       deadline=900, training=Training(steps=2, batch=2, classes=2, rank=0),
                       verification=Verification(challenge_window=5))
        out = submit(spec, dep, consumer.key, bid_wait=60, only={honest.address})
        assert market.order(out.order_id).state_name == "finalized" and out.outputs
    finally:
        net.stop()
