import torch

from models import Latent
from planning import CEMConfig, MPCSession, PlanResult, warm_start


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


def test_session_is_cold_until_a_plan_is_recorded_and_after_reset():
    goal = Latent(torch.zeros(1, 4, 8), torch.zeros(1, 2))
    s = MPCSession(goal=goal, config=CEMConfig(horizon=4))
    assert s.init_mean(1) is None
    plan_ = torch.arange(12, dtype=torch.float32).view(4, 3)
    s.record(PlanResult(actions=plan_, sigma=torch.ones(4, 3), loss=0.0))
    warm = s.init_mean(1)
    assert warm.shape == (1, 4, 3)
    torch.testing.assert_close(warm[0, :3], plan_[1:])
    torch.testing.assert_close(warm[0, 3], plan_[3])
    s.reset(goal=Latent(torch.ones(1, 4, 8), torch.zeros(1, 2)))
    assert s.init_mean(1) is None and s.goal.visual.mean() == 1
