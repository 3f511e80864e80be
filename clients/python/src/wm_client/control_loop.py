"""A simulator-agnostic MPC control loop over the planning server.

One control step: read a camera frame (waiting, bounded, for a camera that
has not rendered yet), normalise it to raw uint8 RGB, send it with the
robot's proprio to ``/plan`` (first step, or after the session was lost) or
``/replan`` (with the model steps executed since the last reply), then apply
the first ``execute`` model steps of the reply, ``frameskip`` env actions
each, stepping the simulator after every env action.

The simulator is reached through two small protocols, so the same loop runs
Isaac Sim and Isaac Lab (the adapters in ``wm_client.isaac``), a fake camera
and robot in the tests, or a real robot:

    camera.read()            -> anything array-like (numpy, torch, warp), maybe empty
    robot.proprio()          -> (proprio_dim,) in env units
    robot.apply(action)      -> applies one env action (raw_action_dim,)
    step()                   -> advances the simulator by one env step

Every server error code gets a policy and a sentence (``ERROR_POLICIES``):
a lost session starts a new one, a rejected frame is skipped, a busy or
failing server is retried a bounded number of times, and anything that
retrying cannot fix (auth, bad proprio, planner limits) stops the loop with
the server's message and what to change.

That is the synchronous loop (``mode="sync"``): the simulator waits for each
plan. A robot that cannot wait runs ``mode="async"`` at a fixed control rate
(``control_hz``): actions are executed while the next plan is computed, the
request carrying the actions the robot will execute meanwhile
(``wm_client.realtime`` describes the timeline; docs/realtime.md when to use it).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

import httpx
import numpy as np

from wm_client.client import PlanningClient, PlanningError

log = logging.getLogger(__name__)


class Camera(Protocol):
    def read(self) -> Any:
        """The latest frame: HxWxC / CxHxW / 1xHxWxC, numpy, torch or warp; empty before the first render."""


class Robot(Protocol):
    def proprio(self) -> np.ndarray: ...

    def apply(self, action: np.ndarray) -> None: ...


class Policy(Enum):
    """What the loop does with an error."""

    NEW_SESSION = "start a new session with /plan"
    SKIP_FRAME = "skip this frame and keep executing the last plan"
    RETRY = "retry the request after a pause"
    FATAL = "stop: retrying cannot fix it"


# code (or code prefix ending in '.') -> (policy, what the operator should do)
ERROR_POLICIES: dict[str, tuple[Policy, str]] = {
    "session.not_found": (Policy.NEW_SESSION, "the server evicted, expired or restarted the session"),
    "replan.executed_steps_out_of_range": (Policy.NEW_SESSION, "more steps executed than the plan had"),
    "image.": (Policy.SKIP_FRAME, "check the camera output (shape, dtype, range) named in the message"),
    "server.loading": (Policy.RETRY, "the model is still loading"),
    "server.overloaded": (Policy.RETRY, "the server's queue is full; waiting as long as its Retry-After says"),
    "server.shutting_down": (Policy.RETRY, "the server is restarting; retrying (a new session if it lost ours)"),
    "plan.deadline_passed": (Policy.SKIP_FRAME, "deadline_ms passed in the server's queue; raise it or add servers"),
    "request.timeout": (Policy.RETRY, "the request did not reach the server in time (slow network?)"),
    "mpc_state.goal_unknown": (Policy.RETRY, "this replica lacks the goal: the client resends it with the replan"),
    "mpc_state.": (Policy.NEW_SESSION, "the token cannot be used here (another model, expired, corrupt): /plan anew"),
    "plan.loss_non_finite": (Policy.FATAL, "proprio far outside the training range, or planner.alpha too large"),
    "internal.error": (Policy.RETRY, "the server logged an incident id; report it if this persists"),
    "plan.non_finite": (Policy.RETRY, "the model produced NaN actions for this input"),
    "auth.": (Policy.FATAL, "pass the server's key with --api-key (or WM_API_KEY)"),
    "proprio.": (Policy.FATAL, "send the robot state the model was trained on (proprio_dim in /health)"),
    "pending_actions.": (Policy.FATAL, "the loop's pending actions do not fit this model (frameskip, horizon, "
                         "raw_action_dim in /health): update wm_client or lower latency_margin"),
    "planner.subgoals_unavailable": (Policy.FATAL, "this server has no subgoal graph: drop planner.subgoals, or "
                                     "start the server with one (--subgoals PATH)"),
    "planner.": (Policy.FATAL, "lower the planner overrides to this server's limits (GET /stats)"),
    "request.too_large": (Policy.FATAL, "downscale frames to the model's image_size before sending"),
    "request.": (Policy.FATAL, "the client and server disagree on the API; update wm_client (clients/python)"),
    "server.failed": (Policy.FATAL, "the server could not load its model; see its log"),
    "http.": (Policy.FATAL, "check --url: it does not point at a planning server"),
}


def policy_for(error: PlanningError) -> tuple[Policy, str]:
    """The policy and hint for an error; unknown 5xx are retried, unknown 4xx are fatal."""
    if error.code in ERROR_POLICIES:
        return ERROR_POLICIES[error.code]
    if error.status >= 500 and error.code.startswith("http."):  # a proxy's 502/504, not the server's own
        return Policy.RETRY, f"HTTP {error.status} from something between the client and the server"
    for key, value in ERROR_POLICIES.items():
        if key.endswith(".") and error.code.startswith(key):
            return value
    if error.status >= 500:
        return Policy.RETRY, "the server failed; retrying"
    return Policy.FATAL, "unknown error code"


class ControlLoopError(RuntimeError):
    """The loop cannot go on; the message names the server's code and what to change."""


def to_rgb_uint8(frame: Any, env_index: int = 0, drop_alpha: bool = True) -> np.ndarray | None:
    """A camera frame as a numpy array ready to send, or None if the camera has not rendered yet.

    Accepts torch tensors (any device; ``.detach().cpu()``), warp arrays and
    anything with ``.numpy()``, and numpy arrays; a batched (N, H, W, C)
    frame (Isaac Lab's TiledCamera) gives its ``env_index``-th image. RGBA
    loses its alpha here (``drop_alpha``; else the server drops it with a
    warning). Floats in [0, 1] become uint8 (a quarter of the bytes of
    float32); other floats are sent as they are, so the server's
    ``image.float_out_of_range`` says how to convert them.
    """
    if hasattr(frame, "detach"):  # torch.Tensor, possibly on the GPU
        frame = frame.detach().cpu()
    if not isinstance(frame, np.ndarray) and hasattr(frame, "numpy"):  # torch (CPU), warp
        frame = frame.numpy()
    arr = np.asarray(frame)
    if arr.size == 0:
        return None
    if arr.ndim == 4:  # (N, H, W, C): one image per environment
        arr = arr[env_index]
    if drop_alpha and arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and arr.min() >= 0 and arr.max() <= 1:
        arr = np.round(arr * 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


@dataclass
class LoopConfig:
    """Args:
        model_steps: model steps to execute before stopping (each = frameskip env actions).
        execute: model steps executed between two replans (MPC's k).
        frame_retries: sim steps to wait for a non-empty frame before giving up.
        request_retries: retries of one request after a 5xx or a connection error.
        retry_backoff_s: pause before the first retry; doubles each retry.
        max_skipped_frames: consecutive rejected frames before giving up.
        seed: seed of the first plan (incremented per request), None for the server's.
        planner: CEM overrides sent with /plan.
        deadline_ms: per-request planning time budget, or None.
        stateless: replan with the last reply's ``mpc_state`` token instead of a
            server session, so any replica of a fleet can serve each step and a
            replica's death costs one retried request (same token), never a step.
        mode: "sync": the simulator waits for every plan (paced by the loop, no clock).
            "async": one env action per tick of ``control_hz`` while the next plan is
            computed (``wm_client.realtime``). "hold": the same clock, the robot holding
            still while each plan is computed (a real robot's synchronous loop).
        control_hz: env actions per second in "async" and "hold" (a real arm: 10-30).
        compensate: "async" sends the actions it will execute before the reply can take
            effect as ``pending_actions``, and switches at the step the plan was made for;
            False executes each reply from its first step on arrival (no compensation).
        latency_margin: the pending steps cover this multiple of the median recent round
            trip (``wm_client.realtime.pending_steps`` says why the median).
        latency_window: round trips the latency estimate looks back over.
        max_seconds: "async"/"hold": stop after this much wall-clock time (None: no limit).
    """

    model_steps: int = 20
    execute: int = 1
    frame_retries: int = 100
    request_retries: int = 3
    retry_backoff_s: float = 0.5
    max_skipped_frames: int = 5
    seed: int | None = 0
    planner: Mapping[str, Any] | None = None
    deadline_ms: float | None = None
    stateless: bool = False
    mode: Literal["sync", "async", "hold"] = "sync"
    control_hz: float | None = None
    compensate: bool = True
    latency_margin: float = 1.1
    latency_window: int = 5
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("model_steps", "execute", "latency_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mode not in ("sync", "async", "hold"):
            raise ValueError(f"mode must be 'sync', 'async' or 'hold', got {self.mode!r}")
        if self.mode != "sync" and not (self.control_hz is not None and self.control_hz > 0):
            raise ValueError(f"mode={self.mode!r} runs on a clock: set control_hz > 0 (env actions per second), "
                             f"got {self.control_hz!r}")
        if not self.latency_margin >= 1:
            raise ValueError(f"latency_margin must be >= 1 (a multiple of the measured latency), got "
                             f"{self.latency_margin}")
        for name in ("frame_retries", "request_retries", "max_skipped_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class LoopReport:
    model_steps: int = 0  # model steps executed
    env_actions: int = 0  # env actions applied
    plans: int = 0  # successful /plan replies (1 + new sessions)
    replans: int = 0
    empty_frames: int = 0  # sim steps waited for a rendered frame
    skipped_frames: int = 0
    retries: int = 0
    errors: Counter = field(default_factory=Counter)  # server code -> count
    plan_ms: list[float] = field(default_factory=list)
    session_id: str | None = None
    mpc_state: str | None = None  # the last reply's token (stateless mode replans with it)
    served_by: Counter = field(default_factory=Counter)  # replica -> replies
    done: bool = False  # ``until()`` became true
    # Real-time modes ("async", "hold"):
    wall_s: float = 0.0  # wall-clock time of the run
    hold_ticks: int = 0  # control ticks with nothing to execute (waiting for a plan)
    pending_steps: list[int] = field(default_factory=list)  # model steps sent as pending, per request
    late_plans: int = 0  # replies that arrived after the step they were made for
    late_steps: int = 0  # model steps they were late by, in all (their first steps were not executed)
    stale_plans: int = 0  # replies with none of their steps still ahead (discarded)
    overruns: int = 0  # control ticks more than half a period late (the host could not keep the rate)


class ControlLoop:
    """Closed-loop MPC: the camera, the robot and the sim step in, actions applied out."""

    def __init__(
        self,
        client: PlanningClient,
        camera: Camera,
        robot: Robot,
        step: Callable[[], None],
        goal_frame: Any,
        goal_proprio: Any = None,
        config: LoopConfig | None = None,
        until: Callable[[], bool] | None = None,
    ) -> None:
        self.client, self.camera, self.robot, self.step = client, camera, robot, step
        self.until = until  # checked after every model step: stop early (e.g. goal reached)
        self.config = config or LoopConfig()
        goal = to_rgb_uint8(goal_frame)
        if goal is None:
            raise ValueError("the goal frame is empty; render the goal before starting the loop")
        self.goal = goal
        self.goal_proprio = None if goal_proprio is None else np.asarray(goal_proprio, dtype=np.float64)
        self.report = LoopReport()
        self._seed = self.config.seed

    def run(self) -> LoopReport:
        """Execute ``config.model_steps`` model steps, or fewer once ``until()`` is true."""
        cfg, report = self.config, self.report
        if cfg.mode != "sync":
            from wm_client.realtime import run_realtime

            run_realtime(self)
            return report
        actions: np.ndarray | None = None  # (model steps left, frameskip, raw_action_dim)
        since_reply = 0  # model steps executed since the last reply
        skipped = 0
        while report.model_steps < cfg.model_steps:
            frame = self.read_frame()
            reply = self._plan_or_replan(frame, since_reply)
            if reply is None:  # frame rejected: keep executing the old plan (or hold still)
                skipped += 1
                report.skipped_frames += 1
                if skipped > cfg.max_skipped_frames:
                    raise ControlLoopError(
                        f"{skipped} frames in a row rejected by the server "
                        f"({dict(report.errors)}); check the camera")
            else:
                skipped, since_reply = 0, 0
                env_actions = np.asarray(reply["actions"], dtype=np.float64)  # (H * frameskip, A)
                actions = env_actions.reshape(-1, int(reply["frameskip"]), env_actions.shape[-1])  # (H, fs, A)
            n = 0 if actions is None else min(cfg.execute, len(actions), cfg.model_steps - report.model_steps)
            if n == 0:
                self.step()  # nothing to execute: let the simulator render the next frame
                continue
            for chunk in actions[:n]:
                for a in chunk:
                    self.robot.apply(a)
                    self.step()
                    report.env_actions += 1
                report.model_steps += 1
                if self.until is not None and self.until():
                    report.done = True
                    return report
            actions = actions[n:]
            since_reply += n
        return report

    def close(self) -> None:
        """End the server session (the client stays open: the caller owns it). In
        stateless mode the session may live on another replica: it expires there."""
        if self.config.stateless:
            self.report.session_id = None
        if self.report.session_id is not None:
            try:
                self.client.delete_session(self.report.session_id)
            except (PlanningError, httpx.TransportError) as exc:
                log.warning("could not delete session %s: %s", self.report.session_id, exc)
            self.report.session_id = None

    # -- one step ----------------------------------------------------------------

    def read_frame(self) -> np.ndarray:
        """The next non-empty frame, stepping the simulator while the camera has none."""
        for _ in range(self.config.frame_retries + 1):
            frame = to_rgb_uint8(self.camera.read())
            if frame is not None:
                return frame
            self.report.empty_frames += 1
            self.step()
        raise ControlLoopError(
            f"the camera returned no image after {self.config.frame_retries} simulator steps; "
            "is it attached to the render product and initialised?")

    def _plan_or_replan(self, frame: np.ndarray, since_reply: int, proprio: np.ndarray | None = None,
                        pending: np.ndarray | None = None) -> dict[str, Any] | None:
        """The next plan (None: the frame was rejected). proprio: the robot's at the frame (None:
        read now); pending: (k * frameskip, A) env actions the robot executes before the plan can
        take effect (the real-time loop)."""
        proprio = self.robot.proprio() if proprio is None else proprio
        sid = self.report.session_id
        token = self.report.mpc_state if self.config.stateless else None
        try:
            if (token is None) if self.config.stateless else (sid is None):
                return self._plan(frame, proprio, pending)
            self._seed = None if self._seed is None else self._seed + 1
            t0 = time.perf_counter()
            if token is not None:  # any replica; the client resends the goal if one asks for it
                call = lambda: self.client.replan(  # noqa: E731
                    None, frame, proprio, executed_steps=since_reply, seed=self._seed,
                    deadline_ms=self.config.deadline_ms, mpc_state=token, goal=self.goal,
                    goal_proprio=self.goal_proprio, **_pending(pending))
            else:
                call = lambda: self.client.replan(  # noqa: E731
                    sid, frame, proprio, executed_steps=since_reply, seed=self._seed,
                    deadline_ms=self.config.deadline_ms, **_pending(pending))
            reply = self._request(call)
            self.report.plan_ms.append(1000 * (time.perf_counter() - t0))
            self.report.replans += 1
            self._record(reply)
            return reply
        except PlanningError as exc:
            policy, hint = policy_for(exc)
            if policy is Policy.NEW_SESSION:
                log.warning("%s (%s): %s; starting a new session with /plan", exc.code, hint, exc.message)
                if exc.code != "session.not_found":
                    self.close()  # the old session still exists on the server: end it
                self.report.session_id = None
                self.report.mpc_state = None
                try:
                    return self._plan(frame, proprio, pending)
                except PlanningError as again:
                    return self._handle_unrecoverable(again)
            return self._handle_unrecoverable(exc)

    def _handle_unrecoverable(self, exc: PlanningError) -> None:
        policy, hint = policy_for(exc)
        if policy is Policy.SKIP_FRAME:
            log.warning("frame rejected, skipped: %s: %s (%s)", exc.code, exc.message, hint)
            return None
        raise ControlLoopError(f"server refused the request: {exc.code}: {exc.message} -> {hint}") from exc

    def _plan(self, frame: np.ndarray, proprio: np.ndarray, pending: np.ndarray | None = None) -> dict[str, Any]:
        self._seed = None if self._seed is None else self._seed + 1
        t0 = time.perf_counter()
        reply = self._request(lambda: self.client.plan(
            frame, self.goal, proprio, self.goal_proprio, seed=self._seed,
            planner=self.config.planner, deadline_ms=self.config.deadline_ms, **_pending(pending)))
        self.report.plan_ms.append(1000 * (time.perf_counter() - t0))
        self.report.plans += 1
        self.report.session_id = reply["session_id"]
        self._record(reply)
        return reply

    def _record(self, reply: dict[str, Any]) -> None:
        self.report.mpc_state = reply.get("mpc_state")
        self.report.served_by[str(reply.get("served_by"))] += 1

    def _request(self, call: Callable[[], Any]) -> Any:
        """``call()`` with bounded retries on RETRY errors and connection failures."""
        cfg = self.config
        delay = cfg.retry_backoff_s
        for attempt in range(cfg.request_retries + 1):
            try:
                return call()
            except PlanningError as exc:
                self.report.errors[exc.code] += 1
                policy, hint = policy_for(exc)
                if policy is not Policy.RETRY:
                    raise
                last: Exception = exc
                why = f"{exc.code}: {exc.message} ({hint})"
            except httpx.TransportError as exc:
                self.report.errors["connection"] += 1
                last, why = exc, f"cannot reach the server: {exc!r}"
            if attempt == cfg.request_retries:
                break
            self.report.retries += 1
            wait = delay
            if isinstance(last, PlanningError) and last.retry_after_s is not None:
                wait = max(delay, last.retry_after_s)  # the server knows when there will be room
            log.warning("%s; retry %d/%d in %.1f s", why, attempt + 1, cfg.request_retries, wait)
            time.sleep(wait)
            delay *= 2
        raise ControlLoopError(f"giving up after {cfg.request_retries} retries: {why}") from last


def _pending(pending: np.ndarray | None) -> dict[str, Any]:
    """The keyword for pending actions, only when there are some (a client without it still works)."""
    return {} if pending is None else {"pending_actions": pending}
