"""One step's GEMM flops (gpumlp.flops.step_flops), against a hand count."""
import os

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from gpumlp import threads
from gpumlp.flops import step_flops
from gpumlp.testing import exact


def test_a_two_layer_step_counted_by_hand():
    """5-7-3 at B = 4: forward W1 Z0 (7×5 by 5×4) and W2 Z1 (3×7 by 7×4); backward dW1 = Δ1 Z0^T,
    dW2 = Δ2 Z1^T and W2^T Δ2 (7×3 by 3×4) for Δ1; no W1^T Δ1 (the input's gradient is never formed)."""
    forward = 2 * (7 * 5 * 4) + 2 * (3 * 7 * 4)          # 280 + 168
    weight_grads = 2 * (7 * 4 * 5) + 2 * (3 * 4 * 7)     # 280 + 168
    delta = 2 * (7 * 3 * 4)                              # 168
    assert forward + weight_grads + delta == 1064
    assert step_flops([5, 7, 3], 4) == 1064.0


def test_one_layer_has_no_backward_product_for_its_input():
    assert step_flops([10, 2], 8) == 2 * 2 * (10 * 2 * 8)         # forward and dW only: 640


def test_the_thread_rule_counts_the_same_flops():
    assert threads.step_flops is step_flops
    # 784-1024-1024-10 at B = 64: 128 · (2 · 1,861,632 + 1,058,816) = 612 MFLOP, three 200-MFLOP shares
    assert step_flops([784, 1024, 1024, 10], 64) == 612_106_240
    assert threads.auto_threads([784, 1024, 1024, 10], 64, cpus=16) == 3


@pytest.mark.parametrize("sizes, batch", [([5], 4), ([5, 0, 3], 4), ([5, 3], 0), ([5.5, 3], 4), ([5, 3], 2.0)])
def test_bad_sizes_are_refused(sizes, batch):
    with pytest.raises(ValueError, match="step_flops|integer"):
        step_flops(sizes, batch)


def test_the_smallest_network_and_batch_are_counted():
    """1-1 at B = 1 is allowed (a bound of 2 on a size or the batch would refuse it): forward and dW, 2 flops each."""
    assert step_flops([1, 1], 1) == 4.0
    assert step_flops([1, 1, 1], 1) == 2.0 * (2 * 2 + 1)


NEEDS = "step_flops needs at least two positive layer sizes and a positive batch_size; "


@pytest.mark.parametrize("sizes, batch, message", [
    ([5], 4, NEEDS + "got sizes [5], batch_size 4"),
    ([5, 0, 3], 4, NEEDS + "got sizes [5, 0, 3], batch_size 4"),
    ([5, 3], 0, NEEDS + "got sizes [5, 3], batch_size 0"),
    ([5.5, 3], 4, "sizes must be integers and batch_size an integer; got [5.5, 3], 4"),
    ([5, 3], 2.0, "sizes must be integers and batch_size an integer; got [5, 3], 2.0")])
def test_bad_sizes_are_refused_in_so_many_words(sizes, batch, message):
    with pytest.raises(ValueError, match=exact(message)):
        step_flops(sizes, batch)


# 4 · B · 1000 · 500 flops for a 1000-500 step: exactly 200 MFLOP per 100 columns
@pytest.mark.parametrize("batch, cpus, expected", [(1, 4, 1), (100, 4, 1), (199, 4, 1), (200, 4, 2), (300, 4, 3),
                                                   (1000, 4, 4), (1000, 1, 1)])
def test_one_thread_per_whole_200_mflop_of_a_step_up_to_the_cpus(batch, cpus, expected):
    assert step_flops([1000, 500], batch) == 2e6 * batch
    assert threads.auto_threads([1000, 500], batch, cpus=cpus) == expected
    assert type(threads.auto_threads([1000, 500], batch, cpus=cpus)) is int


def test_the_cpus_default_to_the_affinity_mask_else_the_cpu_count(monkeypatch):
    big = ([1000, 500], 10_000)                       # 100 shares of work: the CPUs decide
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert threads.auto_threads(*big) == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert threads.auto_threads(*big) == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)   # unknown: one
    assert threads.auto_threads(*big) == 1


@pytest.mark.parametrize("n", [1, 2])
def test_limit_sets_every_blas_pool_and_restores_it(n):
    np.ones((2, 2)) @ np.ones((2, 2))                 # NumPy's BLAS is loaded
    before = [p["num_threads"] for p in threadpool_info()]
    assert before
    with threads.limit(n):
        assert [p["num_threads"] for p in threadpool_info()] == [n] * len(before)
    assert [p["num_threads"] for p in threadpool_info()] == before
