"""An in-process stand-in for ``wm_client.PlanningClient``: the MPC loop over a model in this process.

    from models import load_model
    from planning.local import LocalClient
    from wm_client import ControlLoop

    client = LocalClient(load_model("models/default/wall.pt"))   # the server's default config for the model
    loop = ControlLoop(client, camera, robot, step, goal_frame, goal_proprio)   # unchanged: same calls, same replies

``LocalClient`` answers the calls ``wm_client.ControlLoop`` makes (``plan``,
``replan``, ``delete_session``, ``health``, ``wait_ready``, ``close``) with
the server's reply dicts: ``actions`` in env units (H * frameskip,
raw_action_dim), ``model_actions`` (H, frameskip * raw_action_dim),
``session_id``, ``loss``, ``loss_trace``, ``iterations``, ``stop_reason``,
``method``, ``horizon``, ``frameskip``, ``seed``, ``warm_start``,
``timing_ms`` (encode, plan, total) and ``warnings``; plus ``rollouts`` and
``grad_rollouts`` (what the plan cost, for success-per-compute benchmarks).
It plans as the server does: ``planning.plan`` from a per-session
``MPCSession`` (a replan starts from the last plan shifted by the executed
steps, iCEM also from its kept elites), with ``CEMConfig.for_model`` as the
default config and a request's ``planner`` overrides on top.

Why it exists: the benchmarks and the trainer's planning-success check run the
same closed loop as the example clients (``envs.episodes``) without a server
process, its HTTP and its scheduling in the measurement.

Where it differs from the server, on purpose:
  * frames are numpy arrays (what ``ControlLoop`` sends); the model's own
    transform resizes them; there is no wire format and no image validation
    beyond shape, channels and dtype;
  * the goal and the observation are encoded one at a time (the server
    batches them in one pass: the same latents to float round-off);
  * no ``mpc_state`` tokens (``mpc_state`` is None): use server sessions,
    not ``LoopConfig(stateless=True)``, which would plan cold every step;
  * no limits on planner overrides or cost, no queue, no deadline in a queue;
  * one thread: it is not safe to share between threads.

Errors are raised as ``wm_client.PlanningError`` with the server's codes, so
the loop's policies apply: ``session.not_found``,
``replan.executed_steps_out_of_range``, ``proprio.*``, ``planner.invalid``,
``image.*``, ``plan.loss_non_finite``, ``plan.non_finite``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from models import Latent, WorldModel
from planning.config import CEMConfig
from planning.driver import plan
from planning.mpc import MPCSession
from planning.result import PlanResult
from wm_client.client import PlanningError

log = logging.getLogger(__name__)


class LocalClient:
    """Plans in this process with the same calls and replies as ``wm_client.PlanningClient``.

    Args:
        model: an eval-mode world model (``models.load_model``).
        config: the default planner config; None = ``CEMConfig.for_model(model,
            device)``, what ``python -m server`` plans with for this model.
        keep_replies: keep every reply in ``self.replies`` (benchmarks read the
            plans' cost and timing from them).
        max_sessions: sessions kept; the least recently used is dropped beyond
            it (its next replan gets ``session.not_found``, as from a server).
    """

    def __init__(self, model: WorldModel, config: CEMConfig | None = None, *, keep_replies: bool = False,
                 max_sessions: int = 64) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions={max_sessions}: must be >= 1")
        self.model = model
        self.config = config or CEMConfig.for_model(model, model.device.type)
        self.sessions: OrderedDict[str, MPCSession] = OrderedDict()  # session id -> its goal and last plan
        self.replies: list[dict[str, Any]] | None = [] if keep_replies else None
        self.max_sessions = max_sessions

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget every session (the model stays loaded: the caller owns it)."""
        self.sessions.clear()

    # -- what the HTTP client offers ------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's /health body for this model."""
        eval_mode = not any(m.training for m in self.model.modules())
        return {"status": "ok" if eval_mode else "failed", "replica": "local", "pid": os.getpid(),
                "model": dict(self.model.describe()), "device": str(self.model.device), "eval_mode": eval_mode,
                "error": None if eval_mode else "a model submodule is in training mode"}

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
        """The health body at once (the model is loaded); PlanningError when a submodule trains."""
        health = self.health()
        if health["status"] != "ok":
            raise PlanningError(503, "server.failed", str(health["error"]))
        return health

    def plan(
        self,
        obs: np.ndarray,
        goal: np.ndarray,
        proprio: Sequence[float] | np.ndarray | None = None,
        goal_proprio: Sequence[float] | np.ndarray | None = None,
        *,
        session_id: str | None = None,
        seed: int | None = None,
        deadline_ms: float | None = None,
        planner: Mapping[str, Any] | None = None,
        color_order: str = "rgb",
    ) -> dict[str, Any]:
        """Plan cold towards ``goal``: (re)starts a session. Frames: (H, W, 3) RGB, uint8 or float in [0, 1]."""
        received = time.monotonic()
        config = self._resolve(planner)
        proprio_t = self._proprio(proprio, "proprio")
        goal_proprio_t = self._proprio(goal_proprio, "goal_proprio")
        obs_t = _frame(obs, "obs", color_order)
        goal_t = _frame(goal, "goal", color_order)
        t0 = time.monotonic()
        with torch.inference_mode():
            z_goal = self.model.encode_observation(goal_t, goal_proprio_t)  # once per goal, kept by the session
            z_obs = self.model.encode_observation(obs_t, proprio_t)
        encoded = time.monotonic()
        session = MPCSession(goal=z_goal, config=config)
        sid = session_id or uuid.uuid4().hex
        result = self._solve(session, z_obs, None, None, seed, received, deadline_ms)
        self.sessions[sid] = session
        self.sessions.move_to_end(sid)
        while len(self.sessions) > self.max_sessions:
            dropped, _ = self.sessions.popitem(last=False)
            log.info("session %s dropped: more than %d sessions", dropped, self.max_sessions)
        return self._reply(sid, session, result, received, t0, encoded, warm=False)

    def replan(
        self,
        session_id: str | None,
        obs: np.ndarray,
        proprio: Sequence[float] | np.ndarray | None = None,
        executed_steps: int = 1,
        *,
        seed: int | None = None,
        deadline_ms: float | None = None,
        color_order: str = "rgb",
        mpc_state: str | None = None,
        goal: np.ndarray | None = None,
        goal_proprio: Sequence[float] | np.ndarray | None = None,
        always_send_goal: bool = False,
    ) -> dict[str, Any]:
        """Plan from a new frame, warm-started from the session's last plan shifted by ``executed_steps``."""
        received = time.monotonic()
        if session_id is None:
            raise PlanningError(422, "request.missing_field", "LocalClient keeps its sessions in this process and "
                                "issues no mpc_state tokens: replan with the session_id of the last reply",
                                "session_id")
        session = self.sessions.get(session_id)
        if session is None:
            raise PlanningError(404, "session.not_found", f"no session {session_id!r} (deleted, dropped, or never "
                                "planned); POST /plan to start one", "session_id")
        self.sessions.move_to_end(session_id)
        horizon = session.config.horizon
        if not 0 <= executed_steps <= horizon:
            raise PlanningError(422, "replan.executed_steps_out_of_range",
                                f"executed_steps={executed_steps} but the session's plan has only {horizon} model "
                                f"steps; send 0..{horizon}, or plan to start over.", "executed_steps")
        proprio_t = self._proprio(proprio, "proprio")
        obs_t = _frame(obs, "obs", color_order)
        t0 = time.monotonic()
        with torch.inference_mode():
            z_obs = self.model.encode_observation(obs_t, proprio_t)
        encoded = time.monotonic()
        result = self._solve(session, z_obs, session.init_mean(executed_steps), session.init_elites(executed_steps),
                             seed, received, deadline_ms)
        return self._reply(session_id, session, result, received, t0, encoded, warm=True)

    def delete_session(self, session_id: str) -> None:
        if self.sessions.pop(session_id, None) is None:
            raise PlanningError(404, "session.not_found", f"no session {session_id!r}", "session_id")

    # -- planning -------------------------------------------------------------------

    def _solve(self, session: MPCSession, z_obs: Latent, init_mean: torch.Tensor | None,
               init_elites: torch.Tensor | None, seed: int | None, received: float,
               deadline_ms: float | None) -> PlanResult:
        """One plan (init_mean (1, H, A), init_elites (1, e, H, A) or None), recorded in the session."""
        deadline = None if deadline_ms is None else received + deadline_ms / 1000.0
        with torch.inference_mode():
            (result,) = plan(self.model, z_obs, session.goal, session.config, init_mean=init_mean, seeds=[seed],
                             deadline=deadline, init_elites=init_elites)
        session.record(result)
        return result

    def _reply(self, session_id: str, session: MPCSession, result: PlanResult, received: float, t0: float,
               encoded: float, warm: bool) -> dict[str, Any]:
        """The server's reply for a plan (server/service.py ``_response``), in env units."""
        with torch.inference_mode():
            raw = self.model.codec.to_env(result.actions.unsqueeze(0))[0]  # (H * frameskip, raw_action_dim)
        actions = raw.detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(actions).all():
            raise PlanningError(500, "plan.non_finite", "the planner produced non-finite actions; the model or its "
                                "statistics are broken")
        if not np.isfinite(result.loss) or not all(np.isfinite(result.loss_trace)):
            raise PlanningError(422, "plan.loss_non_finite", "the plan's loss overflowed: proprio, goal_proprio or "
                                "planner.alpha are far outside what this model was trained on", "proprio")
        c = self.model.config
        if c.action_low is not None and c.action_high is not None:
            # The planner clamps in model space; this removes the round-off of converting back, as the server does.
            actions = np.clip(actions, np.asarray(c.action_low, np.float64), np.asarray(c.action_high, np.float64))
        horizon = int(result.actions.shape[0])
        done = time.monotonic()
        reply = {
            "session_id": session_id, "mpc_state": None, "served_by": "local", "subgoal": None,
            "actions": actions.tolist(), "model_actions": actions.reshape(horizon, -1).tolist(),
            "loss": float(result.loss), "loss_trace": [float(x) for x in result.loss_trace],
            "iterations": int(result.iterations), "stop_reason": result.stop_reason, "method": result.method,
            "horizon": horizon, "frameskip": int(c.frameskip), "seed": int(result.seed), "warm_start": warm,
            "rollouts": int(result.rollouts), "grad_rollouts": int(result.grad_rollouts),
            "timing_ms": {"decode": round((t0 - received) * 1000, 3), "encode": round((encoded - t0) * 1000, 3),
                          "plan": round((done - encoded) * 1000, 3), "total": round((done - received) * 1000, 3)},
            "warnings": [],
        }
        if self.replies is not None:
            self.replies.append(reply)
        return reply

    # -- checks, with the server's codes ------------------------------------------------

    def _resolve(self, overrides: Mapping[str, Any] | None) -> CEMConfig:
        try:
            cfg = dataclasses.replace(self.config, **dict(overrides)) if overrides else self.config
        except (ValueError, TypeError) as exc:
            raise PlanningError(422, "planner.invalid", f"planner: {exc}", "planner") from None
        if cfg.subgoals:  # the server's engine aims at subgoals from its graph; this client has none
            raise PlanningError(422, "planner.subgoals_unavailable",
                                "planner.subgoals: the in-process client plans without a subgoal graph; "
                                "use a server started with --subgoals", "planner")
        return cfg

    def _proprio(self, values: Sequence[float] | np.ndarray | None, field: str) -> torch.Tensor | None:
        """(1, proprio_dim) float32 in env units, or None for a model without proprio."""
        dim = int(self.model.config.proprio_dim)
        if dim == 0:
            if values is not None and np.asarray(values).size:
                raise PlanningError(422, "proprio.wrong_length", f"{field}: this model takes no proprio", field)
            return None
        if values is None:
            raise PlanningError(422, "proprio.missing", f"{field} is required: this model takes {dim} values", field)
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape[0] != dim:
            raise PlanningError(422, "proprio.wrong_length", f"{field} has {arr.shape[0]} values but this model "
                                f"takes {dim}.", field)
        if not np.all(np.abs(arr) <= np.finfo(np.float32).max):
            raise PlanningError(422, "proprio.non_finite", f"{field} has values beyond float32", field)
        return torch.from_numpy(arr.astype(np.float32)[None])


def _frame(frame: Any, field: str, color_order: str) -> torch.Tensor:
    """(1, H, W, 3) RGB, uint8 or float32, from an (H, W, 3) numpy array."""
    arr = np.asarray(frame)
    if arr.size == 0:
        raise PlanningError(422, "image.empty", f"{field} is empty (has the camera rendered?)", field)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise PlanningError(422, "image.bad_shape", f"{field} has shape {arr.shape}; send (H, W, 3) RGB", field)
    arr = arr[..., :3]
    if color_order == "bgr":
        arr = arr[..., ::-1]
    elif color_order != "rgb":
        raise PlanningError(422, "request.invalid", f"color_order={color_order!r}: 'rgb' or 'bgr'", "color_order")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise PlanningError(422, "image.unsupported_dtype", f"{field} has dtype {arr.dtype}; send uint8 or "
                                "float in [0, 1]", field)
        if not np.all(np.isfinite(arr)):
            raise PlanningError(422, "image.non_finite", f"{field} has NaN or Inf", field)
        if arr.min() < 0 or arr.max() > 1:
            raise PlanningError(422, "image.float_out_of_range", f"{field}: floats must be in [0, 1]", field)
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr)[None])
