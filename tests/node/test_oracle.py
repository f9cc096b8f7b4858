"""Contract-callable inference end to end: an example consumer contract (examples/contracts/
DigitLabeler.vy) asks the Oracle to label a handwritten digit; a provider daemon takes the
request, runs the exact digits MLP, commits its output root to the Market; after the challenge
window it delivers the canonical output blob (the logits tensor), which the Oracle hashes to the
committed output root before it calls the consumer back."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from nodenet import Net
from sklearn.datasets import load_digits
from web3.logs import DISCARD

from veracity.cid import cid_of
from veracity.errors import ChainError
from veracity.exact.levels import Levels
from veracity.exact.outputs import blob_root, encode_outputs
from veracity.exact.program import program_root
from veracity.exact.trace import outputs_root, tensor_digest
from veracity.market.bids import Bid, sign_bid
from veracity.models.registry import loaded
from veracity.workloads.infer import infer, job_program

LABELER = str(Path(__file__).resolve().parents[2] / "examples" / "contracts" / "DigitLabeler.vy")
TOKEN = 10**18


@pytest.fixture
def onet(tmp_path):
    n = Net(tmp_path, oracle_window=3, oracle_deadline=40)
    yield n
    n.stop()


def consumer(net, who):
    """The example consumer, deployed by ``who``, and that account's clients."""
    chain, token, _, market = net.dep.clients(who.key)
    address = chain.deploy(LABELER, net.dep.token, net.dep.oracle)
    return chain, token, market, chain.contract(LABELER, address)


def ask(chain, token, labeler, pixels, payment):
    line = json.dumps({"pixels": pixels}).encode()
    program = Levels.of(job_program("digits-mlp", line)).coarse_program()  # the requester's, as a Market client's
    token.approve(labeler.address, payment)
    receipt = chain.send(labeler.functions.label(line, payment, program_root(program), len(program)))
    (ev,) = chain.contract("Oracle", chain.w3.to_checksum_address(labeler.functions.oracle().call())) \
        .events.Requested().process_receipt(receipt, errors=DISCARD)
    return ev["args"]["request_id"]


def test_a_consumer_contract_gets_the_exact_label_through_the_oracle(onet):
    provider = onet.provider(1, ["digits-mlp"])
    user = onet.accts[4]
    chain, token, market, labeler = consumer(onet, user)
    d = load_digits()
    pixels = [int(v) for v in d.data[7]]
    m = loaded("digits-mlp")
    out = infer(m, [m.parse({"pixels": pixels})], backend="numpy", trace=False).outputs[0]
    want = m.present(out)["class"]
    logits = np.asarray(out, dtype=np.int32).reshape(1, 10)  # the job's one output record
    user0, prov0 = token.balance_of(user.address), token.balance_of(provider.address)
    rid = ask(chain, token, labeler, pixels, 2 * TOKEN)
    end = time.monotonic() + 120
    while not labeler.functions.labelled(rid).call():
        assert time.monotonic() < end, onet.logs()
        time.sleep(0.5)
    assert labeler.functions.digit(rid).call() == want == int(d.target[7])
    # what `veracity oracle program` tells a consumer's developer is what the Oracle built on chain
    line = json.dumps({"pixels": pixels})
    cli = json.loads(subprocess.run([sys.executable, "-m", "veracity.cli", "oracle", "program", "--model",
                                     "digits-mlp", "--input", line, "--json"], capture_output=True, text=True,
                                    check=True).stdout)
    assert cli["spec_cid"] == cid_of(onet.dep.oracle_client(user.key).spec(rid))
    assert (bytes.fromhex(cli["program_root"][2:]), cli["program_length"]) == market.program(rid)
    order = market.order(rid)
    assert order.state_name == "finalized" and order.provider == provider.address
    assert order.output_cid == outputs_root([tensor_digest(logits)]) == blob_root(encode_outputs([logits]))
    assert f"oracle request {rid}: delivered to its consumer" in onet.logs()
    fee = order.price * onet.dep.fee_bps // 10_000
    assert token.balance_of(provider.address) == prov0 + order.price - fee
    assert token.balance_of(user.address) == user0 - 2 * TOKEN  # the labeler keeps the bid's refund
    assert token.balance_of(labeler.address) == 2 * TOKEN - order.price


def test_a_request_nobody_can_run_is_cancelled_and_refunded(onet):
    onet.provider(1, ["digits-mlp"])
    user = onet.accts[4]
    chain, token, market, labeler = consumer(onet, user)
    oracle = onet.dep.oracle_client(user.key)
    token.approve(labeler.address, TOKEN)
    for sneaky in (b'{"pixels":\n[1]}', b'{"pixels":[1]}\rkind: train'):  # no line break can reshape the spec
        with pytest.raises(ChainError, match="one line of printable ASCII"):
            chain.send(labeler.functions.label(sneaky, TOKEN, bytes(32), 1))
    # 63 pixels: the provider cannot run it, so it does not take it
    chain.send(labeler.functions.label(json.dumps({"pixels": [1] * 63}).encode(), TOKEN, b"\1" * 32, 9))
    rid = market.fn.order_count().call()
    with pytest.raises(ChainError, match="deadline has not passed"):
        oracle.cancel(rid)
    taker = onet.accts[2]  # a taker must lock collateral: one offering none is refused
    bid = sign_bid(Bid(order_id=rid, provider=taker.address, price=TOKEN, collateral=0, expiry=chain.now() + 60),
                   taker.key, onet.dep.chain_id, onet.dep.market)
    with pytest.raises(ChainError, match="collateral is below the minimum"):
        onet.dep.oracle_client(taker.key).accept(bid)
    for _ in range(100):  # the provider has looked at it and declined (its log says why)
        if "cannot use the job inputs" in onet.logs():
            break
        time.sleep(0.2)
    w3 = chain.w3  # then the chain's clock passes the request's deadline (no need to wait 40 s for it)
    w3.provider.make_request("evm_increaseTime", [market.order(rid).deadline - chain.now() + 1])
    w3.provider.make_request("evm_mine", [])
    before = token.balance_of(labeler.address)
    oracle.cancel(rid)  # anyone may end it; the consumer gets the escrow back
    assert token.balance_of(labeler.address) == before + TOKEN
    assert market.order(rid).state_name == "cancelled" and not labeler.functions.labelled(rid).call()
    assert "cannot use the job inputs" in onet.logs()


def test_a_minilm_embedding_fits_fulfil_as_a_canonical_blob_and_is_taken(onet):
    """As a JSON line a minilm embedding was longer than fulfil's 4096 bytes; as the canonical
    output blob it is one int32 [1, 384] tensor, 1,550 bytes, so the provider takes it (it still
    checks the size first: an undelivered result is slashed)."""
    onet.provider(1, ["minilm"])
    user = onet.accts[4]
    chain, token, market, _ = consumer(onet, user)
    oracle = onet.dep.oracle_client(user.key)
    line = json.dumps({"text": "a cat sat on the mat"}).encode()
    program = Levels.of(job_program("minilm", line)).coarse_program()
    token.approve(oracle.address, TOKEN)
    chain.send(oracle.fn.request("minilm", line, user.address, TOKEN, program_root(program), len(program)))
    rid = market.fn.order_count().call()
    end = time.monotonic() + 120
    while f"oracle request {rid}: taken" not in onet.logs():
        assert time.monotonic() < end, onet.logs()
        time.sleep(0.5)
    assert "more than the Oracle's" not in onet.logs()
    assert oracle.fn.requests(rid).call()[3] == 2 and market.order(rid).provider == onet.accts[1].address
