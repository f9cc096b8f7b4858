"""What an Oracle delivers is the job's canonical output blob (``exact.outputs``): its output
tensors, each a header and its big-endian integers, which ``fulfil`` hashes to the committed
output root. The blob round-trips to the same root, is decoded strictly, and its size is fixed by
the job's program, so a provider knows before taking a request whether it fits ``fulfil``'s 4096
bytes (checked here against real runs, so a wrong size fails)."""

import json

import numpy as np
import pytest

from veracity.exact.outputs import (
    ORACLE_MAX_OUTPUT,
    blob_root,
    decode_outputs,
    encode_outputs,
    encoded_size,
    undeliverable_shapes,
)
from veracity.exact.trace import DTYPE_CODES, header, outputs_root, tensor_digest
from veracity.models.registry import loaded
from veracity.node.oracle_desk import output_blob, output_shapes, undeliverable
from veracity.workloads.infer import served_tensors
from veracity.workloads.jobs import infer_job

DTYPES = (np.int8, np.uint8, np.int16, np.int32, np.int64)


def job(model: str, item: dict):
    return infer_job(model, (json.dumps(item) + "\n").encode()), loaded(model)


def some_tensors(rng, k):
    out = []
    for _ in range(k):
        dt = DTYPES[rng.integers(0, len(DTYPES))]
        dims = tuple(int(d) for d in rng.integers(1, 5, int(rng.integers(1, 5))))
        info = np.iinfo(dt)
        out.append(rng.integers(info.min, info.max, dims, dtype=dt, endpoint=True))
    return out


def test_the_blob_round_trips_to_the_same_tensors_and_output_root():
    rng = np.random.default_rng(7)
    for k in (1, 2, 3, 5, 8, 13):
        ts = some_tensors(rng, k)
        blob = encode_outputs(ts)
        back = decode_outputs(blob)
        assert [(t.dtype, t.shape) for t in back] == [(t.dtype, t.shape) for t in ts]
        assert all(np.array_equal(x, y) for x, y in zip(back, ts))
        root = outputs_root([tensor_digest(t) for t in ts])
        assert outputs_root([tensor_digest(t) for t in back]) == root == blob_root(blob)
        assert len(blob) == encoded_size([(DTYPE_CODES[t.dtype], t.shape) for t in ts])
    t = np.array([[-2, 300]], dtype=np.int16)  # the layout: header, then big-endian integers
    assert encode_outputs([t]) == header(t) + b"\xff\xfe\x01\x2c"
    assert header(t) == b"VXT2\x03\x02" + b"\0\0\0\1" + b"\0\0\0\2"


def test_a_malformed_blob_is_refused_with_what_is_wrong():
    good = encode_outputs([np.arange(10, dtype=np.int32).reshape(1, 10)])
    bad = {
        "holds no tensor": b"",
        "ends inside tensor 1's header": good + b"\0",
        "tensor 1's header does not start with": good + b"VXT3\x04\x01\0\0\0\1abcd",
        "ends inside tensor 0's data": good[:-1],
        "ends inside tensor 0's dimensions": good[:12],
        "does not start with b'VXT2'": b"VXT3" + good[4:],
        "unknown dtype code 6": good[:4] + b"\x06" + good[5:],
        "has 0 dimensions": good[:5] + b"\x00" + good[6:],
        "has 5 dimensions": good[:5] + b"\x05" + good[6:],
        "a dimension of 0": good[:6] + bytes(4) + good[10:],
    }
    for reason, blob in bad.items():
        with pytest.raises(ValueError, match=reason):
            decode_outputs(blob)
    for tensors in ([], [np.zeros((), np.int32)], [np.zeros((1, 1, 1, 1, 1), np.int8)], [np.zeros((0, 3), np.int8)],
                    [np.zeros(3, np.float32)]):
        with pytest.raises(ValueError):
            encode_outputs(tensors)


def test_the_blob_of_a_real_job_gives_its_committed_output_root_and_size():
    for j, m in (job("digits-mlp", {"pixels": [16] * 64}), job("minilm", {"text": "a cat sat on the mat"}),
                 job("tiny-gpt", {"text": "the ", "max_tokens": 3})):
        result = j.run("numpy", model=m)
        blob = output_blob(j, result.outputs, m)
        assert blob_root(blob) == result.output_root  # what fulfil checks against the commitment
        assert len(blob) == encoded_size(output_shapes(j, m)) <= ORACLE_MAX_OUTPUT
        assert undeliverable(j, m) is None
        assert all(np.array_equal(x, y) for x, y in zip(decode_outputs(blob),
                                                         served_tensors(j.model_name, j.inputs, result.outputs, m)))


def test_the_digits_blob_is_one_row_of_ten_logits_whose_argmax_is_the_class():
    j, m = job("digits-mlp", {"pixels": [int(v) for v in np.arange(64) % 17]})
    result = j.run("numpy", model=m)
    (logits,) = decode_outputs(output_blob(j, result.outputs, m))
    assert logits.shape == (1, 10) and logits.dtype in (np.int16, np.int32)
    assert int(np.argmax(logits)) == json.loads(result.outputs)["output"]["class"]


def test_a_minilm_embedding_fits_now_and_a_too_long_output_is_refused_with_its_exact_size():
    j, m = job("minilm", {"text": "a cat sat on the mat"})
    size = encoded_size(output_shapes(j, m))
    assert size == 6 + 8 + 384 * 4  # one int32 [1, 384] tensor, whatever the text
    assert undeliverable(j, m) is None
    assert undeliverable(j, m, limit=size) is None  # exactly at the limit it is deliverable
    assert undeliverable(j, m, limit=size - 1) == \
        f"its output would be {size} bytes, more than the Oracle's {size - 1}-byte limit"
    g, gm = job("tiny-gpt", {"text": "the ", "max_tokens": 100})
    assert len(output_shapes(g, gm)) == 100 and undeliverable(g, gm) is None  # 100 tokens: 1,800 bytes
    assert undeliverable_shapes([(4, (1, 1100))]) == \
        "its output would be 4414 bytes, more than the Oracle's 4096-byte limit"
    assert "373 tensors" in undeliverable_shapes([(2, (1,))] * 373)
    assert "5 dimensions" in undeliverable_shapes([(2, (1, 1, 1, 1, 1))])
