"""LocalClient: the server's replies, planned in-process, for the unchanged wm_client.ControlLoop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models import load_model
from models.testing import tiny_model
from planning import PlannerConfig, plan, warm_start
from server.local import LocalClient
from tests.server.conftest import FAST_PLANNER, GOAL_PROPRIO, PROPRIO, frame, model_path, server_url  # noqa: F401
from wm_client import ControlLoop, LoopConfig, PlanningClient, PlanningError

BOUND = 3.0
CFG = PlannerConfig.cpu_preset().updated(FAST_PLANNER)


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0, action_low=[-BOUND] * 2, action_high=[BOUND] * 2)


def direct(model, obs, proprio, cfg, seed, session, executed=None, goal=None):
    """planning.plan by hand, as the server does it: the reference LocalClient must equal.
    session: (goal latent, last result) of the episode, or None to start one."""
    with torch.inference_mode():
        z_obs = model.encode_observation(torch.from_numpy(obs)[None], torch.tensor([proprio]))
        if session is None:
            z_goal = model.encode_observation(torch.from_numpy(goal)[None], torch.tensor([GOAL_PROPRIO]))
            init = elites = None
        else:
            z_goal, last = session
            init = warm_start(last.actions, executed, cfg.horizon)[None]
            elites = None if last.elites is None else warm_start(last.elites, executed, cfg.horizon)[None]
        (result,) = plan(model, z_obs, z_goal, cfg, init_mean=init, seeds=[seed], init_elites=elites)
        return model.codec.to_env(result.actions).double().numpy(), result, (z_goal, result)


@pytest.mark.parametrize("method", ["cem", "icem"])
def test_a_fixed_seed_gives_the_actions_of_planning_plan_cold_and_warm(model, method):
    cfg = dataclasses.replace(CFG, method=method)
    client = LocalClient(model, cfg)
    reply = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=7)
    expected, result, session = direct(model, frame(1), PROPRIO, cfg, 7, None, goal=frame(2))
    h, fs = cfg.horizon, model.config.frameskip
    actions = np.asarray(reply["actions"])
    assert actions.shape == (h * fs, 2)
    np.testing.assert_allclose(actions, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(reply["model_actions"]), actions.reshape(h, fs * 2))
    assert reply["loss_trace"] == pytest.approx(result.loss_trace, rel=1e-6)
    assert (reply["iterations"], reply["stop_reason"], reply["seed"], reply["warm_start"]) == (
        result.iterations, result.stop_reason, 7, False)
    assert reply["rollouts"] == result.rollouts > 0 and reply["method"] == method
    assert np.abs(actions).max() <= BOUND
    sid = reply["session_id"]
    for step, executed in enumerate([1, 2, 0]):  # warm starts (iCEM: with its kept elites) as the server's
        reply = client.replan(sid, frame(10 + step), PROPRIO, executed_steps=executed, seed=step)
        expected, result, session = direct(model, frame(10 + step), PROPRIO, cfg, step, session, executed)
        assert reply["warm_start"] is True and reply["session_id"] == sid
        np.testing.assert_allclose(np.asarray(reply["actions"]), expected, rtol=1e-6, atol=1e-6)
    if method == "icem":
        assert client.sessions.get(sid).state.elites is not None


def test_stateless_replans_with_mpc_state_tokens_equal_session_replans(model):
    client = LocalClient(model, CFG)
    first = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=7)
    by_session = client.replan(first["session_id"], frame(3), PROPRIO, executed_steps=1, seed=8)
    by_token = client.replan(None, frame(3), PROPRIO, executed_steps=1, seed=8, mpc_state=first["mpc_state"])
    assert by_token["session_id"] is None and by_token["mpc_state"]
    np.testing.assert_array_equal(by_token["actions"], by_session["actions"])


def test_replies_equal_the_servers_for_the_same_artifact_and_seeds(model_path, server_url):  # noqa: F811
    local = LocalClient(load_model(model_path), CFG)
    with PlanningClient(server_url) as remote:
        mine, theirs = (c.plan(frame(3), frame(4), PROPRIO, GOAL_PROPRIO, seed=11) for c in (local, remote))
        np.testing.assert_allclose(mine["actions"], theirs["actions"], rtol=1e-5, atol=1e-5)
        assert set(theirs) - {"mpc_state"} <= set(mine)  # every key a client reads from the server
        mine2 = local.replan(mine["session_id"], frame(5), PROPRIO, executed_steps=1, seed=12)
        theirs2 = remote.replan(theirs["session_id"], frame(5), PROPRIO, executed_steps=1, seed=12)
        np.testing.assert_allclose(mine2["actions"], theirs2["actions"], rtol=1e-5, atol=1e-5)
        assert mine2["loss_trace"] == pytest.approx(theirs2["loss_trace"], rel=1e-5)
        remote.delete_session(theirs["session_id"])


class Robot:
    def __init__(self) -> None:
        self.q = np.array(PROPRIO)
        self.applied: list[np.ndarray] = []

    def proprio(self) -> np.ndarray:
        return self.q.copy()

    def apply(self, action: np.ndarray) -> None:
        self.applied.append(np.array(action))
        self.q = self.q + 0.1 * action


def test_control_loop_runs_unchanged_and_executes_the_replies_actions(model):
    client = LocalClient(model, CFG, keep_replies=True)
    robot = Robot()
    camera = type("Camera", (), {"read": lambda self: frame(len(robot.applied))})()
    loop = ControlLoop(client, camera, robot, step=lambda: None, goal_frame=frame(99), goal_proprio=GOAL_PROPRIO,
                       config=LoopConfig(model_steps=4, execute=2, seed=5))
    report = loop.run()
    assert (report.plans, report.replans, report.model_steps) == (1, 1, 4)
    assert [r["seed"] for r in client.replies] == [6, 7]  # the loop's seeds reach the planner
    fs = model.config.frameskip
    executed = np.concatenate([np.asarray(r["actions"])[: 2 * fs] for r in client.replies])
    np.testing.assert_array_equal(np.stack(robot.applied), executed)
    loop.close()
    assert len(client.sessions) == 0  # close() deleted the session


def test_errors_carry_the_servers_codes(model):
    client = LocalClient(model, CFG, max_sessions=1)
    first = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0)["session_id"]
    cases = {
        "replan.executed_steps_out_of_range": lambda: client.replan(first, frame(3), PROPRIO, CFG.horizon + 1),
        "proprio.wrong_length": lambda: client.replan(first, frame(3), [1.0]),
        "proprio.missing": lambda: client.plan(frame(1), frame(2), None, GOAL_PROPRIO),
        "planner.invalid": lambda: client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, planner={"cem": {"elites": 0}}),
        "planner.subgoals_unavailable": lambda: client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO,
                                                            planner={"subgoals": True}),  # not silently ignored
        "image.grayscale": lambda: client.replan(first, np.zeros((4, 4)), PROPRIO),  # the server's own code
        "image.float_out_of_range": lambda: client.replan(first, frame(3) * 2.0, PROPRIO),
    }
    for code, call in cases.items():
        with pytest.raises(PlanningError) as err:
            call()
        assert err.value.code == code, code
    client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0)  # a second session drops the first
    with pytest.raises(PlanningError) as err:
        client.replan(first, frame(3), PROPRIO)
    assert (err.value.status, err.value.code) == (404, "session.not_found")


def test_health_describes_the_model_and_planner_overrides_apply(model):
    client = LocalClient(model)
    assert client.config == PlannerConfig.for_model(model, "cpu")  # the server's default for the model
    health = client.wait_ready()
    assert health["status"] == "ok" and health["model"]["frameskip"] == model.config.frameskip
    reply = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0, planner={**FAST_PLANNER, "horizon": 3})
    assert reply["horizon"] == 3 and reply["iterations"] <= FAST_PLANNER["max_iterations"]


def test_replans_run_the_warm_budget_and_first_plans_the_full_one(model):
    cfg = CFG.updated({"max_iterations": 4, "min_iterations": 4, "warm_max_iterations": 2})
    client = LocalClient(model, cfg)
    first = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=1)
    again = client.replan(first["session_id"], frame(3), PROPRIO, executed_steps=1, seed=2)
    assert (first["iterations"], first["warm_start"]) == (4, False)
    assert (again["iterations"], again["warm_start"], again["stop_reason"]) == (2, True, "max_iterations")
    # a request's own warm budget travels with its episode (session), as every planner setting does
    first = client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=1, planner={"warm_max_iterations": 1})
    again = client.replan(first["session_id"], frame(3), PROPRIO, executed_steps=1, seed=2)
    assert (first["iterations"], again["iterations"]) == (4, 1)
