"""The planning service: plan and replan, with no HTTP in it.

``PlanningService`` takes a request body (frames as sent: files or raw
arrays), validates it, resolves its planner settings, holds the episode's
warm-start state (an ``MPCState``, kept in a session or carried by the
``mpc_state`` token: one replan path for both), asks the scheduler for the
plan and builds the reply in env units. The HTTP routes decode a body, call
it and encode its answer; ``server.local.LocalClient`` calls it in process.

The order of work is chosen so that cheap checks fail first: planner
settings, cost and proprio before images, images before the session lock.
Requests on one session hold its lock from reading the last plan to
recording the next, so two interleaved replans never start from a stale one.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import numpy as np

from planning import PlannerConfig
from server import planner
from server.decoding import Decoder
from server.engine import ModelInfo, PlanInput, PlanOutput
from server.errors import ApiError
from server.images import ImageError, Notice
from server.planner import PlannerLimits
from server.scheduler import DeadlinePassed, Overloaded, Scheduler, ShuttingDown
from server.schemas import PlannerOverrides, PlanRequest, PlanResponse, ReplanRequest
from server.sessions import Session, SessionNotFound, SessionStore
from server.tokens import GoalCache, MPCState, TokenCodec, goal_identity

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class PlanningService:
    """Plan and replan for one loaded model.

    scheduler: runs the model work (and prices it). model: what the service knows of the model.
    base: the server's default planner config; limits: its bounds on requests; base_gflop:
    the cost of a default plan. sessions, tokens, goals: where warm starts and goal latents
    live. decoder: the frames' decoding. replica: this process's name in every reply.
    """

    def __init__(self, scheduler: Scheduler, model: ModelInfo, base: PlannerConfig, limits: PlannerLimits,
                 base_gflop: float, sessions: SessionStore, tokens: TokenCodec, goals: GoalCache, decoder: Decoder,
                 replica: str) -> None:
        self.scheduler, self.model, self.base, self.limits = scheduler, model, base, limits
        self.base_gflop = base_gflop
        self.sessions, self.tokens, self.goals, self.decoder, self.replica = sessions, tokens, goals, decoder, replica

    async def plan(self, body: PlanRequest, received_at: float) -> PlanResponse:
        """Encode obs and goal, plan cold, and (re)start the session with this goal."""
        config, gflop, notices = self._config(body.planner)
        proprio = check_proprio(body.proprio, "proprio", self.model.proprio_dim)
        goal_proprio = check_proprio(body.goal_proprio, "goal_proprio", self.model.proprio_dim)
        pending, pending_notices = check_pending(body.pending_actions, self.model, config.horizon)
        obs = await self.decoder.decode(body.obs, "obs")
        goal = await self.decoder.decode(body.goal, "goal")
        decoded_at = time.monotonic()
        job = PlanInput(obs.pixels, proprio, config, goal=goal.pixels, goal_proprio=goal_proprio,
                        seed=body.seed, deadline=_deadline(received_at, body.deadline_ms), pending=pending)
        notices += pending_notices + obs.warnings + goal.warnings
        goal_id = goal_identity(self.model.model_id, goal.pixels, goal_proprio)
        del obs, goal  # only the job holds the pixels now

        session_id = body.session_id or uuid.uuid4().hex
        session, created = self.sessions.get_or_create(session_id)
        try:
            async with session.lock:
                done = await self.scheduler.submit(job, gflop)
                state = _next_state(config, goal_id, done)
                session.state, session.goal = state, done.goal_latent
        except BaseException:
            if created:
                self.sessions.discard(session)
            raise
        self.goals.put(goal_id, done.goal_latent)
        return self._reply(session_id, state, done, job, received_at, decoded_at, notices)

    async def replan(self, body: ReplanRequest, received_at: float) -> PlanResponse:
        """Plan from a new frame, warm-started from the last plan shifted by the steps executed:
        the session's (``session_id``) or the one carried by ``mpc_state``."""
        if (body.session_id is None) == (body.mpc_state is None):
            raise ApiError(422, "request.invalid" if body.session_id else "request.missing_field",
                           "send exactly one of session_id (server-side session) and mpc_state (the token of the "
                           "last response)", "session_id")
        session: Session | None = None
        if body.session_id is not None:
            if body.goal is not None or body.goal_proprio is not None:
                raise ApiError(422, "request.invalid", "goal and goal_proprio go with mpc_state; a session keeps "
                               "its goal (POST /plan to change it)", "goal")
            session = self.sessions.get(body.session_id)
            token_state, goal_latent, goal_pixels, goal_proprio, gflop = None, None, None, None, 0.0
        else:
            token_state = self.tokens.read(body.mpc_state)  # type: ignore[arg-type]
            _, gflop, _ = self._config(None, token_state.config)
            if token_state.plan.shape[1] != self.model.action_dim:
                raise ApiError(422, "mpc_state.invalid", f"mpc_state's plan has shape {token_state.plan.shape}, not "
                               f"(horizon, {self.model.action_dim}) for this model", "mpc_state")
            _check_executed(body.executed_steps, token_state.config.horizon, "the plan in mpc_state")
        proprio = check_proprio(body.proprio, "proprio", self.model.proprio_dim)
        # The bound on their count needs the episode's horizon: checked again under the session's lock.
        pending, notices = check_pending(body.pending_actions, self.model,
                                         None if token_state is None else token_state.config.horizon)
        if token_state is not None:
            goal_latent, goal_pixels, goal_proprio = await self._token_goal(body, token_state.goal_id)
        obs = await self.decoder.decode(body.obs, "obs")
        decoded_at = time.monotonic()

        async with session.lock if session is not None else contextlib.nullcontext():
            last = session.state if session is not None else token_state
            assert last is not None  # SessionStore.get returns planned sessions only
            _check_executed(body.executed_steps, last.config.horizon, "the session's plan")
            _check_pending_count(pending, self.model.frameskip, last.config.horizon)
            # The new plan takes effect after the executed and the pending steps: shift by both.
            init_mean, init_elites = last.warm_start(body.executed_steps + _model_steps(pending, self.model))
            job = PlanInput(obs.pixels, proprio, last.config, goal=goal_pixels, goal_proprio=goal_proprio,
                            goal_latent=session.goal if session is not None else goal_latent,
                            init_mean=init_mean, init_elites=init_elites, seed=body.seed,
                            deadline=_deadline(received_at, body.deadline_ms), pending=pending)
            done = await self.scheduler.submit(job, gflop if session is None else self.scheduler.cost(last.config))
            state = _next_state(last.config, last.goal_id, done)
            if session is not None:
                session.state = state
        self.goals.put(state.goal_id, done.goal_latent)
        return self._reply(body.session_id, state, done, job, received_at, decoded_at, notices + obs.warnings)

    # -- checks ---------------------------------------------------------------------

    def _config(self, overrides: PlannerOverrides | None,
                values: PlannerConfig | None = None) -> tuple[PlannerConfig, float, list[Notice]]:
        """A request's planner config (validated, within limits), or a token's (`values`), its cost in
        GFLOPs (within the per-request limit), and notices of deprecated names used."""
        sent = overrides.model_dump(exclude_none=True) if overrides is not None else {}
        config, notices = (values, []) if values is not None else planner.resolve(self.base, sent, self.limits)
        if config.subgoals and not self.model.subgoals:
            origin = "" if "subgoals" in sent or values is not None else " (the server's default)"
            raise ApiError(422, "planner.subgoals_unavailable",
                           f"planner.subgoals=true{origin} but this server has no subgoal graph for its model; send "
                           "planner.subgoals=false, or start the server with one (python -m planning.subgoals "
                           "build, then --subgoals PATH)", "planner.subgoals")
        gflop = self.scheduler.cost(config)
        planner.check_cost(config, gflop, self.base, self.base_gflop, self.limits, sent)
        return config, gflop, notices

    async def _token_goal(self, body: ReplanRequest, goal_id: str) -> tuple[Any, np.ndarray | None,
                                                                           np.ndarray | None]:
        """The goal of a token's episode: its latent from this process's cache, or its frame from the
        request to encode again (checked to be that goal). Returns (latent, pixels, proprio)."""
        latent = self.goals.get(goal_id)
        if body.goal is None:
            if latent is None:
                raise ApiError(409, "mpc_state.goal_unknown",
                               "this server does not hold the goal of this mpc_state (another replica planned it, "
                               "or it restarted); resend the same request with goal and goal_proprio", "goal")
            return latent, None, None
        proprio = check_proprio(body.goal_proprio, "goal_proprio", self.model.proprio_dim)
        goal = await self.decoder.decode(body.goal, "goal")
        if goal_identity(self.model.model_id, goal.pixels, proprio) != goal_id:
            raise ApiError(422, "mpc_state.goal_mismatch",
                           "goal and goal_proprio are not the goal this mpc_state was planned for; send that goal, "
                           "or POST /plan to plan towards a new one", "goal")
        return (latent, None, None) if latent is not None else (None, goal.pixels, proprio)

    # -- the reply --------------------------------------------------------------------

    def _reply(self, session_id: str | None, state: MPCState, done: PlanOutput, job: PlanInput,
               received_at: float, decoded_at: float, notices: list[Notice]) -> PlanResponse:
        """Shape the plan for the client: env steps and model steps, in raw units."""
        result, actions = done.result, done.actions
        if not np.isfinite(actions).all():
            raise ApiError(500, "plan.non_finite",
                           "the planner produced non-finite actions; the model or its statistics are broken")
        if not np.isfinite(result.loss) or not all(np.isfinite(result.loss_trace)):
            raise ApiError(
                422, "plan.loss_non_finite",
                "the plan's loss overflowed (not a finite number): proprio, goal_proprio or planner.alpha are "
                "far outside what this model was trained on; send proprio in the env's units and a smaller alpha.",
                "proprio")
        if self.model.action_bounds is not None:
            # The planner clamps to the bounds in model space already; this only
            # removes the round-off of converting back to env units.
            actions = np.clip(actions, *self.model.action_bounds)
        horizon = result.actions.shape[0]
        ms = 1000.0
        return PlanResponse(
            session_id=session_id,
            mpc_state=self.tokens.issue(state),
            served_by=self.replica,
            actions=actions.tolist(),
            model_actions=actions.reshape(horizon, -1).tolist(),  # (H, frameskip * raw_action_dim)
            loss=float(result.loss),
            loss_trace=[float(x) for x in result.loss_trace],
            iterations=int(result.iterations),
            stop_reason=result.stop_reason,
            method=result.method,
            horizon=int(horizon),
            frameskip=self.model.frameskip,
            seed=int(result.seed),
            warm_start=job.init_mean is not None,
            pending_steps=_model_steps(job.pending, self.model),
            rollouts=int(result.rollouts),
            grad_rollouts=int(result.grad_rollouts),
            subgoal=done.subgoal,
            timing_ms={
                "decode": round((decoded_at - received_at) * ms, 3),
                "encode": round(done.encode_s * ms, 3),
                "plan": round(done.plan_s * ms, 3),
                "total": round((time.monotonic() - received_at) * ms, 3),
            },
            warnings=[{"code": n.code, "message": n.message, "field": n.field} for n in notices],
        )


def as_api_error(exc: BaseException) -> ApiError | None:
    """The coded client error for an exception the service's layers raise (None: not one of theirs)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ImageError):
        return ApiError(422, exc.code, exc.message, exc.field)
    if isinstance(exc, SessionNotFound):
        return ApiError(404, exc.code, exc.message, "session_id")
    if isinstance(exc, Overloaded):
        return ApiError(503, "server.overloaded",
                        f"the server has {exc.queued_gflop:.4g} GFLOP of planning queued, over its budget of "
                        f"{exc.budget_gflop:.4g}; retry after {exc.retry_after_s} s",
                        headers={"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, ShuttingDown):
        return ApiError(503, "server.shutting_down",
                        "the server is shutting down; retry on another replica or after it restarts",
                        headers={"Retry-After": "1", "Connection": "close"})
    if isinstance(exc, DeadlinePassed):
        return ApiError(503, "plan.deadline_passed",
                        f"deadline_ms passed while the request waited {exc.waited_s * 1000:.0f} ms in the queue; no "
                        "plan was made. Send a longer deadline_ms or retry", "deadline_ms",
                        headers={"Retry-After": "1"})
    return None


def check_proprio(values: list[float] | None, field: str, dim: int) -> np.ndarray | None:
    """Proprio as float32 (dim,), or None for a model without proprio."""
    if dim == 0:
        if values:
            raise ApiError(
                422, "proprio.wrong_length",
                f"{field} has {len(values)} values but this model takes no proprio; omit it.", field)
        return None
    if values is None:
        raise ApiError(
            422, "proprio.missing",
            f"{field} is required: this model takes {dim} proprio values in raw env units.", field)
    if len(values) != dim:
        raise ApiError(422, "proprio.wrong_length", f"{field} has {len(values)} values but this model takes {dim}.",
                       field)
    wide = np.asarray(values, dtype=np.float64)
    # Finite in float64 but beyond float32 would become inf on the model.
    bad = [i for i, v in enumerate(wide) if not abs(v) <= _FLOAT32_MAX]
    if bad:
        raise ApiError(
            422, "proprio.non_finite",
            f"{field} has values beyond float32 at {bad}; send finite numbers in raw env units.", field)
    return wide.astype(np.float32)


def check_pending(rows: list[list[float]] | None, model: ModelInfo,
                  horizon: int | None) -> tuple[np.ndarray | None, list[Notice]]:
    """Pending actions as float32 (k * frameskip, raw_action_dim) in env units, within the action
    bounds (clipped, with a notice), or None when there are none. horizon: the plan's, to bound
    their count (None: checked later, `_check_pending_count`)."""
    if not rows:
        return None, []
    field, fs = "pending_actions", model.frameskip
    raw_dim = model.action_dim // fs
    bad = [i for i, row in enumerate(rows) if len(row) != raw_dim]
    if bad:
        raise ApiError(422, "pending_actions.wrong_shape",
                       f"pending_actions rows {bad[:5]} have {len(rows[bad[0]])} values; each row is one env action "
                       f"of raw_action_dim={raw_dim} values in raw env units", field)
    wide = np.asarray(rows, dtype=np.float64)  # (n, raw_action_dim)
    if not (np.abs(wide) <= _FLOAT32_MAX).all():
        raise ApiError(422, "pending_actions.non_finite",
                       "pending_actions has values beyond float32; send finite numbers in raw env units", field)
    if len(rows) % fs:
        # A model step is frameskip env actions taken as one input; the model cannot predict
        # the state part-way through one, and no solver can hold a prefix of its first action fixed.
        lower, upper = len(rows) // fs * fs, (len(rows) // fs + 1) * fs
        raise ApiError(422, "pending_actions.partial_step",
                       f"pending_actions has {len(rows)} env actions, not a multiple of this model's frameskip "
                       f"{fs}: the model steps {fs} env actions at a time and cannot predict part of a step. "
                       f"Send whole model steps ({lower} or {upper} actions): execute to the next model-step "
                       "boundary before switching plans", field)
    if horizon is not None:
        _check_pending_count(wide, fs, horizon)
    notices: list[Notice] = []
    if model.action_bounds is not None:
        clipped = np.clip(wide, *model.action_bounds)
        changed = int((clipped != wide).sum())
        if changed:
            low, high = (b.tolist() for b in model.action_bounds)
            notices.append(Notice("pending_actions.clipped",
                                  f"{changed} values of pending_actions were outside the model's action bounds "
                                  f"{low}..{high} and were clipped before the model predicted from them; send "
                                  "the actions the robot executes, within those bounds", field))
            wide = clipped
    return wide.astype(np.float32), notices


def _check_pending_count(pending: np.ndarray | None, frameskip: int, horizon: int) -> None:
    if pending is not None and len(pending) > horizon * frameskip:
        raise ApiError(422, "pending_actions.too_many",
                       f"pending_actions has {len(pending)} env actions, more than the plan's horizon of {horizon} "
                       f"model steps ({horizon * frameskip} env actions): a plan that far ahead would start "
                       "beyond what the model was asked to predict; send at most that many, or replan sooner",
                       "pending_actions")


def _model_steps(pending: np.ndarray | None, model: ModelInfo) -> int:
    return 0 if pending is None else len(pending) // model.frameskip


def _check_executed(executed: int, horizon: int, whose: str) -> None:
    if executed > horizon:
        raise ApiError(
            422, "replan.executed_steps_out_of_range",
            f"executed_steps={executed} but {whose} has only {horizon} model steps; send 0..{horizon}, "
            "or POST /plan to start over.", "executed_steps")


def _next_state(config: PlannerConfig, goal_id: str, done: PlanOutput) -> MPCState:
    result = done.result
    elites = None if result.elites is None else result.elites.detach().cpu().numpy()
    return MPCState(config, goal_id, result.actions.detach().cpu().numpy(), elites)


def _deadline(received_at: float, deadline_ms: float | None) -> float | None:
    return None if deadline_ms is None else received_at + deadline_ms / 1000.0
