"""SmolLM2 on the devnet end to end: a provider daemon that alters one element in a middle block
of the chat model (corrupt-op) commits a consistent but wrong trace; the validator daemon
re-executes the job, challenges, and plays the game down to one element, which the
LlamaReferee or LlamaAttentionReferee judges; the cheater is slashed and its client refunded."""

import json
import re

from nodenet import TOKEN, Net

from veracity.client.jobs import submit
from veracity.errors import VeracityError
from veracity.workloads.spec import Inputs, JobSpec, Verification

STAKE = 1000 * TOKEN


def test_a_provider_that_corrupts_smollm2_is_judged_and_slashed(tmp_path):
    net = Net(tmp_path, accounts=6, move_time=20)
    try:
        cheater = net.provider(1, ["smollm2"], behaviour="corrupt-op")
        validator, _ = net.validator(2, poll_interval=1.0)
        dep = net.dep
        _, token, reg, market = dep.clients(dep.accounts[0].key)
        # three passes: half-way through is a middle block of the second, whose KV cache the third reads
        # (a coarse record); short, as the cheater runs the int64 reference
        line = {"prompt": "The capital of France is", "max_tokens": 3}
        (tmp_path / "chat.jsonl").write_text(json.dumps(line) + "\n")
        spec = JobSpec(kind="infer", model="smollm2", inputs=Inputs(path=str(tmp_path / "chat.jsonl")), max_price=5,
                       deadline=900, verification=Verification(challenge_window=60))
        client = net.accts[3]
        before = token.balance_of(client.address)
        try:
            submit(spec, dep, client.key, bid_wait=120, result_timeout=600, only={cheater.address})
            raise AssertionError("the corrupted result was accepted")
        except VeracityError as exc:
            assert "a dispute found provider" in str(exc) and "was refunded" in str(exc), str(exc)
        order = market.order(1)
        assert order.state_name == "overturned"
        node = reg.node(cheater.address)
        assert node.stake == STAKE - order.collateral - (STAKE - order.collateral) * 2000 // 10_000
        assert token.balance_of(client.address) == before  # paid, then refunded in full
        judged = re.search(r"called the referee on element \d+ of record \d+ \((block\.(\d+)\.[^)]*)\)", net.logs())
        assert judged and 5 <= int(judged.group(2)) <= 25, judged  # an op in a middle block, judged on chain
    except AssertionError:
        print(net.logs())
        raise
    finally:
        net.stop()
