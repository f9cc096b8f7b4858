"""Opening a record in a dispute replays the job, and the replay's cost is what bounds an honest
party's move: a lease window's replay runs only the request that holds the records (a window's
requests are batches of their own), on the fast backend, and stops at the last record asked for;
a provider refuses to serve a request whose own replay would not fit in part of a dispute move."""

import json

import numpy as np
import pytest

from veracity.chain.devnet import dev_accounts
from veracity.market import receipts as R
from veracity.market.policy import REPLAY_SHARE, PricePolicy
from veracity.models.registry import loaded
from veracity.node.sessions import LeaseError, LeaseLog, LeaseServer, LeaseTerms, window_admission
from veracity.workloads.infer import (
    WINDOW_BATCH,
    Exec,
    batch_holding,
    input_records,
    item_estimate,
    job_program,
    keeping,
    make_backend,
    parse_items,
    record_tensors,
)
from veracity.workloads.planner import program_flops

MARKET = "0x" + "22" * 20


def reference(model, inputs, batch_size):
    """Every record of the job, from a full run on the NumPy reference backend."""
    items = parse_items(model, input_records(inputs), "inputs")
    hook, kept = keeping(set(range(10**7)))
    ex = Exec(make_backend("numpy"), tamper=hook)
    for lo in range(0, len(items), batch_size):
        model.run(ex, items[lo:lo + batch_size])
    return kept


@pytest.mark.parametrize("name, lines", [
    ("smollm2", [{"prompt": "The sky is", "max_tokens": 3}, {"prompt": "Two plus two is", "max_tokens": 4}]),
    ("minilm", [{"text": "one"}, {"text": "a second sentence"}, {"text": "and a third one"}]),
])
def test_a_windows_replay_runs_only_the_request_that_holds_the_records(name, lines):
    model = loaded(name)
    inputs = "".join(json.dumps(x) + "\n" for x in lines).encode()
    program = job_program(name, inputs, model, batch_size=WINDOW_BATCH)
    ref = reference(model, inputs, WINDOW_BATCH)
    items = parse_items(model, input_records(inputs), "inputs")
    lo, start, steps = batch_holding(model, items, len(program) - 1, WINDOW_BATCH)
    assert lo == len(items) - 1 and 0 < start < len(program)  # the last request's first record
    assert program[start - 1].step == steps - 1 and program[start].step == steps
    wanted = {start, (start + len(program)) // 2, len(program) - 1}
    got = record_tensors(name, inputs, wanted, model=model, batch_size=WINDOW_BATCH)  # fast backend
    assert set(got) == wanted and all(np.array_equal(got[i], ref[i]) for i in wanted)
    seen = []
    record_tensors(name, inputs, wanted, model=model, batch_size=WINDOW_BATCH,
                   tamper=lambda i, op, x: (seen.append(i), x)[1])  # a replayed cheat: the reference backend
    assert seen[0] == start and seen[-1] == len(program) - 1  # none of the earlier requests, nothing past the last


def test_a_requests_estimate_counts_its_programs_flops_without_building_it():
    model = loaded("smollm2")
    for line in ({"prompt": "The sky is blue because", "max_tokens": 5}, {"prompt": "Hi", "max_tokens": 1}):
        program = job_program("smollm2", (json.dumps(line) + "\n").encode(), model)
        assert item_estimate(model, line).flops == program_flops(program)[0] > 0
    gpt = loaded("tiny-gpt")  # a model without its own count: its one-request program's
    line = {"text": "the ", "max_tokens": 3}
    assert item_estimate(gpt, line).flops == program_flops(job_program("tiny-gpt", (json.dumps(line) + "\n").encode(),
                                                                       gpt, batch_size=1))[0]


def test_a_provider_refuses_a_request_whose_replay_would_not_fit_a_dispute_move(tmp_path):
    client, provider = dev_accounts(2)
    log = LeaseLog(tmp_path / "state.db")
    model = loaded("smollm2")
    short, long = {"prompt": "Hi", "max_tokens": 2}, {"prompt": "Tell me a story. " * 40, "max_tokens": 200}
    move_time = 60
    # devices this slow: the short request's replay fits in REPLAY_SHARE of a move, the long one's does not
    fits = REPLAY_SHARE * move_time
    policy = PricePolicy(models=["smollm2"], price_floor=1, devices="1xCPU",
                         mfu=item_estimate(model, short).seconds("1xCPU", 1.0) / fits * 2)
    assert item_estimate(model, short).seconds("1xCPU", policy.mfu) < fits < \
        item_estimate(model, long).seconds("1xCPU", policy.mfu)
    answered = []
    server = LeaseServer(log, provider.key, provider.address, 31337, MARKET,
                         lambda oid: LeaseTerms(client.address, "smollm2", provider.address, 10**12, True),
                         lambda m, item: (answered.append(item), ("x", None))[1], lambda: 0,
                         outputs=window_admission(policy, move_time))

    def ask(index, item):
        return server.serve(7, index, item, R.sign_request(client.key, 31337, MARKET, 7, index,
                                                           R.line_hash(R.input_line(item))))

    assert ask(0, short)["output"] == "x"
    with pytest.raises(LeaseError, match="too long to serve: re-running it .* more than 50% of a dispute move "
                                         r"\(60 s\).*send a shorter prompt") as err:
        ask(1, long)
    assert err.value.status == 400 and answered == [short] and log.count(7) == 1  # nothing run or logged
    assert ask(1, short)["output"] == "x"  # the lease goes on
    no_disputes = window_admission(policy, None)  # a chain without disputes: no move to miss
    assert no_disputes("smollm2", 0, 0, long) == 200
