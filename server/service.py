"""Plan and replan: a validated request becomes a job; its answer becomes a response.

The order of work is chosen so that cheap checks fail first: planner
overrides, cost and proprio before images, images before the session lock.
Then the request is one job for the scheduler (server/scheduler.py), which
encodes and plans it with whatever it batches it with and returns the plan
as a value. Requests on one session hold its lock from reading the last plan
to recording the next.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from planning import MPCSession
from server import planner
from server.decoding import decode
from server.engine import PlanInput, PlanOutput
from server.errors import ApiError
from server.images import Notice
from server.runtime import Runtime
from server.schemas import PlannerOverrides, PlanRequest, PlanResponse, ReplanRequest

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
    del obs, goal  # only the job holds the pixels now

    session_id = body.session_id or uuid.uuid4().hex
    session, created = runtime.sessions.get_or_create(session_id)
    try:
        async with session.lock:
            done = await runtime.scheduler.submit(job, gflop)
            mpc = MPCSession(goal=done.goal_latent, config=config)
            mpc.record(done.result)
            session.state = mpc
    except BaseException:
        if created:
            runtime.sessions.discard(session)
        raise
    return _response(runtime, session_id, done, job, received_at, decoded_at, notices)


async def replan(runtime: Runtime, body: ReplanRequest, received_at: float) -> PlanResponse:
    """Plan from a new frame, warm-started from the session's last plan shifted by the steps executed."""
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
                        init_mean=mpc.init_mean(body.executed_steps), seed=body.seed,
                        deadline=_deadline(received_at, body.deadline_ms))
        done = await runtime.scheduler.submit(job, engine.plan_gflop(mpc.config))
        mpc.record(done.result)
    return _response(runtime, body.session_id, done, job, received_at, decoded_at, obs.warnings)


def _config(runtime: Runtime, overrides: PlannerOverrides | None):  # noqa: ANN202 - (CEMConfig, float)
    engine = runtime.ready_engine()
    values = overrides.model_dump(exclude_none=True) if overrides is not None else {}
    config = planner.resolve(engine.base_config, values, runtime.limits)
    gflop = engine.plan_gflop(config)
    planner.check_cost(config, gflop, engine.base_config, runtime.base_gflop, runtime.limits)
    return config, gflop


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


def _response(runtime: Runtime, session_id: str, done: PlanOutput, job: PlanInput, received_at: float,
              decoded_at: float, notices: list[Notice]) -> PlanResponse:
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
    return PlanResponse(
        session_id=session_id,
        actions=actions.tolist(),
        model_actions=model_actions.tolist(),
        loss=float(result.loss),
        loss_trace=[float(x) for x in result.loss_trace],
        iterations=int(result.iterations),
        stop_reason=result.stop_reason,
        horizon=int(horizon),
        frameskip=engine.frameskip,
        seed=int(result.seed),
        warm_start=job.init_mean is not None,
        timing_ms={
            "decode": round((decoded_at - received_at) * ms, 3),
            "encode": round(done.encode_s * ms, 3),
            "plan": round(done.plan_s * ms, 3),
            "total": round((time.monotonic() - received_at) * ms, 3),
        },
        warnings=[{"code": n.code, "message": n.message, "field": n.field} for n in notices],
    )
