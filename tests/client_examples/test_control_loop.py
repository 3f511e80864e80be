"""The Isaac Sim client's control loop, with a fake camera and robot against a real server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.server.conftest import GOAL_PROPRIO, IMAGE_SIZE, frame
from wm_client import (
    ControlLoop,
    ControlLoopError,
    LoopConfig,
    PlanningClient,
    PlanningError,
    Policy,
    policy_for,
    to_rgb_uint8,
)
from wm_client.isaac import IsaacCamera, TiledCameraSource

FRAMESKIP = 2  # models.testing.TINY_CONFIG


class FakeCamera:
    """Returns ``empty`` empty arrays first (a camera that has not rendered), then ``make(i)``."""

    def __init__(self, make: Any, empty: int = 0) -> None:
        self.make, self.empty, self.reads = make, empty, 0

    def read(self) -> Any:
        self.reads += 1
        if self.reads <= self.empty:
            return np.empty((0,), dtype=np.uint8)
        return self.make(self.reads)


class FakeRobot:
    """A point whose joint positions move by each applied action."""

    def __init__(self) -> None:
        self.q = np.array([1.0, -2.0])
        self.applied: list[np.ndarray] = []

    def proprio(self) -> np.ndarray:
        return self.q.copy()

    def apply(self, action: np.ndarray) -> None:
        self.applied.append(np.array(action))
        self.q = self.q + action


class SpyClient(PlanningClient):
    """Records every reply and can run a hook before a replan."""

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.replies: list[dict[str, Any]] = []
        self.before_replan: Any = None

    def plan(self, *a: Any, **kw: Any) -> dict[str, Any]:
        self.replies.append(super().plan(*a, **kw))
        return self.replies[-1]

    def replan(self, *a: Any, **kw: Any) -> dict[str, Any]:
        if self.before_replan is not None:
            self.before_replan(self)
        self.replies.append(super().replan(*a, **kw))
        return self.replies[-1]


@pytest.fixture
def client(server_url: str) -> Iterator[SpyClient]:
    with SpyClient(server_url) as c:
        yield c


def rgba(i: int) -> np.ndarray:
    rgb = frame(i)
    return np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)


def make_loop(client: PlanningClient, camera: Any, robot: FakeRobot | None = None, **cfg: Any) -> ControlLoop:
    steps: list[int] = []
    loop = ControlLoop(client, camera, robot or FakeRobot(), step=lambda: steps.append(1),
                       goal_frame=frame(99), goal_proprio=GOAL_PROPRIO,
                       config=LoopConfig(**{"model_steps": 3, "retry_backoff_s": 0.0, **cfg}))
    loop.sim_steps = steps  # type: ignore[attr-defined]
    return loop


# -- frame normalisation (no server) -----------------------------------------------


class WarpLike:
    """A warp array: not numpy, converted with .numpy()."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr

    def numpy(self) -> np.ndarray:
        return self.arr


@pytest.mark.parametrize("empty", [np.empty((0,), np.uint8), np.zeros((0, 0, 4), np.uint8), [],
                                   torch.empty(0, dtype=torch.uint8)])
def test_an_empty_frame_is_none(empty: Any) -> None:
    assert to_rgb_uint8(empty) is None


def test_rgba_loses_alpha_and_stays_uint8() -> None:
    out = to_rgb_uint8(rgba(1))
    assert out.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, frame(1))
    assert to_rgb_uint8(rgba(1), drop_alpha=False).shape[-1] == 4


def test_float_frames_in_unit_range_become_uint8() -> None:
    out = to_rgb_uint8(frame(2).astype(np.float32) / 255)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, frame(2))
    # [0, 255] floats are left for the server to refuse with its conversion hint.
    assert to_rgb_uint8(frame(2).astype(np.float32)).dtype == np.float32


def test_torch_batches_and_warp_arrays_become_numpy() -> None:
    batch = torch.from_numpy(np.stack([frame(3), frame(4)]))  # TiledCamera: (N, H, W, 3) uint8
    np.testing.assert_array_equal(to_rgb_uint8(batch, env_index=1), frame(4))
    np.testing.assert_array_equal(to_rgb_uint8(torch.from_numpy(frame(3)).float() / 255), frame(3))
    np.testing.assert_array_equal(to_rgb_uint8(WarpLike(rgba(5))), frame(5))


def test_isaac_adapters_read_their_camera_apis() -> None:
    class SensorCamera:
        def get_rgba(self) -> np.ndarray:
            return rgba(6)

    class TiledData:
        output = {"rgb": torch.from_numpy(np.stack([frame(7), frame(8)]))}

    class Tiled:
        data = TiledData()

    np.testing.assert_array_equal(to_rgb_uint8(IsaacCamera(SensorCamera()).read()), frame(6))
    np.testing.assert_array_equal(to_rgb_uint8(TiledCameraSource(Tiled(), env_index=1).read()), frame(8))


@pytest.mark.parametrize(("status", "code", "policy"), [
    (404, "session.not_found", Policy.NEW_SESSION),
    (422, "image.grayscale", Policy.SKIP_FRAME),
    (503, "server.loading", Policy.RETRY),
    (502, "http.502", Policy.RETRY),
    (401, "auth.invalid", Policy.FATAL),
    (422, "proprio.wrong_length", Policy.FATAL),
    (422, "something.new", Policy.FATAL),
])
def test_every_error_code_has_a_policy(status: int, code: str, policy: Policy) -> None:
    assert policy_for(PlanningError(status, code, "msg"))[0] is policy


def test_every_documented_code_has_an_explicit_policy() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "server.md").read_text()
    table = doc.split("## Errors", 1)[1].split("Warnings", 1)[0]
    codes = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", table))
    assert len(codes) > 20
    for code in codes:
        hint = policy_for(PlanningError(422, code, ""))[1]
        assert hint != "unknown error code", code


# -- the loop against a real server ----------------------------------------------


@pytest.mark.parametrize("make", [frame, rgba, lambda i: frame(i).astype(np.float32) / 255,
                                  lambda i: torch.from_numpy(frame(i))[None]],
                         ids=["rgb", "rgba", "float", "torch-batch"])
def test_the_loop_applies_the_planned_actions(client: SpyClient, make: Any) -> None:
    robot = FakeRobot()
    loop = make_loop(client, FakeCamera(make), robot)
    report = loop.run()
    assert (report.model_steps, report.plans, report.replans) == (3, 1, 2)
    assert report.env_actions == 3 * FRAMESKIP == len(robot.applied) == len(loop.sim_steps)
    # Each reply's first model step (frameskip env actions) is what the robot received.
    expected = np.concatenate([np.asarray(r["actions"])[:FRAMESKIP] for r in client.replies])
    np.testing.assert_allclose(np.stack(robot.applied), expected)
    assert [r["warm_start"] for r in client.replies] == [False, True, True]
    assert not report.errors
    loop.close()


def test_the_loop_waits_for_the_first_rendered_frame(client: SpyClient) -> None:
    loop = make_loop(client, FakeCamera(rgba, empty=4), model_steps=1)
    report = loop.run()
    assert report.empty_frames == 4 and report.model_steps == 1
    assert len(loop.sim_steps) == 4 + FRAMESKIP  # the sim stepped while the camera had nothing
    loop.close()


def test_a_camera_that_never_renders_stops_the_loop(client: SpyClient) -> None:
    loop = make_loop(client, FakeCamera(frame, empty=10**6), frame_retries=5)
    with pytest.raises(ControlLoopError, match="no image after 5 simulator steps"):
        loop.run()


def test_an_evicted_session_recovers_with_a_new_plan(client: SpyClient) -> None:
    def evict_once(c: SpyClient) -> None:
        c.before_replan = None
        PlanningClient.delete_session(c, loop.report.session_id)  # as the server's LRU/TTL would

    client.before_replan = evict_once
    loop = make_loop(client, FakeCamera(frame))
    loop.run()
    first = client.replies[0]["session_id"]
    report = loop.report
    assert report.errors["session.not_found"] == 1
    assert report.plans == 2 and report.model_steps == 3
    assert report.session_id != first
    loop.close()


def test_rejected_frames_are_skipped_and_reported(client: SpyClient) -> None:
    # Read 2 is grayscale (a misconfigured camera): the server refuses it, the loop keeps
    # executing the previous plan and replans from the next good frame.
    camera = FakeCamera(lambda i: frame(i)[..., 0] if i == 2 else frame(i))
    robot = FakeRobot()
    report = make_loop(client, camera, robot).run()
    assert report.errors["image.grayscale"] == 1 and report.skipped_frames == 1
    assert report.model_steps == 3 and len(robot.applied) == 3 * FRAMESKIP
    # After the skip the replan declares both model steps executed since the last reply.
    assert client.replies[-1]["warm_start"] is True


def test_an_error_retrying_cannot_fix_stops_with_the_servers_message(client: SpyClient) -> None:
    class WrongRobot(FakeRobot):
        def proprio(self) -> np.ndarray:
            return np.zeros(5)

    with pytest.raises(ControlLoopError, match="proprio.wrong_length.*proprio_dim"):
        make_loop(client, FakeCamera(frame), WrongRobot()).run()


def test_an_unreachable_server_is_retried_a_bounded_number_of_times() -> None:
    with PlanningClient("http://127.0.0.1:9", timeout=2) as c:  # port 9 (discard): nothing listens
        loop = make_loop(c, FakeCamera(frame), request_retries=2)
        with pytest.raises(ControlLoopError, match="giving up after 2 retries: cannot reach"):
            loop.run()
        assert loop.report.retries == 2 and loop.report.errors["connection"] == 3


def test_the_stateless_loop_applies_exactly_what_the_session_loop_applies(client: SpyClient) -> None:
    """The same seeds give the same plans whether the warm start lives in a session or a token."""
    by_session, by_token = FakeRobot(), FakeRobot()
    make_loop(client, FakeCamera(frame), by_session, model_steps=4).run()
    session_replies = list(client.replies)
    client.replies.clear()
    report = make_loop(client, FakeCamera(frame), by_token, model_steps=4, stateless=True).run()
    assert (report.plans, report.replans) == (1, 3) and report.mpc_state
    assert all(r["session_id"] is None for r in client.replies[1:])  # replans carried the token
    np.testing.assert_array_equal(np.stack(by_token.applied), np.stack(by_session.applied))
    assert [r["actions"] for r in client.replies] == [r["actions"] for r in session_replies]


def test_the_stateless_loop_resends_the_goal_to_a_server_that_lacks_it(model_path, server_url) -> None:
    """A token made by one process, replanned on another: the second asks for the goal once."""
    from tests.server.conftest import running_server, settings_for

    with running_server(settings_for(model_path, replica_name="other")) as other, SpyClient(other) as there, \
            SpyClient(server_url) as here:
        first = make_loop(here, FakeCamera(frame), FakeRobot(), model_steps=1, stateless=True)
        first.run()
        there.wait_ready(timeout=60)
        loop = make_loop(there, FakeCamera(frame), FakeRobot(), model_steps=3, stateless=True)
        loop.report.mpc_state = first.report.mpc_state  # as if the first replica had died
        report = loop.run()
    assert report.plans == 0 and report.replans == 3 and report.served_by == {"other": 3}
    assert not report.errors  # the client resent the goal by itself; the loop saw no error
