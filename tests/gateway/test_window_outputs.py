"""A lease window never holds more output records than a result commits (``MAX_OUTPUTS``): the
gateway moves the request that would overfill it to the next lease, and a provider refuses to
serve it (a window it could never post would leave its work unpaid)."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from veracity.chain.devnet import dev_accounts
from veracity.exact.program import MAX_OUTPUTS
from veracity.gateway.leases import Lease, LeaseClosed, LeasePool
from veracity.market import receipts as R
from veracity.models.registry import loaded
from veracity.node.sessions import LeaseError, LeaseLog, LeaseServer, LeaseTerms
from veracity.workloads.infer import (
    WINDOW_BATCH,
    joined_result,
    output_count,
    run_infer_job,
    served_run,
    window_outputs,
)

MARKET = "0x" + "22" * 20


def test_output_records_are_counted_per_generated_token_or_per_batch():
    gpt, mlp = loaded("tiny-gpt"), loaded("digits-mlp")
    assert output_count(gpt, [gpt.parse({"text": "the ", "max_tokens": n}) for n in (3, 8)]) == 11
    pixels = [mlp.parse({"pixels": [0] * 64}) for _ in range(33)]
    assert output_count(mlp, pixels) == 2  # one output record per batch of 32
    assert window_outputs(mlp, 32, 2, {"pixels": "not parsed"}, batch_size=32) == 2
    assert window_outputs(mlp, 32, 32, {"pixels": "not parsed"}) == 33  # a window's batches are of 1
    assert window_outputs(gpt, 0, 0, {"text": "the "}) == 32


def test_the_gateway_moves_a_request_that_would_overfill_a_window():
    lease = Lease(order_id=7, model="tiny-gpt", provider="0x" + "11" * 20, url="http://127.0.0.1:1", price=1,
                  deadline=10**9, opened=0.0)
    lease.items = [{"text": "the provider ", "max_tokens": 100}] * 10  # 1,000 output records
    lease.outputs = 1000
    n = LeasePool._outputs(lease, {"text": "the ", "max_tokens": 24})
    assert n == MAX_OUTPUTS  # fits exactly
    with pytest.raises(LeaseClosed, match="window is full"):
        LeasePool._outputs(lease, {"text": "the ", "max_tokens": 25})


def test_a_provider_refuses_a_request_its_window_could_not_commit(tmp_path):
    client, provider = dev_accounts(2)
    log = LeaseLog(tmp_path / "state.db")
    answered = []
    server = LeaseServer(log, provider.key, provider.address, 31337, MARKET,
                         lambda oid: LeaseTerms(client.address, "tiny-gpt", provider.address, 10**12, True),
                         lambda model, item: (answered.append(item), ("x", None))[1], lambda: 0,
                         outputs=lambda model, served, n, item: window_outputs(loaded(model), served, n, item))
    for i in range(10):  # served already: ten requests of 100 tokens
        item = {"text": "the provider ", "max_tokens": 100}
        log.add(7, i, R.input_line(item), R.output_line(item, "x"), json.dumps({}))
    item = {"text": "the ", "max_tokens": 25}
    sig = R.sign_request(client.key, 31337, MARKET, 7, 10, R.line_hash(R.input_line(item)))
    with pytest.raises(LeaseError, match="would hold 1025 output records, more than the 1024") as err:
        server.serve(7, 10, item, sig)
    assert err.value.status == 409 and answered == []  # nothing run, nothing logged
    assert log.count(7) == 10
    huge = {"text": "the " * (1 << 15), "max_tokens": 1}  # refused before its signature is even read
    with pytest.raises(LeaseError, match="at most 65,536 bytes") as err:
        server.serve(7, 10, huge, sig)
    assert err.value.status == 400 and answered == []


def test_a_lease_keeps_each_requests_run_once_it_ends_and_its_window_joins_them(tmp_path):
    client, provider = dev_accounts(2)
    log = LeaseLog(tmp_path / "state.db")
    mlp = loaded("digits-mlp")
    runner = ThreadPoolExecutor(1)

    def answer(model, item):  # as a provider answers: the run goes on after the answer
        if item["pixels"][0] < 0:  # a run that dies after its answer (a crash): not kept
            return "x", runner.submit(lambda: 1 / 0)
        run = served_run(mlp, mlp.parse(item), "numpy")
        return mlp.present(run.output), runner.submit(lambda: run)

    server = LeaseServer(log, provider.key, provider.address, 31337, MARKET,
                         lambda oid: LeaseTerms(client.address, "digits-mlp", provider.address, 10**12, True),
                         answer, lambda: 0)
    items = [{"pixels": [(i * 5 + j) % 17 for j in range(64)]} for i in range(3)]
    for i, item in enumerate(items):
        server.serve(7, i, item, R.sign_request(client.key, 31337, MARKET, 7, i, R.line_hash(R.input_line(item))))
    server.settled(7)
    inputs = "".join(R.input_line(i) for i in items).encode()
    joined = joined_result(mlp, inputs, log.runs(7))  # read back from SQLite
    window = run_infer_job("digits-mlp", inputs, "numpy", batch_size=WINDOW_BATCH, model=mlp)
    assert (joined.trace_root, joined.outputs, joined.output_digests) == \
        (window.trace_root, window.outputs, window.output_digests)
    assert joined.outputs.decode() == "".join(out for _, out, _ in log.served(7))  # what it answered
    lost = {"pixels": [-1] * 64}
    server.serve(7, 3, lost, R.sign_request(client.key, 31337, MARKET, 7, 3, R.line_hash(R.input_line(lost))))
    server.settled(7)
    assert len(log.runs(7)) == 3 < log.count(7) == 4  # its window is run again, not joined


def test_a_provider_that_stops_answering_is_tried_again_after_a_growing_backoff(monkeypatch):
    from types import SimpleNamespace

    from veracity.gateway import leases

    now = [1000.0]
    monkeypatch.setattr(leases.time, "monotonic", lambda: now[0])
    pool = SimpleNamespace(dead={})
    p = "0x" + "AB" * 20
    assert not LeasePool._is_down(pool, p)
    assert [LeasePool._down(pool, p) for _ in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert LeasePool._is_down(pool, p.lower())
    now[0] += 299
    assert LeasePool._is_down(pool, p)
    now[0] += 2
    assert not LeasePool._is_down(pool, p)  # tried again: a lease may go to it


def test_a_long_request_on_one_lease_never_holds_another_leases(tmp_path):
    import threading

    client, provider = dev_accounts(2)
    release, started = threading.Event(), threading.Event()

    def answer(model, item):  # lease 7's request runs until released
        if item["text"] == "long":
            started.set()
            assert release.wait(60)
        return "x", None

    server = LeaseServer(LeaseLog(tmp_path / "state.db"), provider.key, provider.address, 31337, MARKET,
                         lambda oid: LeaseTerms(client.address, "minilm", provider.address, 10**12, True),
                         answer, lambda: 0)

    def ask(oid, text):
        item = {"text": text}
        return server.serve(oid, 0, item, R.sign_request(client.key, 31337, MARKET, oid, 0,
                                                         R.line_hash(R.input_line(item))))

    long = threading.Thread(target=ask, args=(7, "long"))
    long.start()
    assert started.wait(60)
    assert ask(8, "short")["output"] == "x"  # served while lease 7's request still runs
    release.set()
    long.join(60)
    assert not long.is_alive()
