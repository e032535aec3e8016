"""One step's GEMM flops (gpumlp.flops.step_flops), against a hand count."""
import pytest

from gpumlp import threads
from gpumlp.flops import step_flops


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
