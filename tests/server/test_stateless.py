"""Stateless replans: the mpc_state token gives exactly the session's plan, travels between
processes serving the same model, and is validated like any input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import httpx
import msgpack
import numpy as np
import pytest

from models.testing import save_tiny_model
from server import tokens
from planning import PlannerConfig
from server.planner import PlannerLimits
from server.tokens import MPCState, TokenCodec
from tests.server.conftest import ACTION_BOUND, GOAL_PROPRIO, PROPRIO, frame, running_server, settings_for
from wm_client import PlanningClient

MSGPACK = {"Content-Type": "application/msgpack"}


def raw(seed: int) -> dict:
    return {"format": "raw", "data": frame(seed).tobytes(), "shape": [32, 32, 3], "dtype": "uint8"}


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, content=msgpack.packb(body, use_bin_type=True), headers=MSGPACK, timeout=60)


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.content
    return msgpack.unpackb(response.content)


def error(response: httpx.Response) -> tuple[int, str, str | None]:
    e = msgpack.unpackb(response.content)["error"]
    return response.status_code, e["code"], e["field"]


def first_plan(url: str) -> dict:
    return ok(post(url, "/plan", {"obs": raw(1), "goal": raw(2), "proprio": PROPRIO, "goal_proprio": GOAL_PROPRIO,
                                  "seed": 0}))


@pytest.fixture(scope="module")
def other_url(model_path) -> Iterator[str]:
    """A second process serving the same model file: a replica that has not seen the goal."""
    with running_server(settings_for(model_path, replica_name="replica-b")) as url:
        PlanningClient(url).wait_ready(timeout=60)
        yield url


def test_a_stateless_replan_is_exactly_the_session_replan(server_url):
    plan = first_plan(server_url)
    assert plan["mpc_state"] and plan["served_by"]
    by_session = ok(post(server_url, "/replan", {"session_id": plan["session_id"], "obs": raw(3), "proprio": PROPRIO,
                                                 "executed_steps": 1, "seed": 5}))
    by_token = ok(post(server_url, "/replan", {"mpc_state": plan["mpc_state"], "obs": raw(3), "proprio": PROPRIO,
                                               "executed_steps": 1, "seed": 5}))
    assert by_token["session_id"] is None and by_token["warm_start"] is True
    assert by_token["actions"] == by_session["actions"] and by_token["loss_trace"] == by_session["loss_trace"]
    # ...and the next step too, each from its own chain.
    again_session = ok(post(server_url, "/replan", {"session_id": plan["session_id"], "obs": raw(4),
                                                    "proprio": PROPRIO, "executed_steps": 2, "seed": 6}))
    again_token = ok(post(server_url, "/replan", {"mpc_state": by_token["mpc_state"], "obs": raw(4),
                                                  "proprio": PROPRIO, "executed_steps": 2, "seed": 6}))
    assert again_token["actions"] == again_session["actions"]
    cold = ok(post(server_url, "/plan", {"obs": raw(4), "goal": raw(2), "proprio": PROPRIO,
                                         "goal_proprio": GOAL_PROPRIO, "seed": 6}))
    assert cold["actions"] != again_token["actions"]  # the warm start mattered: the comparison can fail


def test_another_replica_asks_for_the_goal_once(server_url, other_url):
    plan = first_plan(server_url)
    step = {"mpc_state": plan["mpc_state"], "obs": raw(3), "proprio": PROPRIO, "executed_steps": 1, "seed": 5}
    assert error(post(other_url, "/replan", step)) == (409, "mpc_state.goal_unknown", "goal")
    with_goal = ok(post(other_url, "/replan", step | {"goal": raw(2), "goal_proprio": GOAL_PROPRIO}))
    here = ok(post(server_url, "/replan", step))
    assert with_goal["actions"] == here["actions"]  # the same plan, whichever process made it
    assert {with_goal["served_by"], here["served_by"]} == {"replica-b", here["served_by"]} != {"replica-b"}
    # Now the other replica holds the goal.
    ok(post(other_url, "/replan", {"mpc_state": with_goal["mpc_state"], "obs": raw(4), "proprio": PROPRIO}))
    cache = PlanningClient(other_url).stats()["goal_cache"]
    assert cache["misses"] >= 1 and cache["hits"] >= 1 and cache["size"] >= 1
    wrong_goal = step | {"goal": raw(9), "goal_proprio": GOAL_PROPRIO}
    assert error(post(other_url, "/replan", wrong_goal)) == (422, "mpc_state.goal_mismatch", "goal")


def test_tokens_are_validated_like_any_input(server_url):
    plan = first_plan(server_url)
    token = plan["mpc_state"]
    raw_token = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw_token[len(raw_token) // 2] ^= 0x01  # one bit changed in transit
    flipped = base64.urlsafe_b64encode(bytes(raw_token)).decode().rstrip("=")
    step = {"obs": raw(3), "proprio": PROPRIO}
    cases = {
        flipped: "mpc_state.invalid",
        token[: len(token) // 2]: "mpc_state.invalid",
        "not a token!": "mpc_state.invalid",
        "": "mpc_state.invalid",
        "A" * 70_000: "mpc_state.too_large",
    }
    for bad, code in cases.items():
        status, got, field = error(post(server_url, "/replan", step | {"mpc_state": bad}))
        assert (status, got, field) == (422, code, "mpc_state"), (bad[:20], got)
    both = step | {"mpc_state": token, "session_id": plan["session_id"]}
    assert error(post(server_url, "/replan", both))[:2] == (422, "request.invalid")
    assert error(post(server_url, "/replan", step))[:2] == (422, "request.missing_field")
    far = step | {"mpc_state": token, "executed_steps": 99}
    assert error(post(server_url, "/replan", far))[:2] == (422, "replan.executed_steps_out_of_range")
    goal_with_session = step | {"session_id": plan["session_id"], "goal": raw(2)}
    assert error(post(server_url, "/replan", goal_with_session))[:2] == (422, "request.invalid")


def test_a_token_from_another_model_or_secret_is_refused(server_url, model_path, tmp_path):
    token = first_plan(server_url)["mpc_state"]
    step = {"obs": raw(3), "proprio": PROPRIO, "mpc_state": token}
    bounds = {"action_low": [-ACTION_BOUND] * 2, "action_high": [ACTION_BOUND] * 2}
    other_model = save_tiny_model(tmp_path / "other.pt", seed=1, **bounds)
    with running_server(settings_for(other_model)) as url:
        PlanningClient(url).wait_ready(timeout=60)
        assert error(post(url, "/replan", step)) == (409, "mpc_state.model_mismatch", "mpc_state")
    with running_server(settings_for(model_path, token_secret="s3cret")) as url:
        PlanningClient(url).wait_ready(timeout=60)
        assert error(post(url, "/replan", step)) == (422, "mpc_state.invalid", "mpc_state")


def codec_for(max_age_s):
    return TokenCodec("m" * 32, None, 65536, max_age_s, PlannerConfig(), PlannerLimits({}))


def test_codec_refuses_other_versions_and_old_tokens(monkeypatch):
    codec = codec_for(60)
    config = PlannerConfig(horizon=2, method="icem").updated({"icem": {"samples": 50}})
    token = codec.issue(MPCState(config, "g" * 32, np.zeros((2, 3), np.float32)))
    state = codec.read(token)
    assert state.plan.shape == (2, 3) and state.goal_id == "g" * 32 and state.config == config
    monkeypatch.setattr(tokens, "VERSION", 2)
    with pytest.raises(tokens.ApiError) as info:
        codec.read(token)
    assert info.value.code == "mpc_state.version"
    monkeypatch.undo()
    monkeypatch.setattr(tokens.time, "time", lambda: state.created + 61)
    with pytest.raises(tokens.ApiError) as info:
        codec.read(token)
    assert info.value.code == "mpc_state.expired"
    nan = codec.issue(MPCState(config, "g" * 32, np.full((2, 3), np.nan, np.float32)))
    with pytest.raises(tokens.ApiError):
        codec_for(0).read(nan)


def test_a_token_of_the_previous_release_with_flat_planner_names_still_reads():
    codec = codec_for(60)
    data = {"v": tokens.VERSION, "model": "m" * 32, "goal": "g" * 32, "shape": [2, 3], "t": time.time(),
            "plan": np.zeros((2, 3), np.float32).tobytes(),
            "cfg": {"method": "icem", "horizon": 2, "num_samples": 40, "topk": 4, "opt_steps": 6, "icem_beta": 1.0}}
    payload = msgpack.packb(data, use_bin_type=True)
    token = base64.urlsafe_b64encode(payload + hmac.new(codec._key, payload, hashlib.sha256).digest()[:16])
    state = codec.read(token.decode().rstrip("="))
    assert state.config.max_iterations == 6 and state.config.solver().samples == 40
    assert state.config.solver().elites == 4 and state.config.solver().beta == 1.0
