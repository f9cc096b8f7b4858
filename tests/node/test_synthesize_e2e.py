"""Synthetic data on the devnet: a client orders a ``synthesize`` job (a template, two seeds) from an
honest SmolLM2 provider; a validator that checks every order regenerates the samples and finds the
committed output root and trace root bit for bit ("match"); the order finalizes, and the client
pairs each seed with its text and the set's provenance, and contributes the set to a data pool
with that provenance."""

import json
import time

import httpx
import numpy as np

from veracity.blobs.transfer import fetch_any
from veracity.cid import cid_of, digest_of
from veracity.client.jobs import submit
from veracity.data.curator import contribute_samples
from veracity.workloads.jobs import Job
from veracity.workloads.spec import Inputs, JobSpec, Verification
from veracity.workloads.synthesize import provenance, samples

TOKEN = 10**18
TOPICS = {"template": "Name one fact about {seed}.", "seeds": ["rivers", "bread"], "max_tokens": 4}


def test_a_validator_regenerates_a_synthesize_jobs_samples_bit_for_bit(net, tmp_path):
    provider = net.provider(1, ["smollm2"])
    _, checks_url = net.validator(2, poll_interval=0.5)
    inputs = json.dumps(TOPICS).encode()
    (tmp_path / "topics.json").write_bytes(inputs)
    spec = JobSpec(kind="synthesize", model="smollm2", inputs=Inputs(path=str(tmp_path / "topics.json")), max_price=5,
                   deadline=600, verification=Verification(challenge_window=10, spot_check_rate=1.0))
    client = net.accts[3]
    try:
        out = submit(spec, net.dep, client.key, bid_wait=120, result_timeout=400, only={provider.address})
        _, _, _, market = net.dep.clients(client.key)
        order = market.order(out.order_id)
        assert order.state_name == "finalized" and order.provider == provider.address
        checks = []
        for _ in range(300):  # re-executed while the result could still be challenged; asked until it is reported
            checks = httpx.get(checks_url, timeout=5).json()
            if checks:
                break
            time.sleep(0.2)
        assert checks == [{"order_id": out.order_id, "verdict": "match", "detail": ""}], checks
        got = samples(inputs, out.outputs)
        assert [s["seed"] for s in got] == TOPICS["seeds"] and all(s["text"] for s in got)
        # anyone regenerates the set from the spec alone: the same bits the provider committed
        mine = Job(spec, inputs).run("torch")
        assert mine.outputs == out.outputs and mine.trace_root == out.trace_root == order.trace_root
        doc = spec.model_copy(update={"inputs": Inputs(cid=cid_of(inputs))}).model_dump_json(exclude_none=True)
        made = provenance(cid_of(doc.encode()), "smollm2", out.order_id, order.output_cid, order.trace_root,
                          order.provider)
        assert digest_of(made["job"]) == order.spec_cid and made["output_root"] == "0x" + mine.output_root.hex()
        # the set goes into a data pool, each item with its provenance
        owner = net.dep.data_pool_client(net.accts[4].key)
        topic = np.round(np.full(384, 32768 / np.sqrt(384))).astype(">i4").tobytes()  # any unit vector: nothing is scored here
        pool = owner.create_pool(bytes(32), topic, 9000, False, 600, 1, TOKEN, TOKEN)
        sent = contribute_samples(net.dep, client.key, pool, got, made)
        assert [i for i, _ in sent] == [0, 1]
        for i, cid in sent:
            blob = fetch_any(cid, [net.url])  # pushed to the nodes, where the curator reads it
            assert json.loads(blob)["provenance"] == made and owner.item(pool, i).contributor == client.address
    except AssertionError:
        print(net.logs())
        raise
