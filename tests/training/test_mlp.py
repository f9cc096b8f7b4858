"""Exact training of the digits MLP: the same checkpoint bits with the NumPy backend and with
torch on 1 and 2 threads; a job split into 4 work units (each resuming from the previous unit's
checkpoint blob) ends at the unsplit job's checkpoint hash; and the exact run's test accuracy is
within 2 points of the same training in float32."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from veracity.exact import integer as X
from veracity.training import mlp as MLP


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    perm = np.random.Generator(np.random.PCG64(1)).permutation(len(d.target))
    x, y = d.data.astype(np.int64), d.target.astype(np.int64)
    return x[perm[:1437]], y[perm[:1437]], x[perm[1437:]], y[perm[1437:]]


def test_checkpoints_are_bit_identical_across_backends_and_threads(digits):
    x, y, _, _ = digits
    cfg = X.SGDConfig(seed=3)
    start = MLP.MLPState.init(seed=5)
    hashes = {"numpy": MLP.checkpoint_hash(MLP.train(start, x, y, 60, cfg, "numpy"))}
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            hashes[f"torch-{n}"] = MLP.checkpoint_hash(MLP.train(start, x, y, 60, cfg, "torch"))
            hashes[f"eager-{n}"] = MLP.checkpoint_hash(MLP.train(start, x, y, 60, cfg, "torch-eager"))
    finally:
        torch.set_num_threads(threads)
    assert len(set(hashes.values())) == 1, hashes
    assert MLP.checkpoint_hash(start) != hashes["numpy"]  # it did train


def test_the_native_gemm_kernel_is_the_reference_on_every_shape_and_scale():
    """``native.c``'s fused quantize-GEMM-rescale gives NumPy's integers, including rows of zeros,
    contractions past the float32 bound, and values whose rescale needs more than 64 bits."""
    rng = np.random.default_rng(0)
    for m, k, n, fx, fw, fo in [(32, 64, 128, 4, 20, 12), (128, 32, 64, 12, 12, 20), (7, 1500, 9, 8, 20, 12),
                                (8, 200, 300, 20, 8, 20)]:
        for scale in (1, 1 << 12, 1 << 24):
            x = rng.integers(-scale * 4096, scale * 4096, (m, k))
            w = rng.integers(-(1 << 20), 1 << 20, (n, k))
            x[0] = 0
            assert np.array_equal(X.qmatmul(x, fx, w, fw, fo, "numpy"), X.qmatmul(x, fx, w, fw, fo, "native"))
            xq = X.quantize_rows(x)  # x quantized already (frozen features): the same integers
            xq = (xq[0].astype(np.int16), xq[1], xq[2])
            assert np.array_equal(X.qmatmul(None, fx, w, fw, fo, "numpy", xq=xq),
                                  X.qmatmul(None, fx, w, fw, fo, "native", xq=xq))
    long = np.full((1, 140_000), 1 << 20)  # past the kernel's int32 accumulator: NumPy answers
    assert np.array_equal(X.qmatmul(long, 20, long, 20, 20, "numpy"), X.qmatmul(long, 20, long, 20, 20, "native"))
    big = np.array([[2**24 - 1]])  # a result of 2**62: both paths refuse it (the run diverged)
    for backend in ("numpy", "native"):
        with pytest.raises(ValueError, match="diverged"):
            X.qmatmul(big, 0, big, 0, 14, backend)


def test_four_work_units_end_at_the_unsplit_checkpoint(digits):
    x, y, _, _ = digits
    cfg = X.SGDConfig(seed=2)
    whole = MLP.train(MLP.MLPState.init(seed=1), x, y, 120, cfg)
    blob = MLP.checkpoint_bytes(MLP.MLPState.init(seed=1))
    for _ in range(4):  # each unit starts from the previous unit's committed checkpoint
        blob = MLP.checkpoint_bytes(MLP.train(MLP.load_checkpoint(blob), x, y, 30, cfg))
    assert MLP.checkpoint_hash(MLP.load_checkpoint(blob)) == MLP.checkpoint_hash(whole)
    assert MLP.load_checkpoint(blob).step == 120


def test_exact_training_is_within_two_points_of_float32(digits):
    x, y, xt, yt = digits
    cfg = X.SGDConfig(seed=0)
    start = MLP.MLPState.init(seed=0)
    steps = 12 * -(-len(y) // cfg.batch)  # 12 epochs
    exact = (MLP.predict(MLP.train(start, x, y, steps, cfg), xt) == yt).mean()
    ref = (MLP.predict_float(MLP.train_float(start, x, y, steps, cfg), xt) == yt).mean()
    print(f"test accuracy: exact {exact:.4f}, float32 {ref:.4f}")
    assert ref > 0.93 and exact >= ref - 0.02


@pytest.mark.parametrize("optimizer,lr", [("sgd", 6554), ("adam", 66)])
def test_plain_sgd_and_adam_train_and_stay_exact(digits, optimizer, lr):
    x, y, xt, yt = digits
    cfg = X.SGDConfig(seed=4, optimizer=optimizer, lr_num=lr)
    start = MLP.MLPState.init(seed=2)
    steps = 4 * -(-len(y) // cfg.batch)
    a, b = MLP.train(start, x, y, steps, cfg, "numpy"), MLP.train(start, x, y, steps, cfg, "torch")
    assert MLP.checkpoint_hash(a) == MLP.checkpoint_hash(b)
    assert (MLP.predict(a, xt) == yt).mean() > 0.9
    if optimizer == "adam":
        assert any(s.any() for s in a.sw)  # the second moment is carried in the checkpoint
        assert MLP.checkpoint_hash(MLP.load_checkpoint(MLP.checkpoint_bytes(a))) == MLP.checkpoint_hash(a)


def test_an_unknown_optimizer_is_a_clear_error():
    from veracity.errors import InputError

    with pytest.raises(InputError, match="unknown optimizer 'lion'"):
        X.SGDConfig(optimizer="lion")


def test_the_native_loss_kernel_is_the_reference():
    rng = np.random.default_rng(2)
    for scale in (1, 1 << 10, 1 << 20):
        z = rng.integers(-scale * 4096, scale * 4096, (50, 10))
        y = rng.integers(0, 10, 50)
        p = X.exp_rows(z)
        got = X.loss_pair(z, y, "torch")
        assert np.array_equal(got[0], p) and np.array_equal(got[1], X.loss_grad(p, y))


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_the_native_update_kernel_is_the_reference(optimizer):
    """``native.c: vt_update`` gives NumPy's integers on gradients small and past 2**50 (where its
    reciprocal division hands over to 128 bits), on one thread and on several."""
    import torch

    rng = np.random.default_rng(3)
    cfg = X.SGDConfig(optimizer=optimizer, lr_num=66 if optimizer == "adam" else 3277, batch=32)
    n = 10_000  # past the size that takes a second thread
    for scale in (1 << 10, 1 << 30, 1 << 60):
        w, v = rng.integers(-(1 << 40), 1 << 40, n), rng.integers(-(1 << 40), 1 << 40, n)
        sq, g = rng.integers(0, 1 << 40, n), rng.integers(-scale, scale, n)
        want = X.update(w, v, sq, g, 32, cfg, "numpy")
        for threads in (1, 2):
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                got = X.update(w, v, sq, g, 32, cfg, "native")
            finally:
                torch.set_num_threads(before)
            assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_both_update_paths_refuse_a_step_past_the_fixed_point_range():
    """A reviewer's reproducers: an Adam step of 2**62 or more, and a batch mean at int64's edge,
    are refused ("diverged") by the native kernel as by NumPy, never wrapped."""
    one = np.array([0])
    cases = [(X.SGDConfig(optimizer="adam", lr_num=65536, eps=1, clip=1), np.array([2**46 - 1]), np.array([0]), 32),
             (X.SGDConfig(optimizer="momentum"), np.array([0]), np.array([2**63 - 1]), 2)]
    for cfg, v, g, batch in cases:
        for backend in ("numpy", "native"):
            with pytest.raises(ValueError, match="diverged"):
                X.update(one, v, one, g, batch, cfg, backend)


def test_optimizer_constants_outside_int64_safe_ranges_are_refused():
    from veracity.errors import InputError

    for bad in ({"clip": 1 << 41}, {"clip": 1 << 27, "optimizer": "adam"}, {"lr_num": 0}, {"mu_num": 2000},
                {"b2_num": -1}):
        with pytest.raises(InputError, match="fixed point"):
            X.SGDConfig(**bad)
