"""The explorer's words and summaries from event rows, including the odd events an attacker can
emit (anyone registers a node or an agent with any strings): one never takes a page down, names
an address that is not one, or credits the wrong party with a dispute."""

from veracity.explorer.app import checks_url
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
