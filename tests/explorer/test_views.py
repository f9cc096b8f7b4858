"""The explorer's words and summaries from event rows, including the odd events an attacker can
emit (anyone registers a node or an agent with any strings): one never takes a page down, names
an address that is not one, or credits the wrong party with a dispute."""

from veracity.explorer.app import checks_url
from veracity.explorer.dataviews import pools, tasks
from veracity.explorer.index import addresses
from veracity.explorer.views import describe, leaderboard, order_story

P, V, W, C = ("0x" + c * 40 for c in "abcd")
ids = iter(range(1, 10**6))


def ev(contract, name, order=None, tx=None, **args):
    i = next(ids)
    return {"id": i, "block": i, "time": 0, "tx": tx or f"0x{i:x}", "contract": contract, "name": name,
            "order_id": order, "args": args}


def reg(node, role):
    return ev("Registry", "Registered", node=node, role=role, stake=10**21, endpoint="<script>alert(1)</script>")


def test_an_odd_event_is_told_by_its_fields_and_escaped():
    said = describe(reg(P, 1))
    assert "<script>" not in said and "&lt;script&gt;" in said
    broken = ev("Market", "Finalized", 3, order_id=3, provider=P)  # no "paid": told by its fields, not a 500
    assert describe(broken).startswith("Market Finalized: order_id 3")
    mint = ev("AgentRegistry", "Transfer", sender="0x" + "0" * 40, receiver=P, token_id=7)
    assert "agent <a class=\"agent\" href=\"/agents#agent-7\">7</a> was minted to" in describe(mint)
    burn = ev("Token", "Transfer", sender=P, receiver="0x" + "0" * 40, value=5 * 10**17)
    assert describe(burn).startswith("0.5 VRC burnt from")


def test_only_real_addresses_are_an_events_actors():
    assert addresses({"endpoint": "0x" + "g" * 40, "uri": "0x" + "ab" * 20 + " ", "who": "0x" + "A" * 40,
                      "zero": "0x" + "0" * 40, "many": [V, "x"]}) == {P, V}


def test_disputes_are_credited_to_who_won_them():
    events = [reg(P, 1), reg(V, 2), reg(W, 2),
              ev("Market", "BidAccepted", 1, order_id=1, provider=P, price=1, collateral=1, refund=0),
              ev("Disputes", "Challenged", 1, order_id=1, challenger=V, bond=1, root="0x00"),
              ev("Disputes", "Settled", 1, order_id=1, outcome=1, reason="the provider's element is right"),
              ev("Disputes", "Challenged", 1, order_id=1, challenger=V, bond=1, root="0x00"),
              # an output fault proven while a game runs: the game is settled lost, the prover (W) is paid
              ev("Disputes", "Settled", 1, order_id=1, outcome=2, reason="the output was proven wrong"),
              ev("Market", "Overturned", 1, order_id=1, provider=P, challenger=W, refund=1, slashed=2),
              ev("Market", "Overturned", 2, order_id=2, provider=P, challenger=W, refund=1, slashed=2)]
    nodes = leaderboard(events)
    assert (nodes[P].disputes_won, nodes[P].disputes_lost) == (1, 2)
    assert (nodes[V].disputes_won, nodes[V].disputes_lost) == (0, 1)
    assert (nodes[W].disputes_won, nodes[W].disputes_lost) == (2, 0)


def test_an_orders_story_shows_its_latest_game():
    o = 5
    events = [ev("Market", "OrderOpened", o, order_id=o, client=C, spec_cid="0x" + "11" * 32, kind=1,
                 model_id="0x" + "22" * 32, max_price=10**18, deadline=0, challenge_window=60, spot_check_bps=0),
              ev("Market", "ResultCommitted", o, order_id=o, provider=P, output_cid="0x" + "33" * 32,
                 trace_root="0x" + "44" * 32, trace_length=8, outputs=[]),
              ev("Market", "ChallengeSet", o, order_id=o, challenged=True),
              ev("Disputes", "Challenged", o, order_id=o, challenger=V, bond=1, root="0x00"),
              ev("Disputes", "Query", o, order_id=o, index=3, agree=-1, differ=8, deadline=0),
              ev("Disputes", "Located", o, order_id=o, record=2),
              ev("Disputes", "ElementLocated", o, order_id=o, element=12, provider_value=1, challenger_value=2),
              ev("Disputes", "Settled", o, order_id=o, outcome=1, reason="the provider's element is right")]
    first = order_story(o, events + [ev("Market", "ChallengeSet", o, order_id=o, challenged=False)], {})
    assert first.state == "committed" and first.where == "at record 2, element 12" and first.games == 1
    second = events + [ev("Market", "ChallengeSet", o, order_id=o, challenged=False),
                       ev("Disputes", "Challenged", o, order_id=o, challenger=W, bond=1, root="0x00"),
                       ev("Disputes", "Query", o, order_id=o, index=5, agree=-1, differ=8, deadline=0),
                       ev("Disputes", "Located", o, order_id=o, record=6)]
    s = order_story(o, second, {})
    assert s.games == 2 and s.where == "at record 6" and s.element is None and s.judgement is None
    assert [r.what for r in s.rounds] == ["records", "record"] and s.rounds[0].size == 8


def test_a_validators_checks_are_asked_at_its_host_only():
    assert checks_url("http://127.0.0.1:9000/some/path?x=") == "http://127.0.0.1:9000/checks"
    assert checks_url("https://v.example.org") == "https://v.example.org/checks"
    assert checks_url("http://[::1]:80/") == "http://[::1]:80/checks"
    assert checks_url("http://user@evil/%0d%0a") == "http://evil/checks"  # its host only, never its path
    for bad in ("http://[::1", "file:///etc/passwd", "javascript:alert(1)", "", "0x" + "ab" * 20):
        assert checks_url(bad) is None, bad


# the data layer: pools and labelling tasks ------------------------------------------------------
D32 = "0x" + "11" * 32
ZERO = "0x" + "0" * 40


def pool_events():
    """Pool 0 (near-copy at 0.9): P's item accepted, V's a near-copy, W's rejected; epoch 0 paid, one sale."""
    return [ev("DataPool", "PoolCreated", pool=0, owner=C, curator=C, schema_cid=D32, topic_keccak=D32,
               threshold_bps=9000, devices=False, start=0, epoch_length=600, epochs=2, epoch_reward=90 * 10**18,
               score_budget=30 * 10**18),
            ev("DataPool", "Contributed", pool=0, index=0, contributor=P, cid=D32, epoch=0, device=ZERO),
            ev("DataPool", "Contributed", pool=0, index=1, contributor=V, cid="0x" + "22" * 32, epoch=0, device=W),
            ev("DataPool", "Contributed", pool=0, index=2, contributor=W, cid="0x" + "33" * 32, epoch=0, device=ZERO),
            ev("DataPool", "ScoreOrdered", 4, pool=0, index=0, order_id=4, spec_cid=D32),
            ev("DataPool", "ScoreOrdered", 5, pool=0, index=1, order_id=5, spec_cid=D32),
            ev("DataPool", "Accepted", pool=0, index=0, position=0, embedding_keccak=D32),
            ev("DataPool", "Scored", 4, pool=0, index=0, contributor=P, cid=D32, order_id=4, program_root="0x12ab" * 16,
               quality_bps=4612, similarity_bps=0, score=4612, binding=D32),
            ev("DataPool", "Scored", 5, pool=0, index=1, contributor=V, cid=D32, order_id=5, program_root="0x12ab" * 16,
               quality_bps=4600, similarity_bps=9912, score=0, binding=D32),
            ev("DataPool", "Rejected", pool=0, index=2, reason="<b>not JSON</b>"),
            ev("DataPool", "Paid", pool=0, contributor=P, amount=245 * 10**17, why=1, epoch=0),
            ev("DataPool", "EpochPaid", pool=0, epoch=0, total_score=4612, reward=90 * 10**18,
               remainder=655 * 10**17, remainder_to=W),
            ev("DataPool", "Paid", pool=0, contributor=P, amount=40 * 10**18, why=2, epoch=0),
            ev("DataPool", "Bought", pool=0, buyer=W, sale=0, amount=40 * 10**18, dataset_cid=D32, items=1,
               remainder=0)]


def test_a_pools_events_are_told_with_their_links():
    created, c0, c1, _, ordered, _, accepted, scored, copy, rejected, paid, epoch, sale_paid, bought = pool_events()
    said = describe(created)
    assert said.startswith(f'<a class="addr" href="/address/{C}">') and 'opened <a class="pool" href="/data#pool-0">' \
        "pool 0</a>: 2 epochs of 10 min, 90 VRC each, 30 VRC for scoring, near-copy at similarity 0.9" in said
    assert describe(c0).startswith(f'contributor <a class="addr" href="/address/{P}">') and \
        'to <a class="pool" href="/data#pool-0">pool 0</a> (<a class="item" href="/data#pool-0-item-0">item 0</a>, ' \
        "epoch 0)" in describe(c0) and 'href="/cid/b' in describe(c0)
    assert f'from device <a class="addr" href="/address/{W}"' in describe(c1)  # a device pool's item
    assert '<a class="order" href="/order/4">order 4</a>' in describe(ordered)
    text = describe(copy, thresholds={0: 9000})
    assert ">item 1</a> of <a class=\"pool\" href=\"/data#pool-0\">pool 0</a> scored 0 (a near-copy: similarity " \
        "0.9912 to an accepted item; quality 0.46) from <a class=\"order\" href=\"/order/5\">order 5</a> " \
        "(program <code" in text
    assert "scored 0.4612 (quality 0.4612) from" in describe(scored)
    assert "scored 0 (similarity 0.9912 to an accepted item; quality 0.46)" in describe(copy)  # no threshold known
    assert "accepted: reference item 0 of the pool" in describe(accepted)
    assert "rejected: &lt;b&gt;not JSON&lt;/b&gt;" in describe(rejected)  # the curator's words, escaped
    assert str(describe(paid)).endswith(f'paid contributor <a class="addr" href="/address/{P}">{P[:8]}…{P[-4:]}</a> '
                                        "24.5 VRC for epoch 0")
    assert str(describe(sale_paid)).endswith("40 VRC from sale 0")
    assert "paid epoch 0: 24.5 VRC of its 90 VRC to the contributors by score (total score 0.4612), 65.5 VRC to " \
        f'<a class="addr" href="/address/{W}">' in describe(epoch)
    assert "pool 0</a>'s data bought by <a class=\"addr\" href=\"/address/" + W in describe(bought) \
        and "for 40 VRC (1 item, dataset" in describe(bought)


def test_a_pools_table_from_its_events():
    (p,) = pools(pool_events()).values()
    assert (p.pool, p.owner, len(p.items), p.accepted, p.paid_sales, p.paid, p.sales, p.sold, p.epochs_paid) == \
        (0, C, 3, 1, 40 * 10**18, 645 * 10**17, 1, 40 * 10**18, [0])
    states = [(i.index, i.contributor, i.state, i.score, i.order_id) for i in p.items.values()]
    assert states == [(0, P, "accepted", 4612, 4), (1, V, "not accepted", 0, 5), (2, W, "rejected", None, None)]
    assert p.items[1].note.startswith("a near-copy: similarity 0.9912") and p.items[2].note == "<b>not JSON</b>"


def test_labelling_events_are_told_and_never_taken_for_the_markets_or_the_registrys():
    t = [ev("LabelTasks", "TaskPosted", task_id=3, requester=C, items_cid=D32, n_items=4, classes=2, labels_per_item=3,
            reward=9 * 10**18, min_stake=10 * 10**18, commit_deadline=100, reveal_deadline=200,
            accuracy_threshold_bps=7000, slash_bps=5000),
         *[ev("LabelTasks", "Committed", task_id=3, labeller=x, commitment=D32, stake=10 * 10**18) for x in (P, V, W)],
         *[ev("LabelTasks", "Revealed", task_id=3, labeller=x, labels="0x00010100") for x in (P, V, W)],
         ev("LabelTasks", "Paid", task_id=3, labeller=P, amount=45 * 10**17, stake_returned=10 * 10**18,
            accuracy_bps=9500),
         ev("LabelTasks", "Slashed", task_id=3, labeller=W, amount=5 * 10**18),
         ev("LabelTasks", "Paid", task_id=3, labeller=W, amount=0, stake_returned=5 * 10**18, accuracy_bps=2500),
         ev("LabelTasks", "Refunded", task_id=3, requester=C, amount=1),
         ev("LabelTasks", "Finalized", task_id=3, consensus="0x00010100", revealed=3)]
    said = [str(describe(e)) for e in t]
    assert "posted labelling <a class=\"task\" href=\"/data#task-3\">task 3</a>: 4 items" in said[0] \
        and "accuracy 0.7 to be paid, 50% of the stake slashed below it" in said[0]
    assert said[1].startswith(f'labeller <a class="addr" href="/address/{P}"') and "joined" in said[1]
    assert said[4].endswith("revealed its labels on <a class=\"task\" href=\"/data#task-3\">task 3</a>: 0 1 1 0")
    assert "was paid 4.5 VRC on" in said[7] and "(accuracy 0.95; 10 VRC stake back)" in said[7]
    assert said[8].startswith(f'labeller <a class="addr" href="/address/{W}"') and \
        said[8].endswith('was slashed 5 VRC on <a class="task" href="/data#task-3">task 3</a>')
    assert "got 5 VRC of its stake back" in said[9]
    assert said[10].endswith('got 0 VRC of <a class="task" href="/data#task-3">task 3</a>\'s reward back')
    assert "finalized: consensus of 3 labellers: 0 1 1 0" in said[11]
    cancelled = ev("LabelTasks", "Finalized", task_id=4, consensus="0x", revealed=2)
    assert "cancelled: 2 labellers revealed, too few" in describe(cancelled)
    # a labeller slashed is no node's slash; a task finalized no order's settlement
    nodes = leaderboard([reg(W, 1), *t, ev("LabelTasks", "Slashed", task_id=3, labeller=W, node=W, amount=1)])
    assert (nodes[W].slashes, nodes[W].jobs) == (0, 0)
    (row,) = tasks(t).values()
    assert (row.labellers, row.revealed, row.slashes, row.slashed, row.paid) == ([P, V, W], [P, V, W], 1,
                                                                                 5 * 10**18, 45 * 10**17)
    assert row.state(50) == "finalized"
    row.finalized = False
    assert [row.state(x) for x in (100, 150, 201)] == ["committing", "revealing", "to finalize"]


def test_odd_data_events_are_told_by_their_fields_and_left_out_of_the_tables():
    big = str(2**255)  # past int64: the index stores it as a string
    odd = [ev("DataPool", "Scored", pool=0, index=0, order_id=4, quality_bps="<img src=x>", similarity_bps=1,
              score=1, program_root="0x00"),
           ev("DataPool", "Contributed", pool=0, index=9, contributor=P, cid="not a cid", epoch=0,
              device="<script>x</script>"),
           ev("DataPool", "Paid", pool=0, contributor=P, amount=1, why=7, epoch=3),
           ev("DataPool", "Scored", pool=big, index=big, order_id=big, program_root="0x00", quality_bps=-5,
              similarity_bps=-20000, score=0, contributor=P, cid=D32, binding=D32),
           ev("DataPool", "Made-up", pool=0),
           ev("DataPool", "Rejected", pool=0, index=0),
           ev("LabelTasks", "Revealed", task_id=1, labeller=V, labels="0xzz"),
           ev("LabelTasks", "Committed", task_id=1, labeller=[P], commitment=D32, stake="lots"),
           ev("LabelTasks", "Slashed", task_id=None, labeller=V, amount=1)]
    said = [str(describe(e)) for e in odd]
    assert said[0].startswith("DataPool Scored: pool 0, index 0") and "&lt;img src=x&gt;" in said[0]
    assert said[1].startswith("DataPool Contributed:") and "&lt;script&gt;" in said[1] and "<script>" not in said[1]
    assert "paid contributor" in said[2] and "(reason 7, 3)" in said[2]
    assert f'href="/data#pool-{big}"' in said[3] and "scored 0 (off topic: quality 0)" in said[3]
    assert said[4] == "DataPool Made-up: pool 0" and said[5].startswith("DataPool Rejected:")
    assert said[6].startswith("LabelTasks Revealed:") and said[7].startswith("LabelTasks Committed:")
    assert said[8].startswith("LabelTasks Slashed:")
    rows = pools(pool_events()[:2] + odd + [ev("DataPool", "Contributed", pool=5, index=0, contributor=P, cid=D32,
                                                epoch=0, device=ZERO)])  # pool 5 was never created
    assert list(rows) == [0] and [i.index for i in rows[0].items.values()] == [0, 9]
    assert rows[0].items[0].state == "submitted" and tasks(odd) == {}
