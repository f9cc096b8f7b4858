"""The ``score`` kind: one contribution's exact MiniLM embedding, the same bits as an infer job's,
and the data pool's rules computed from it as the contract computes them."""

import json

import pytest

from veracity.cid import cid_of
from veracity.data import pools as P
from veracity.errors import InputError
from veracity.workloads.jobs import Job
from veracity.workloads.score import check_contribution
from veracity.workloads.spec import Inputs, JobSpec


def job(kind, data):
    return Job(JobSpec(kind=kind, model="minilm", inputs=Inputs(cid=cid_of(data)), max_price=1, deadline=60), data)


@pytest.mark.parametrize("data,why", [
    (b"not json\n", "not valid JSON|JSON"),
    (P.contribution_line("a") + P.contribution_line("b"), "one JSON line"),
    (b'{"text": "a", "url": "x"}\n', "only the fields text, label and provenance"),
    (b'{"text": "a", "provenance": "made up"}\n', "provenance"),
    (b'{"text": "a", "label": -1}\n', "label"),
    (b'{"text": "a", "label": true}\n', "label"),
])
def test_a_contribution_outside_the_schema_is_refused_with_its_reason(data, why):
    with pytest.raises(InputError, match=why):
        check_contribution(data)
    with pytest.raises(InputError, match=why):
        job("score", data).program()


def test_a_generated_item_carries_its_provenance():
    line = P.contribution_line("Rivers carry silt to the sea.", provenance={"kind": "synthesize", "job": "bafk",
                                                                          "model": "smollm2", "order": 3})
    assert check_contribution(line)["provenance"]["order"] == 3


def test_the_score_job_is_the_infer_job_of_its_item_and_scores_a_near_copy_zero():
    line = P.contribution_line("A quiet film about grief that earns every tear.", 1)
    score, infer = job("score", line).run("torch"), job("infer", line).run("numpy")
    assert (score.output_hash, score.trace_root) == (infer.output_hash, infer.trace_root)
    assert json.loads(score.outputs)["label"] == 1
    emb = P.embed("A quiet film about grief that earns every tear.")
    topic = P.embed("a review of a film")
    copy = P.embed("A quiet film about grief that earns every single tear.")
    other = P.embed("The bakery on the corner sells rye bread on Sundays.")
    quality, _, s = P.score(emb, topic, [], 9000)
    assert s == quality > 2000  # on topic
    assert P.score(copy, topic, [emb], 9000)[2] == 0  # a near-copy
    q_other, sim, s_other = P.score(other, topic, [emb], 9000)
    assert sim < 9000 and s_other == q_other < quality  # unique, and off topic: lower quality
