"""Training jobs through the network: provider daemons train exactly, commit the checkpoint and
its trace, a validator re-executes it; the same job split into work units on two providers ends
at the unsplit job's checkpoint, bit for bit; a MiniLM LoRA fine-tune settles the same way."""

from pathlib import Path

import httpx
import pytest

from veracity.client.jobs import submit, submit_units
from veracity.errors import InputError, VeracityError
from veracity.training import mlp as MLP
from veracity.verify.sampling import challenger_reward
from veracity.workloads.jobs import Job
from veracity.workloads.spec import Verification, load_spec

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def _checks(url, orders, timeout=120):
    import time

    end = time.monotonic() + timeout
    verdicts = {}
    while time.monotonic() < end:
        verdicts = {c["order_id"]: c["verdict"] for c in httpx.get(url, timeout=5).json()}
        if all(o in verdicts for o in orders):
            break
        time.sleep(0.5)
    return verdicts


def test_a_training_job_and_its_work_units_settle_at_one_checkpoint(net):
    p1 = net.provider(2, ["digits-mlp"])
    p2 = net.provider(3, ["digits-mlp", "minilm"])
    _, checks = net.validator(5)
    client = net.accts[1]
    spec = load_spec(EXAMPLES / "jobs" / "digits-train.yaml")
    spec = spec.model_copy(update={"verification": Verification(challenge_window=2, spot_check_rate=1.0),
                                   "training": spec.training.model_copy(update={"steps": 40})})
    data = Path(spec.inputs.path).read_bytes()
    local = Job(spec, data).run("numpy")

    whole = submit(spec, net.dep, client.key, bid_wait=120, result_timeout=400)
    assert whole.outputs == local.outputs and whole.trace_root == local.trace_root
    assert MLP.load_checkpoint(whole.outputs).step == 40

    units = submit_units(spec, net.dep, client.key, 2, rotate=[p1.address, p2.address], bid_wait=120,
                         result_timeout=400)
    assert [u.provider for u in units] == [p1.address, p2.address]  # two providers shared the job
    assert MLP.load_checkpoint(units[0].outputs).step == 20
    assert units[-1].output_cid == whole.output_cid and units[-1].outputs == whole.outputs
    assert units[0].trace_root != whole.trace_root  # each unit committed its own 20 steps

    # a LoRA fine-tune of MiniLM, the same way: the exact encoder's features, then the adapter's steps
    tune = load_spec(EXAMPLES / "jobs" / "reviews-finetune.yaml")
    few = b"".join(Path(tune.inputs.path).read_bytes().splitlines(keepends=True)[:48])
    (net.folder / "few.jsonl").write_bytes(few)
    tune = tune.model_copy(update={"inputs": tune.inputs.model_copy(update={"path": str(net.folder / "few.jsonl")}),
                                   "verification": Verification(challenge_window=2, spot_check_rate=1.0),
                                   "training": tune.training.model_copy(update={"steps": 12})})
    tuned = submit(tune, net.dep, client.key, bid_wait=120, result_timeout=400)  # judged on chain: no consent asked
    assert tuned.outputs == Job(tune, few).run("numpy").outputs

    orders = [whole.order_id, *(u.order_id for u in units), tuned.order_id]
    verdicts = _checks(checks, orders)
    assert [verdicts.get(o) for o in orders] == ["match"] * 4, net.logs()


def test_a_unit_whose_start_checkpoint_is_nowhere_is_refused_before_any_order(net):
    net.provider(3, ["digits-mlp"])
    spec = load_spec(EXAMPLES / "jobs" / "digits-train.yaml")
    missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"start": missing})})
    _, _, _, market = net.dep.clients(net.accts[1].key)
    before = market.fn.order_count().call()
    with pytest.raises(InputError, match=f"start checkpoint {missing} is on no registered provider"):
        submit(spec, net.dep, net.accts[1].key, bid_wait=5)
    assert market.fn.order_count().call() == before


def test_a_cheating_trainer_is_caught_judged_and_slashed(tmp_path):
    """A provider daemon that alters one element of a weight gradient half-way through a training
    job (and trains on from it) commits a consistent, wrong checkpoint; the validator daemon's
    re-execution differs, it challenges, the game runs to that element inside the optimizer step,
    the TrainReferee recomputes it, and the cheater loses its collateral and a fifth of its stake."""
    from nodenet import TOKEN, Net

    net = Net(tmp_path, accounts=6, move_time=8)
    try:
        cheater = net.provider(3, ["digits-mlp"], behaviour="corrupt-op")
        validator, checks = net.validator(5)
        _, token, reg, market = net.dep.clients(net.dep.accounts[0].key)
        client = net.accts[1]
        spec = load_spec(EXAMPLES / "jobs" / "digits-train.yaml")
        spec = spec.model_copy(update={"verification": Verification(challenge_window=40),
                                       "training": spec.training.model_copy(update={"steps": 6})})
        before, v_before = token.balance_of(client.address), token.balance_of(validator.address)
        with pytest.raises(VeracityError, match="a dispute found provider"):
            submit(spec, net.dep, client.key, bid_wait=120, result_timeout=400)
        order = market.order(market.fn.order_count().call())
        assert order.state_name == "overturned" and order.provider == cheater.address
        share = (1000 * TOKEN - order.collateral) * 2000 // 10_000
        assert token.balance_of(client.address) == before  # refunded in full
        assert reg.node(cheater.address).stake == 1000 * TOKEN - order.collateral - share
        assert token.balance_of(validator.address) == v_before + challenger_reward(order.collateral + share)
        assert ".gw" in net.logs() and "called the referee on element" in net.logs()
    except AssertionError:
        print(net.logs())
        raise
    finally:
        net.stop()
