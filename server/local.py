"""An in-process stand-in for ``wm_client.PlanningClient``: the server's planning service, without HTTP.

    from models import load_model
    from server.local import LocalClient
    from wm_client import ControlLoop

    client = LocalClient(load_model("models/default/wall.pt"))   # the server's default config for the model
    loop = ControlLoop(client, camera, robot, step, goal_frame, goal_proprio)   # unchanged: same calls, same replies

``LocalClient`` answers the calls ``wm_client.ControlLoop`` makes (``plan``,
``replan``, ``delete_session``, ``health``, ``wait_ready``, ``close``) by
calling the same ``server.service.PlanningService`` the HTTP routes call:
the same validation, warm starts (sessions and ``mpc_state`` tokens), error
codes and reply (``rollouts`` and ``grad_rollouts`` included, for
success-per-compute benchmarks). Frames are numpy arrays, sent to the
service as the raw frames a client would send.

Why it exists: the benchmarks and the trainer's planning-success check run the
same closed loop as the example clients (``envs.episodes``) without a server
process and its HTTP in the measurement.

Where it differs from a server, on purpose: no limits on planner settings or
cost (the caller owns the machine), no micro-batching wait (one request at a
time: it is not safe to share between threads), sessions never expire (at
most ``max_sessions``, least recently used dropped first). Errors are raised
as ``wm_client.PlanningError`` with the server's codes, so the loop's
policies apply.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from models import WorldModel
from planning import PlannerConfig
from planning.subgoals import SubgoalGraph
from server.decoding import DecodeBudget, Decoder
from server.engine import Engine
from server.errors import ApiError, from_validation_errors
from server.planner import PlannerLimits
from server.scheduler import Scheduler
from server.schemas import PlanRequest, ReplanRequest
from server.service import PlanningService, as_api_error
from server.sessions import SessionNotFound, SessionStore
from server.tokens import GoalCache, TokenCodec
from wm_client.client import PlanningError

_MAX_PIXELS = 4096 * 4096


class LocalClient:
    """Plans in this process with the same calls and replies as ``wm_client.PlanningClient``.

    Args:
        model: an eval-mode world model (``models.load_model``).
        config: the default planner config; None = ``PlannerConfig.for_model(model,
            device)``, what ``python -m server`` plans with for this model.
        keep_replies: keep every reply in ``self.replies`` (benchmarks read the
            plans' cost and timing from them).
        max_sessions: sessions kept; the least recently used is dropped beyond
            it (its next replan gets ``session.not_found``, as from a server).
        subgoals: the latent subgoal graph plans with ``planner.subgoals`` search
            (``server.engine.load_subgoals``, as the server's ``--subgoals``);
            None: such plans are refused, as by a server without a graph.
    """

    def __init__(self, model: WorldModel, config: PlannerConfig | None = None, *, keep_replies: bool = False,
                 max_sessions: int = 64, subgoals: SubgoalGraph | None = None) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions={max_sessions}: must be >= 1")
        self.model = model
        self.config = config or PlannerConfig.for_model(model, model.device.type)
        self.replies: list[dict[str, Any]] | None = [] if keep_replies else None
        engine = Engine(model, model.device, self.config, subgoals=subgoals)
        self._scheduler = Scheduler(engine, max_batch=1, batch_wait_s=0.0)
        info, unlimited = engine.info, PlannerLimits({})
        self.sessions = SessionStore(max_sessions, math.inf)
        self.service = PlanningService(
            self._scheduler, info, self.config, unlimited, engine.plan_gflop(self.config), self.sessions,
            TokenCodec(engine.model_id, None, 1 << 24, 0, self.config, unlimited), GoalCache(max_sessions),
            Decoder(DecodeBudget(1 << 30), info.image_size, _MAX_PIXELS, "resize"), "local")
        self._loop = asyncio.new_event_loop()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the model thread and forget every session (the model stays loaded: the caller owns it)."""
        self._scheduler.close()
        if not self._loop.is_closed():
            self._loop.close()

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

    def plan(self, obs: np.ndarray, goal: np.ndarray, proprio: Sequence[float] | np.ndarray | None = None,
             goal_proprio: Sequence[float] | np.ndarray | None = None, *, session_id: str | None = None,
             seed: int | None = None, deadline_ms: float | None = None, planner: Mapping[str, Any] | None = None,
             color_order: str = "rgb", pending_actions: Sequence[Sequence[float]] | np.ndarray | None = None
             ) -> dict[str, Any]:
        """Plan cold towards ``goal``: (re)starts a session. Frames: (H, W, 3) RGB, uint8 or float in [0, 1]."""
        body = {"obs": _frame(obs, color_order), "goal": _frame(goal, color_order), "proprio": _floats(proprio),
                "goal_proprio": _floats(goal_proprio), "session_id": session_id, "seed": seed,
                "deadline_ms": deadline_ms, "planner": None if planner is None else dict(planner),
                "pending_actions": _rows(pending_actions)}
        return self._call(PlanRequest, body, self.service.plan)

    def replan(self, session_id: str | None, obs: np.ndarray, proprio: Sequence[float] | np.ndarray | None = None,
               executed_steps: int = 1, *, seed: int | None = None, deadline_ms: float | None = None,
               color_order: str = "rgb", mpc_state: str | None = None, goal: np.ndarray | None = None,
               goal_proprio: Sequence[float] | np.ndarray | None = None,
               always_send_goal: bool = False,
               pending_actions: Sequence[Sequence[float]] | np.ndarray | None = None) -> dict[str, Any]:
        """Plan from a new frame, warm-started from the last plan (the session's, or ``mpc_state``'s)
        shifted by ``executed_steps``. The goal is sent with a token only when asked for, as
        ``PlanningClient`` does (this process holds every goal it planned for)."""
        body = {"session_id": session_id, "mpc_state": mpc_state, "obs": _frame(obs, color_order),
                "proprio": _floats(proprio), "executed_steps": executed_steps, "seed": seed,
                "deadline_ms": deadline_ms, "pending_actions": _rows(pending_actions)}
        if mpc_state is not None and goal is not None and always_send_goal:
            body |= {"goal": _frame(goal, color_order), "goal_proprio": _floats(goal_proprio)}
        return self._call(ReplanRequest, body, self.service.replan)

    def delete_session(self, session_id: str) -> None:
        try:
            self.sessions.delete(session_id)
        except SessionNotFound as exc:
            error = as_api_error(exc)
            assert error is not None
            raise PlanningError(error.status, error.code, error.message, error.field) from None

    # -- the one call -------------------------------------------------------------------

    def _call(self, kind: type[PlanRequest] | type[ReplanRequest], body: dict[str, Any], method: Any) -> dict:
        received = time.monotonic()
        try:
            request = kind.model_validate({k: v for k, v in body.items() if v is not None})
            reply = self._loop.run_until_complete(method(request, received)).model_dump()
        except Exception as exc:
            error = _validation_error(exc) or as_api_error(exc)
            if error is None:
                raise
            raise PlanningError(error.status, error.code, error.message, error.field,
                                retry_after_s=_retry_after(error.headers)) from None
        if self.replies is not None:
            self.replies.append(reply)
        return reply


def _frame(frame: Any, color_order: str) -> dict[str, Any]:
    """The raw wire form of an (H, W, C) or (C, H, W) numpy frame, as a client would send it."""
    arr = np.asarray(frame)
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return {"format": "raw", "data": arr.tobytes(), "shape": list(arr.shape), "dtype": arr.dtype.name,
            "color_order": color_order}


def _floats(values: Sequence[float] | np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def _rows(values: Sequence[Sequence[float]] | np.ndarray | None) -> list[list[float]] | None:
    return None if values is None else np.asarray(values, dtype=np.float64).tolist()


def _validation_error(exc: Exception) -> ApiError | None:
    return from_validation_errors(exc.errors()) if isinstance(exc, ValidationError) else None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("Retry-After")
    return None if value is None else float(value)
