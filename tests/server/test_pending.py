"""Latency compensation: a plan with pending_actions is the plan from the latent the model predicts
after them, the warm start shifts by executed + pending steps (sessions and tokens alike), and the
pending actions are validated like every input."""

from __future__ import annotations

import httpx
import msgpack
import numpy as np
import pytest
import torch

from models import Latent, load_model
from planning import PlannerConfig, plan, warm_start
from server.engine import Engine
from tests.server.conftest import ACTION_BOUND, FAST_PLANNER, GOAL_PROPRIO, PROPRIO, frame
from wm_client import PlanningClient

CFG = PlannerConfig.cpu_preset().updated(FAST_PLANNER)
MSGPACK = {"Content-Type": "application/msgpack"}


@pytest.fixture(scope="module")
def model(model_path):
    return load_model(model_path)


def pending(steps: int, fs: int = 2, seed: int = 0) -> np.ndarray:
    """(steps * fs, 2) env actions within the bounds."""
    return np.random.default_rng(seed).uniform(-2.0, 2.0, (steps * fs, 2))


def by_hand(model, obs, proprio, pending_env, seed, goal_latent=None, init=None):
    """planning.plan from the latent the model predicts after `pending_env`: the reference."""
    with torch.inference_mode():
        z = model.encode_observation(torch.from_numpy(obs)[None], torch.tensor([proprio]))
        if pending_env is not None:
            actions = model.codec.to_model(torch.from_numpy(pending_env).float())[None]  # (1, k, A)
            rolled = model.rollout(z, actions)  # (1, k, P, Dv), (1, k, Ep)
            z = Latent(rolled.visual[:, -1], rolled.proprio[:, -1])
        if goal_latent is None:
            goal_latent = model.encode_observation(torch.from_numpy(frame(2))[None], torch.tensor([GOAL_PROPRIO]))
        (result,) = plan(model, z, goal_latent, CFG, init_mean=init, seeds=[seed])
    return model.codec.to_env(result.actions).double().numpy(), result, goal_latent


def test_a_plan_with_pending_actions_is_the_plan_from_the_predicted_latent(model, server_url):
    p = pending(3)
    with PlanningClient(server_url) as client:
        reply = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=4, pending_actions=p)
        plain = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=4)
    expected, result, _ = by_hand(model, frame(1), PROPRIO, p, 4)
    assert reply["pending_steps"] == 3 and plain["pending_steps"] == 0
    np.testing.assert_allclose(np.asarray(reply["actions"]), expected, rtol=1e-5, atol=1e-5)
    assert reply["loss"] == pytest.approx(result.loss, rel=1e-5)
    assert not np.allclose(reply["actions"], plain["actions"])  # the rollout mattered: this test can fail


@pytest.mark.parametrize("stateless", [False, True], ids=["session", "token"])
def test_the_warm_start_shifts_by_executed_plus_pending_steps(model, server_url, stateless):
    p = pending(2, seed=1)
    with PlanningClient(server_url) as client:
        first = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=4)
        ref = (None, {"mpc_state": first["mpc_state"]}) if stateless else (first["session_id"], {})
        reply = client.replan(ref[0], frame(3), PROPRIO, executed_steps=1, seed=9, pending_actions=p, **ref[1])
    _, last, goal = by_hand(model, frame(1), PROPRIO, None, 4)
    init = warm_start(last.actions, 1 + 2, CFG.horizon)[None]  # executed 1 + pending 2 model steps
    expected, _, _ = by_hand(model, frame(3), PROPRIO, p, 9, goal, init)
    np.testing.assert_allclose(np.asarray(reply["actions"]), expected, rtol=1e-5, atol=1e-5)
    assert reply["warm_start"] is True and reply["pending_steps"] == 2
    # Shifted by executed alone (the bug this guards against) gives another plan.
    wrong, _, _ = by_hand(model, frame(3), PROPRIO, p, 9, goal, warm_start(last.actions, 1, CFG.horizon)[None])
    assert not np.allclose(wrong, expected)


def test_one_rollout_for_a_batch_with_different_pending_counts_equals_each_alone(model):
    """Engine.advance pads shorter pending sequences: the causal predictor ignores the padding."""
    engine = Engine(model, model.device, CFG)
    obs = [frame(i) for i in range(4)]
    z = engine.encode(obs, [np.asarray(PROPRIO, np.float32)] * 4)
    sets = [pending(3, seed=1).astype(np.float32), None, pending(1, seed=2).astype(np.float32),
            pending(5, seed=3).astype(np.float32)]
    batched = engine.advance(z, sets, horizon=8)  # padded past every count, as to a compiled horizon
    for i, p in enumerate(sets):
        alone = engine.advance(z.index(slice(i, i + 1)), [p])
        torch.testing.assert_close(batched.visual[i:i + 1], alone.visual, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched.proprio[i:i + 1], alone.proprio, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.visual[1], z.visual[1])  # no pending: the frame's own latent
    assert not torch.allclose(batched.visual[0], z.visual[0])


def _post(url: str, path: str, body: dict) -> tuple[int, dict]:
    r = httpx.post(url + path, content=msgpack.packb(body, use_bin_type=True), headers=MSGPACK, timeout=60)
    return r.status_code, msgpack.unpackb(r.content)


def _raw(seed: int) -> dict:
    return {"format": "raw", "data": frame(seed).tobytes(), "shape": [32, 32, 3], "dtype": "uint8"}


@pytest.mark.parametrize("rows, code", [
    ([[0.1, 0.2, 0.3]] * 2, "pending_actions.wrong_shape"),
    ([[0.1, 0.2]] * 3, "pending_actions.partial_step"),  # frameskip 2
    ([[0.1, 0.2]] * 12, "pending_actions.too_many"),  # horizon 5 x frameskip 2 = 10
    ([[1e39, 0.0]] * 2, "pending_actions.non_finite"),
    ([[float("nan"), 0.0]] * 2, "request.invalid"),
])
def test_invalid_pending_actions_get_coded_errors_on_plan_and_replan(server_url, rows, code):
    body = {"obs": _raw(1), "goal": _raw(2), "proprio": PROPRIO, "goal_proprio": GOAL_PROPRIO, "seed": 0}
    status, reply = _post(server_url, "/plan", {**body, "pending_actions": rows})
    assert (status, reply["error"]["code"]) == (422, code)
    assert reply["error"]["field"].startswith("pending_actions")
    status, first = _post(server_url, "/plan", body)
    assert status == 200
    for ref in ({"session_id": first["session_id"]}, {"mpc_state": first["mpc_state"]}):
        status, reply = _post(server_url, "/replan", {"obs": _raw(3), "proprio": PROPRIO, "pending_actions": rows,
                                                      **ref})
        assert (status, reply["error"]["code"]) == (422, code), ref


def test_pending_actions_beyond_the_bounds_are_clipped_with_a_warning(model, server_url):
    p = pending(2)
    wide = p.copy()
    wide[0, 0] = ACTION_BOUND + 5.0
    inside = p.copy()
    inside[0, 0] = ACTION_BOUND
    with PlanningClient(server_url) as client:
        clipped = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=4, pending_actions=wide)
        exact = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=4, pending_actions=inside)
    assert [w["code"] for w in clipped["warnings"]] == ["pending_actions.clipped"]
    assert "1 values" in clipped["warnings"][0]["message"] and not exact["warnings"]
    assert clipped["actions"] == exact["actions"]
