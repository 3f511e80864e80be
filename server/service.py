"""Plan and replan: a validated request becomes a job; its answer becomes a response.

The order of work is chosen so that cheap checks fail first: planner
overrides, cost and proprio before images, images before the session lock.
Then the request is one job for the scheduler (server/scheduler.py), which
encodes and plans it with whatever it batches it with and returns the plan
as a value. Requests on one session hold its lock from reading the last plan
to recording the next.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import numpy as np
import torch

from planning import CEMConfig, MPCSession, warm_start
from server import planner
from server.decoding import decode
from server.engine import PlanInput, PlanOutput
from server.errors import ApiError
from server.images import Notice
from server.runtime import Runtime
from server.schemas import PlannerOverrides, PlanRequest, PlanResponse, ReplanRequest
from server.tokens import goal_identity

_FLOAT32_MAX = float(np.finfo(np.float32).max)


async def plan(runtime: Runtime, body: PlanRequest, received_at: float) -> PlanResponse:
    """Encode obs and goal, plan cold, and (re)start the session with this goal."""
    engine = runtime.ready_engine()
    config, gflop = _config(runtime, body.planner)
    proprio = check_proprio(body.proprio, "proprio", engine.proprio_dim)
    goal_proprio = check_proprio(body.goal_proprio, "goal_proprio", engine.proprio_dim)
    obs = await decode(runtime, body.obs, "obs")
    goal = await decode(runtime, body.goal, "goal")
    decoded_at = time.monotonic()
    job = PlanInput(obs.pixels, proprio, config, goal=goal.pixels, goal_proprio=goal_proprio,
                    seed=body.seed, deadline=_deadline(received_at, body.deadline_ms))
    notices = obs.warnings + goal.warnings
    goal_id = goal_identity(engine.model_id, goal.pixels, goal_proprio)
    del obs, goal  # only the job holds the pixels now

    session_id = body.session_id or uuid.uuid4().hex
    session, created = runtime.sessions.get_or_create(session_id)
    try:
        async with session.lock:
            done = await runtime.scheduler.submit(job, gflop)
            mpc = MPCSession(goal=done.goal_latent, config=config)
            mpc.record(done.result)
            session.state, session.goal_id = mpc, goal_id
    except BaseException:
        if created:
            runtime.sessions.discard(session)
        raise
    runtime.goals.put(goal_id, done.goal_latent)
    return _response(runtime, session_id, done, job, goal_id, received_at, decoded_at, notices)


async def replan(runtime: Runtime, body: ReplanRequest, received_at: float) -> PlanResponse:
    """Plan from a new frame, warm-started from the last plan shifted by the steps executed:
    the session's, or the one carried by ``mpc_state``."""
    if (body.session_id is None) == (body.mpc_state is None):
        raise ApiError(422, "request.invalid" if body.session_id else "request.missing_field",
                       "send exactly one of session_id (server-side session) and mpc_state (the token of the "
                       "last response)", "session_id")
    if body.mpc_state is not None:
        return await _replan_stateless(runtime, body, received_at)
    if body.goal is not None or body.goal_proprio is not None:
        raise ApiError(422, "request.invalid", "goal and goal_proprio go with mpc_state; a session keeps its goal "
                       "(POST /plan to change it)", "goal")
    engine = runtime.ready_engine()
    session = runtime.sessions.get(body.session_id)
    proprio = check_proprio(body.proprio, "proprio", engine.proprio_dim)
    obs = await decode(runtime, body.obs, "obs")
    decoded_at = time.monotonic()

    async with session.lock:
        mpc = session.state
        assert mpc is not None  # SessionStore.get returns planned sessions only
        horizon = mpc.config.horizon
        if body.executed_steps > horizon:
            raise ApiError(
                422, "replan.executed_steps_out_of_range",
                f"executed_steps={body.executed_steps} but the session's plan has only "
                f"{horizon} model steps; send 0..{horizon}, or POST /plan to start over.",
                "executed_steps")
        job = PlanInput(obs.pixels, proprio, mpc.config, goal_latent=mpc.goal,
                        init_mean=mpc.init_mean(body.executed_steps),
                        init_elites=mpc.init_elites(body.executed_steps), seed=body.seed,
                        deadline=_deadline(received_at, body.deadline_ms))
        done = await runtime.scheduler.submit(job, engine.plan_gflop(mpc.config))
        mpc.record(done.result)
        goal_id = session.goal_id or ""
    return _response(runtime, body.session_id, done, job, goal_id, received_at, decoded_at, obs.warnings)


async def _replan_stateless(runtime: Runtime, body: ReplanRequest, received_at: float) -> PlanResponse:
    """A replan whose warm start and planner settings come from its token; the goal latent
    from this process's cache, or encoded from the goal frame the request carries."""
    engine = runtime.ready_engine()
    assert runtime.tokens is not None and body.mpc_state is not None
    state = runtime.tokens.read(body.mpc_state)
    config = planner.resolve(engine.base_config, state.config, runtime.limits)
    _check_subgoals(runtime, config, state.config)
    gflop = engine.plan_gflop(config)
    planner.check_cost(config, gflop, engine.base_config, runtime.base_gflop, runtime.limits)
    if state.plan.shape != (config.horizon, engine.model.config.action_dim):
        raise ApiError(422, "mpc_state.invalid", f"mpc_state's plan has shape {state.plan.shape}, not "
                       f"({config.horizon}, {engine.model.config.action_dim}) for this model", "mpc_state")
    if body.executed_steps > config.horizon:
        raise ApiError(
            422, "replan.executed_steps_out_of_range",
            f"executed_steps={body.executed_steps} but the plan in mpc_state has only {config.horizon} model "
            f"steps; send 0..{config.horizon}, or POST /plan to start over.", "executed_steps")
    proprio = check_proprio(body.proprio, "proprio", engine.proprio_dim)
    goal_latent = runtime.goals.get(state.goal_id)
    goal_pixels, goal_proprio = None, None
    if body.goal is not None:
        goal_proprio = check_proprio(body.goal_proprio, "goal_proprio", engine.proprio_dim)
        goal = await decode(runtime, body.goal, "goal")
        if goal_identity(engine.model_id, goal.pixels, goal_proprio) != state.goal_id:
            raise ApiError(422, "mpc_state.goal_mismatch",
                           "goal and goal_proprio are not the goal this mpc_state was planned for; send that goal, "
                           "or POST /plan to plan towards a new one", "goal")
        if goal_latent is None:
            goal_pixels = goal.pixels
    elif goal_latent is None:
        raise ApiError(409, "mpc_state.goal_unknown",
                       "this server does not hold the goal of this mpc_state (another replica planned it, or it "
                       "restarted); resend the same request with goal and goal_proprio", "goal")
    obs = await decode(runtime, body.obs, "obs")
    decoded_at = time.monotonic()
    init = warm_start(torch.from_numpy(state.plan), body.executed_steps, config.horizon).unsqueeze(0)  # (1, H, A)
    elites = None
    if state.elites is not None:  # (e, H, A) -> (1, e, H, A), shifted like the plan
        elites = warm_start(torch.from_numpy(state.elites), body.executed_steps, config.horizon).unsqueeze(0)
    job = PlanInput(obs.pixels, proprio, config, goal=goal_pixels, goal_proprio=goal_proprio,
                    goal_latent=goal_latent if goal_pixels is None else None, init_mean=init, init_elites=elites,
                    seed=body.seed, deadline=_deadline(received_at, body.deadline_ms))
    done = await runtime.scheduler.submit(job, gflop)
    runtime.goals.put(state.goal_id, done.goal_latent)
    return _response(runtime, None, done, job, state.goal_id, received_at, decoded_at, obs.warnings)


def _config(runtime: Runtime, overrides: PlannerOverrides | None) -> tuple[CEMConfig, float]:
    """The request's planner config (validated, within limits) and its cost in GFLOPs."""
    engine = runtime.ready_engine()
    values = overrides.model_dump(exclude_none=True) if overrides is not None else {}
    config = planner.resolve(engine.base_config, values, runtime.limits)
    _check_subgoals(runtime, config, values)
    gflop = engine.plan_gflop(config)
    planner.check_cost(config, gflop, engine.base_config, runtime.base_gflop, runtime.limits)
    return config, gflop


def _check_subgoals(runtime: Runtime, config: CEMConfig, sent: dict) -> None:
    """422 when a plan asks for subgoals from a server without a subgoal graph."""
    if config.subgoals and runtime.ready_engine().subgoals is None:
        origin = "" if "subgoals" in sent else " (the server's default)"
        raise ApiError(422, "planner.subgoals_unavailable",
                       f"planner.subgoals=true{origin} but this server has no subgoal graph for its model; send "
                       "planner.subgoals=false, or start the server with one (python -m planning.subgoals build, "
                       "then --subgoals PATH)", "planner.subgoals")


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


def _deadline(received_at: float, deadline_ms: float | None) -> float | None:
    return None if deadline_ms is None else received_at + deadline_ms / 1000.0


def _response(runtime: Runtime, session_id: str | None, done: PlanOutput, job: PlanInput, goal_id: str,
              received_at: float, decoded_at: float, notices: list[Notice]) -> PlanResponse:
    """Shape the plan for the client: env steps and model steps, in raw units."""
    engine = runtime.ready_engine()
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
    bounds = engine.action_bounds()
    if bounds is not None:
        # The planner clamps to the bounds in model space already; this only
        # removes the round-off of converting back to env units.
        actions = np.clip(actions, *bounds)
    horizon = result.actions.shape[0]
    model_actions = actions.reshape(horizon, -1)  # (H, frameskip * raw_action_dim)
    ms = 1000.0
    assert runtime.tokens is not None
    elites = None if result.elites is None else result.elites.detach().cpu().numpy()
    token = runtime.tokens.issue(dataclasses.asdict(job.config), goal_id, result.actions.detach().cpu().numpy(),
                                 elites)
    return PlanResponse(
        session_id=session_id,
        mpc_state=token,
        served_by=runtime.replica,
        actions=actions.tolist(),
        model_actions=model_actions.tolist(),
        loss=float(result.loss),
        loss_trace=[float(x) for x in result.loss_trace],
        iterations=int(result.iterations),
        stop_reason=result.stop_reason,
        method=result.method,
        horizon=int(horizon),
        frameskip=engine.frameskip,
        seed=int(result.seed),
        warm_start=job.init_mean is not None,
        subgoal=done.subgoal,
        timing_ms={
            "decode": round((decoded_at - received_at) * ms, 3),
            "encode": round(done.encode_s * ms, 3),
            "plan": round(done.plan_s * ms, 3),
            "total": round((time.monotonic() - received_at) * ms, 3),
        },
        warnings=[{"code": n.code, "message": n.message, "field": n.field} for n in notices],
    )
