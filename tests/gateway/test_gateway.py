"""The OpenAI-compatible gateway end to end: anvil, two provider daemons and a validator, the
gateway as its own process, and the official ``openai`` package as the caller. Every window is
co-signed by its provider, which finalizes it (and is paid) after its challenge window; a client
cannot post a window its provider did not sign."""

import json
import subprocess
import sys
import time

import httpx
import openai
import pytest
from browser import check_receipt, chromium, console_errors, explorer
from nodenet import fuzz
from selenium.webdriver.common.by import By

from veracity.blobs.transfer import push
from veracity.chain.anvil import free_port
from veracity.chain.events import EventStream
from veracity.cid import cid_of, digest_of
from veracity.errors import ChainError
from veracity.gateway.leases import LeasePool, WindowTerms
from veracity.gateway.receipts import verify
from veracity.market import receipts as R
from veracity.market.bids import sign_window, window_signer
from veracity.models.registry import loaded
from veracity.workloads.infer import infer

MODELS = ["minilm", "tiny-gpt"]
CHAT_MODELS = [*MODELS, "smollm2"]  # the first test's providers also serve the chat LLM


def local(model, item):
    """What a local exact run answers for one request (the int64 reference; the chat LLM on the
    torch backend, which gives the same bits: tests/models/test_llama.py)."""
    m = loaded(model)
    backend = "torch" if model == "smollm2" else "numpy"
    return m.present(infer(m, [m.parse(item)], backend=backend, trace=False).outputs[0])


def receipt_verify(net, receipt, tmp_path):
    path = tmp_path / f"receipt-{receipt['lease']}-{receipt['index']}.json"
    path.write_text(json.dumps(receipt))
    return subprocess.run([sys.executable, "-m", "veracity.cli", "receipt", "verify", str(path), "--deployment",
                           str(net.dep_file)], capture_output=True, text=True, timeout=120)


def committed(gateway_url, receipt, timeout=120):
    """The receipt again, once its window's commitment is on chain."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = httpx.get(f"{gateway_url}/v1/receipts/{receipt['lease']}/{receipt['index']}", timeout=10).json()
        if r.get("window"):
            return r
        time.sleep(0.5)
    raise AssertionError(f"lease {receipt['lease']}'s window was not committed in {timeout} s")


@pytest.fixture
def gateway(net, tmp_path, request):
    # a test may ask for other models or a longer window (``indirect`` parametrization)
    param = {"models": MODELS, "window_s": 6, **getattr(request, "param", {})}
    models = param["models"]
    accts = net.providers((1, 2), models)
    providers = {a.address: proc for a, proc in zip(accts, net.procs[-2:])}
    validator, checks = net.validator(3)
    port = free_port()
    log = open(tmp_path / "gateway.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "veracity.cli", "gateway", "run", "--port", str(port),
                             "--deployment", str(net.dep_file), "--account", "4", "--window-requests", "4",
                             "--window-s", str(param["window_s"]), "--challenge-window", "4"], stdout=log,
                            stderr=subprocess.STDOUT)
    net.procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/v1/models", timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    yield client, url, providers, checks
    print((tmp_path / "gateway.log").read_text())
    print(net.logs())


def market_events(net):
    """Every Market event so far, and the block they run to."""
    market = net.dep.clients(net.accts[0].key)[3]
    latest = market.chain.w3.eth.block_number
    return [e for e in EventStream(market.chain, {"Market": net.dep.market}).poll() if e.block <= latest], latest


@pytest.mark.parametrize("gateway", [{"models": CHAT_MODELS}], indirect=True, ids=["with-smollm2"])
def test_the_openai_package_gets_exact_answers_with_receipts_that_verify(gateway, net, tmp_path):
    client, url, providers, checks = gateway
    _, token, _, market = net.dep.clients(net.accts[0].key)
    before = {p: token.balance_of(p) for p in providers}
    ids = {m.id for m in client.models.list().data}
    assert {"minilm", "tiny-gpt", "digits-mlp", "auto"} <= ids

    texts = ["a cat sat on the mat", "stock markets fell sharply today"]
    emb = client.embeddings.create(model="minilm", input=texts)  # the package asks for base64 floats
    assert [d.embedding for d in emb.data] == [local("minilm", {"text": t}) for t in texts]

    done = client.completions.create(model="tiny-gpt", prompt="the king ", max_tokens=12)
    assert done.choices[0].text == local("tiny-gpt", {"text": "the king ", "max_tokens": 12})

    stream = client.chat.completions.create(model="tiny-gpt", max_tokens=10, stream=True,
                                            messages=[{"role": "user", "content": "Once upon a time"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == local("tiny-gpt", {"text": "once upon a time", "max_tokens": 10})
    last = chunks[-1].model_extra["veracity"]

    # the chat LLM: the conversation through its template, streamed token by token, ending at its
    # end-of-turn token, with usage in its tokens
    question = [{"role": "user", "content": "What is the capital of France?"}]
    chunks = list(client.chat.completions.create(model="smollm2", max_tokens=12, stream=True, messages=question))
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert answer == local("smollm2", {"messages": question, "max_tokens": 12})["text"] == \
        "The capital of France is Paris."
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens == 8
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 7  # one event per token
    chat_receipt = chunks[-1].model_extra["veracity"]["receipt"]
    cut = client.chat.completions.create(model="smollm2", max_tokens=12, messages=question, stop=["Paris"])
    assert cut.choices[0].message.content == "The capital of France is " and cut.choices[0].finish_reason == "stop"

    raw = client.completions.with_raw_response.create(model="auto", prompt="write a story about a dragon",
                                                      max_tokens=5)
    picked = raw.parse()
    assert picked.model == "smollm2" and raw.headers["x-veracity-model"] == "smollm2"
    sims = picked.model_extra["veracity"]["auto"]["similarity"]
    assert sims["smollm2"] > sims["minilm"] and sims["smollm2"] > sims["digits-mlp"]
    header = json.loads(raw.headers["x-veracity-receipt"])
    assert header == {k: v for k, v in picked.model_extra["veracity"]["receipt"].items() if v is not None}

    # every receipt verifies against the chain once its window is committed (what `veracity receipt
    # verify` checks; the command itself is run on the first, and the chat command below on another)
    receipts = [emb.model_extra["veracity"]["receipt"], *emb.model_extra["veracity"]["receipts"],
                done.model_extra["veracity"]["receipt"], last["receipt"], header, chat_receipt]
    for r in receipts:
        committed(url, r)
        check = verify(net.dep, net.accts[0].key, R.Receipt.model_validate(r))
        assert check.ok and check.verdict == "verified", (r, check)
    out = receipt_verify(net, receipts[0], tmp_path)
    assert out.returncode == 0 and "verified" in out.stdout, out.stdout + out.stderr
    # and validators re-executed the windows like any order
    leases = {r["lease"] for r in receipts}
    end = time.monotonic() + 120
    while time.monotonic() < end:
        verdicts = {c["order_id"]: c["verdict"] for c in httpx.get(checks, timeout=5).json()}
        if leases <= set(verdicts):
            break
        time.sleep(1)
    assert all(verdicts[lease] == "match" for lease in leases), verdicts
    # and each provider ran every request once: a window's result is its requests' runs joined
    logs = net.logs()
    assert all(f"lease {lease}: window result joined from the" in logs for lease in leases), logs

    # every window posted was co-signed by its lease's provider; after its challenge window the
    # provider finalized it itself (nobody else finalizes a lease) and was paid
    end = time.monotonic() + 120
    while time.monotonic() < end and any(market.order(lease).state_name != "finalized" for lease in leases):
        time.sleep(1)
    assert {lease: market.order(lease).state_name for lease in leases} == {lease: "finalized" for lease in leases}
    events, block = market_events(net)
    posted = [e for e in events if e.name == "WindowPosted"]
    assert leases <= {e.args["order_id"] for e in posted}
    for e in posted:
        _, call = market.contract.decode_function_input(market.chain.w3.eth.get_transaction(e.tx_hash)["input"])
        assert window_signer(e.args["order_id"], call["spec_cid"], call["program_root"], call["program_length"],
                             "0x" + call["signature"].hex(), net.dep.chain_id, net.dep.market) == \
            market.order(e.args["order_id"]).provider
    paid = {e.args["order_id"]: e.args for e in events if e.name == "Finalized"}
    for lease in leases:
        order = market.order(lease)
        assert paid[lease]["provider"] == order.provider
        assert paid[lease]["paid"] == order.price - order.price * net.dep.fee_bps // 10_000 > 0
    for p in providers:  # paid exactly what its finalized windows earned, nothing held back
        earned = sum(a["paid"] for a in paid.values() if a["provider"] == p)
        assert token.fn.balanceOf(p).call(block_identifier=block) == before[p] + earned

    # the terminal chat streams an answer and shows its receipt verified once its window is committed
    out = subprocess.run([sys.executable, "-m", "veracity.cli", "chat", "--url", f"{url}/v1", "--max-tokens", "12",
                          "-m", "What is the capital of France?", "--wait", "120", "--deployment", str(net.dep_file)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "The capital of France is Paris." in out.stdout, out.stdout + out.stderr
    assert "verified: the answer is line" in out.stdout, out.stdout

    # a receipt whose answer was altered does not verify
    forged = dict(receipts[0], output_hash="0x" + "00" * 32)
    out = receipt_verify(net, forged, tmp_path)
    assert out.returncode == 1 and "not by its provider" in out.stdout, out.stdout

    # the explorer's receipt checker, in a real browser, gives the same verdicts; the leases page lists the windows
    with explorer(net.dep_file, tmp_path) as site:
        driver = chromium()
        try:
            verdict, reason = check_receipt(driver, site, chat_receipt)
            assert verdict == "verified" and "line" in reason, (verdict, reason)
            verdict, reason = check_receipt(driver, site, forged)
            assert verdict == "failed" and "not by its provider" in reason, (verdict, reason)
            assert check_receipt(driver, site, {"lease": "x"})[0].startswith("not a Veracity receipt")
            driver.get(site + "leases")
            end = time.monotonic() + 30
            while not all(f"order {lease}" in driver.find_element(By.ID, "main").text for lease in leases):
                assert time.monotonic() < end, driver.find_element(By.ID, "main").text
                time.sleep(0.5)
                driver.refresh()
            assert "finalized" in driver.find_element(By.ID, "main").text
            assert console_errors(driver) == []
        finally:
            driver.quit()


@pytest.mark.parametrize("gateway", [{"window_s": 120}], indirect=True, ids=["long-window"])
def test_a_provider_killed_mid_session_costs_one_retried_request(gateway):
    """(A long window: the dead provider's lease must still be the open one when the next request
    comes, however slow the machine.)"""
    client, _, providers, _ = gateway
    first = client.completions.create(model="tiny-gpt", prompt="the lady ", max_tokens=6)
    holder = first.model_extra["veracity"]["receipt"]["provider"]
    providers[holder].kill()  # the lease's provider dies mid-session
    providers[holder].wait()
    again = client.completions.create(model="tiny-gpt", prompt="the lady ", max_tokens=6)
    v = again.model_extra["veracity"]
    assert again.choices[0].text == first.choices[0].text == local("tiny-gpt", {"text": "the lady ", "max_tokens": 6})
    assert v["retried"] is True and v["receipt"]["provider"] != holder and v["lease"] != first.model_extra["veracity"]["lease"]
    after = client.completions.create(model="tiny-gpt", prompt="the lady ", max_tokens=6)
    assert after.model_extra["veracity"]["retried"] is False


def test_malformed_requests_and_windows_get_clear_errors(gateway, net):
    client, url, _, _ = gateway
    with pytest.raises(openai.NotFoundError, match="model `gpt-5` does not exist"):
        client.completions.create(model="gpt-5", prompt="hello", max_tokens=3)
    with pytest.raises(openai.BadRequestError, match="vocabulary has no"):
        client.completions.create(model="tiny-gpt", prompt="HELLO!", max_tokens=3)
    with pytest.raises(openai.BadRequestError, match="does not serve /v1/embeddings"):
        client.embeddings.create(model="tiny-gpt", input="hello")
    bad = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    # an input past the model's limit is refused before anything runs (a 32 MiB one once took the
    # gateway down: tokenized under the provider's lease lock, past the gateway's timeout)
    huge = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": "word " * (1 << 20)}, timeout=60)
    assert huge.status_code == 400 and "minilm takes at most 16,384" in huge.json()["error"]["message"]
    many = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": ["a"] * 65})
    assert many.status_code == 400 and "at most 64 per request" in many.json()["error"]["message"]
    lone = httpx.post(f"{url}/v1/embeddings", content=b'{"model": "minilm", "input": "a \\ud800 b"}',
                      headers={"content-type": "application/json"})
    assert lone.status_code == 400 and "lone surrogate" in lone.json()["error"]["message"]
    # ``auto`` reads a long request's first words, and a blank one picks by the endpoint alone
    long = httpx.post(f"{url}/v1/embeddings", json={"model": "auto", "input": "word " * 1000}, timeout=60)
    assert long.status_code == 400 and "input too long" in long.json()["error"]["message"]  # for minilm itself
    blank = httpx.post(f"{url}/v1/embeddings", json={"model": "auto", "input": " \n "}, timeout=60)
    assert blank.status_code < 500 and blank.json().get("veracity", {}).get("auto", {}).get("picked", "minilm") == \
        "minilm", blank.text
    # schema-driven requests: never a server error, and every error in OpenAI's shape
    for op, case, resp in fuzz(url, 8):
        assert resp.status_code < 500, (op.label, case.body, resp.status_code, resp.text[:300])
        if resp.status_code >= 400:
            err = resp.json()["error"]
            assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str), resp.text
    # the gateway still serves after them
    assert client.embeddings.create(model="minilm", input="fine").data[0].embedding == local("minilm", {"text": "fine"})

    # a client (account 5, not the gateway) cannot post a window its provider did not co-sign: a
    # sybil challenging a program the provider never agreed to would have it slashed
    pool = LeasePool(net.dep, net.accts[5].key, WindowTerms(challenge_window=4, bid_wait=15))
    served = pool.call("tiny-gpt", {"text": "the king ", "max_tokens": 3})
    lease = pool.open["tiny-gpt"]
    spec, inputs, root, length = pool._window(lease)
    for blob in (spec, inputs):
        push(lease.url, blob)
    spec_cid = digest_of(cid_of(spec))
    window = {"spec_cid": "0x" + spec_cid.hex(), "program_root": "0x" + root.hex(), "program_length": length}
    at = f"{lease.url}/leases/{lease.order_id}/window"

    def ask(body, where=at):
        return httpx.post(where, json=body, timeout=60)

    wrong_root = bytes(32)
    refused = ask({**window, "program_root": "0x" + wrong_root.hex()})
    assert refused.status_code == 409 and "not the one this provider computes" in refused.json()["detail"]
    with pytest.raises(ChainError, match="market: the window is not signed by the lease's provider"):
        pool.market.post_window(lease.order_id, spec_cid, wrong_root, length,
                                sign_window(lease.order_id, spec_cid, wrong_root, length, net.accts[5].key,
                                            net.dep.chain_id, net.dep.market))
    other = b'{"text": "the queen ", "max_tokens": 3}\n'  # a window of requests it never served
    other_spec = spec.replace(cid_of(inputs).encode(), cid_of(other).encode())
    for blob in (other_spec, other):
        push(lease.url, blob)
    refused = ask({**window, "spec_cid": "0x" + digest_of(cid_of(other_spec)).hex()})
    assert refused.status_code == 409 and "not the 1 requests this provider served" in refused.json()["detail"]
    for bad in ({**window, "spec_cid": "0x12"}, {**window, "program_root": "0x" + "zz" * 32},
                {**window, "program_length": 2**256}, {**window, "program_length": 0}, [window], {}):
        assert ask(bad).status_code == 400, bad
    assert ask(window, f"{lease.url}/leases/{2**256}/window").status_code == 404
    assert ask(window, f"{lease.url}/leases/{lease.order_id + 1000}/window").status_code == 404
    # what it served, it signs; the signature binds the program, and the lease then serves no more
    signed = ask(window)
    assert signed.status_code == 200, signed.text
    signature = signed.json()["signature"]
    assert window_signer(lease.order_id, spec_cid, root, length, signature, net.dep.chain_id,
                         net.dep.market) == lease.provider
    assert ask(window).json()["signature"] == signature
    item = {"text": "the lady ", "max_tokens": 3}
    sig = R.sign_request(net.accts[5].key, net.dep.chain_id, net.dep.market, lease.order_id, 1,
                         R.line_hash(R.input_line(item)))
    more = httpx.post(f"{lease.url}/leases/{lease.order_id}/requests", json={"index": 1, "item": item, "signature": sig},
                      timeout=60)
    assert more.status_code == 409 and "window is signed" in more.json()["detail"]
    with pytest.raises(ChainError, match="market: the window is not signed by the lease's provider"):
        pool.market.post_window(lease.order_id, spec_cid, wrong_root, length, signature)
    pool.market.post_window(lease.order_id, spec_cid, root, length, signature)
    assert pool.market.program(lease.order_id) == (root, length)
    assert served["receipt"].provider.lower() == lease.provider.lower()

