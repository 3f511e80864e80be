"""POST /plan and /replan through the client: the plans are the planner's, in env units."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models import load_model
from planning import PlannerConfig, plan, warm_start
from tests.server.conftest import (
    ACTION_BOUND, FAST_PLANNER, GOAL_PROPRIO, IMAGE_SIZE, PROPRIO, frame,
)
from wm_client import PlanningClient, PlanningError


def local_plan(model, obs, goal, cfg, seed, session=None, executed=1):
    """What the server should compute, done in-process with the same artifact.
    session: (goal latent, last plan) of the episode, or None to start one."""
    z_obs = model.encode_observation(torch.from_numpy(obs)[None], torch.tensor([PROPRIO]))
    if session is None:
        z_goal = model.encode_observation(torch.from_numpy(goal)[None], torch.tensor([GOAL_PROPRIO]))
        init = None
    else:
        z_goal, last = session
        init = warm_start(last, executed, cfg.horizon)[None]
    (result,) = plan(model, z_obs, z_goal, cfg, init_mean=init, seeds=[seed])
    return model.codec.to_env(result.actions).numpy(), result, (z_goal, result.actions)


@pytest.fixture(scope="module")
def model(model_path):
    return load_model(model_path)


def test_plan_then_replan_loop_matches_the_planner_in_process(client, model):
    cfg = PlannerConfig.cpu_preset().updated(FAST_PLANNER)
    obs, goal = frame(1), frame(2)
    reply = client.plan(obs, goal, PROPRIO, GOAL_PROPRIO, seed=7)
    expected, result, session = local_plan(model, obs, goal, cfg, seed=7)

    h, fs, raw_dim = cfg.horizon, model.config.frameskip, model.config.raw_action_dim
    actions = np.asarray(reply["actions"])
    assert actions.shape == (h * fs, raw_dim)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(reply["model_actions"]), actions.reshape(h, fs * raw_dim))
    assert reply["loss"] == pytest.approx(result.loss, rel=1e-5)
    np.testing.assert_allclose(reply["loss_trace"], result.loss_trace, rtol=1e-5)
    assert reply["iterations"] == result.iterations == len(reply["loss_trace"])
    assert reply["stop_reason"] == result.stop_reason
    assert reply["warm_start"] is False and reply["seed"] == 7
    assert reply["horizon"] == h and reply["frameskip"] == fs
    assert np.abs(actions).max() <= ACTION_BOUND
    assert set(reply["timing_ms"]) == {"decode", "encode", "plan", "total"}
    assert reply["timing_ms"]["total"] >= reply["timing_ms"]["plan"] > 0
    assert reply["warnings"] == []

    sid = reply["session_id"]
    for step, executed in enumerate([1, 2, 0]):
        obs = frame(10 + step)
        reply = client.replan(sid, obs, PROPRIO, executed_steps=executed, seed=step)
        expected, result, session = local_plan(model, obs, None, cfg, step, session, executed)
        assert reply["session_id"] == sid and reply["warm_start"] is True
        np.testing.assert_allclose(np.asarray(reply["actions"]), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(reply["loss_trace"], result.loss_trace, rtol=1e-5)
    client.delete_session(sid)


def test_same_seed_same_plan_and_png_json_equals_raw_msgpack(server_url):
    obs, goal = frame(3), frame(4)
    replies = []
    for use_msgpack in (True, False):
        with PlanningClient(server_url, use_msgpack=use_msgpack) as c:
            replies.append(c.plan(obs, goal, PROPRIO, GOAL_PROPRIO, seed=11))
    assert replies[0]["actions"] == replies[1]["actions"]
    assert replies[0]["loss_trace"] == replies[1]["loss_trace"]
    assert replies[0]["session_id"] != replies[1]["session_id"]


@pytest.mark.parametrize(
    "variant",
    ["chw", "bgr", "rgba", "float32", "png_bytes"],
)
def test_equivalent_encodings_give_the_same_plan(mp_client, variant):
    obs, goal = frame(5), frame(6)
    base = mp_client.plan(obs, goal, PROPRIO, GOAL_PROPRIO, seed=3)
    kwargs = {}
    if variant == "chw":
        sent = np.ascontiguousarray(obs.transpose(2, 0, 1))
    elif variant == "bgr":
        sent, kwargs = np.ascontiguousarray(obs[..., ::-1]), {"color_order": "bgr"}
    elif variant == "rgba":
        sent = np.concatenate([obs, np.zeros_like(obs[..., :1])], axis=-1)
    elif variant == "float32":
        sent = obs.astype(np.float32) / 255.0
    else:
        buf = io.BytesIO()
        Image.fromarray(obs).save(buf, format="PNG")
        sent = buf.getvalue()  # the client sends bytes as a file
    if variant == "bgr":
        reply = mp_client.plan(sent, np.ascontiguousarray(goal[..., ::-1]), PROPRIO, GOAL_PROPRIO,
                               seed=3, **kwargs)
    else:
        reply = mp_client.plan(sent, goal, PROPRIO, GOAL_PROPRIO, seed=3, **kwargs)
    # The tiny random model's plans hardly depend on the frame; its loss does.
    np.testing.assert_allclose(reply["loss_trace"], base["loss_trace"], rtol=1e-5)
    np.testing.assert_allclose(reply["actions"], base["actions"], rtol=1e-4, atol=1e-4)
    codes = [w["code"] for w in reply["warnings"]]
    assert codes == (["image.alpha_dropped"] if variant == "rgba" else [])


def test_other_sizes_are_resized_with_a_warning(mp_client):
    reply = mp_client.plan(frame(1, size=48), frame(2, size=20), PROPRIO, GOAL_PROPRIO, seed=0)
    warnings = {(w["code"], w["field"]) for w in reply["warnings"]}
    assert warnings == {("image.resized", "obs"), ("image.resized", "goal")}
    assert f"to {IMAGE_SIZE}x{IMAGE_SIZE}" in reply["warnings"][0]["message"]


def test_planner_overrides_apply(mp_client):
    reply = mp_client.plan(
        frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0,
        planner={"horizon": 3, "cem": {"samples": 16, "elites": 2}, "max_iterations": 3, "min_iterations": 3},
    )
    assert reply["horizon"] == 3 and len(reply["actions"]) == 3 * reply["frameskip"]
    assert reply["iterations"] == 3 and reply["stop_reason"] == "max_iterations"


def test_early_stop_reports_converged(mp_client):
    reply = mp_client.plan(
        frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0,
        planner={"max_iterations": 30, "min_iterations": 2, "patience": 1, "min_improvement": 10.0},
    )
    assert reply["stop_reason"] == "converged" and reply["iterations"] == 2


def test_replan_warm_start_and_restart_with_the_same_session_id(mp_client):
    first = mp_client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, session_id="robot-7", seed=0)
    assert first["session_id"] == "robot-7"
    again = mp_client.plan(frame(1), frame(3), PROPRIO, GOAL_PROPRIO, session_id="robot-7", seed=0)
    assert again["warm_start"] is False and again["actions"] != first["actions"]
    warm = mp_client.replan("robot-7", frame(4), PROPRIO, executed_steps=1, seed=0)
    assert warm["warm_start"] is True


def test_random_seed_is_reported_and_reproduces_the_plan(mp_client):
    a = mp_client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO)
    b = mp_client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=a["seed"])
    assert a["actions"] == b["actions"]


def test_deadline_stops_planning_early(mp_client):
    reply = mp_client.plan(
        frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0, deadline_ms=400,
        planner={"cem": {"samples": 2048}, "max_iterations": 100, "min_iterations": 100},
    )
    assert reply["stop_reason"] == "deadline" and 1 <= reply["iterations"] < 100


def test_a_deadline_that_passes_in_the_queue_gets_no_plan(mp_client):
    with pytest.raises(PlanningError) as info:
        mp_client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0, deadline_ms=0.001)
    e = info.value
    assert (e.status, e.code, e.field) == (503, "plan.deadline_passed", "deadline_ms")


def test_delete_session(mp_client):
    sid = mp_client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0)["session_id"]
    mp_client.delete_session(sid)
    with pytest.raises(PlanningError) as info:
        mp_client.replan(sid, frame(3), PROPRIO)
    assert (info.value.status, info.value.code) == (404, "session.not_found")
    assert "deleted" in info.value.message
    with pytest.raises(PlanningError) as info:
        mp_client.delete_session(sid)
    assert info.value.status == 404


@pytest.mark.parametrize("method", ["cem", "icem", "mppi", "gradient", "cem_gradient", "icem_gradient"])
def test_a_request_chooses_its_solver(mp_client, method):
    planner = {"method": method, "max_iterations": 4, "gradient": {"starts": 2}}
    if method.endswith("_gradient"):
        planner[method] = {"gradient_iterations": 2}
    before = mp_client.stats()["planner"]["by_method"].get(method, {"plans": 0})["plans"]
    reply = mp_client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0, planner=planner)
    assert reply["method"] == method and reply["iterations"] >= 1 and np.isfinite(reply["loss"])
    again = mp_client.replan(reply["session_id"], frame(3), PROPRIO, seed=1)
    assert again["method"] == method  # the session keeps its solver
    by_method = mp_client.stats()["planner"]["by_method"][method]
    assert by_method["plans"] == before + 2 and by_method["mean_iterations"] >= 1
    assert f'wm_plans_total{{method="{method}"' in mp_client.metrics()


def test_an_unknown_solver_is_refused(mp_client):
    with pytest.raises(PlanningError) as info:
        mp_client.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, planner={"method": "random_shooting"})
    assert (info.value.code, info.value.field) == ("request.invalid", "planner.method")
