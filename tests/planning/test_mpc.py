import torch

from planning import warm_start


def test_warm_start_shifts_and_repeats_last_action_not_zeros():
    prev = torch.arange(1, 11, dtype=torch.float32).view(5, 2)  # no zero anywhere
    out = warm_start(prev, executed=2)
    torch.testing.assert_close(out[:3], prev[2:])
    torch.testing.assert_close(out[3:], prev[-1:].expand(2, 2))
    assert (out != 0).all()


def test_warm_start_edge_cases_keep_horizon():
    prev = torch.randn(3, 5, 4)  # batched (B, H, A)
    torch.testing.assert_close(warm_start(prev, 0), prev)
    all_done = warm_start(prev, 9)
    torch.testing.assert_close(all_done, prev[:, -1:].expand(3, 5, 4))
    assert warm_start(prev, 1, horizon=7).shape == (3, 7, 4)
