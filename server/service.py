"""Plan and replan: validated request in, plan in raw env units out.

The order of work is chosen so that cheap checks fail first: planner
overrides and proprio before images, images before the session lock, and
only then the model, on its worker thread, as one job that encodes the
frames and plans (micro-batched with other sessions, server/batcher.py). Requests on one session hold its
lock from reading the last plan to recording the next.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from planning import CEMConfig, MPCSession
from server.batcher import Planned, Prepared
from server.engine import Engine
from server.errors import ApiError
from server.images import DecodedImage, Notice, check_size, decode_image
from server.runtime import PlanState, Runtime
from server.schemas import Image, PlannerOverrides, PlanRequest, PlanResponse, ReplanRequest
from server.settings import Settings

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INLINE_RAW_BYTES = 4 * 2**20  # raw uint8 frames up to 4 MiB (1024x1024 RGB) decode on the event loop


async def plan(
    runtime: Runtime, engine: Engine, body: PlanRequest, received_at: float
) -> PlanResponse:
    """Encode obs and goal, plan cold, and (re)start the session with this goal."""
    settings = runtime.settings
    config = build_config(engine.base_config, body.planner, settings.limits())
    proprio = check_proprio(body.proprio, "proprio", engine.proprio_dim)
    goal_proprio = check_proprio(body.goal_proprio, "goal_proprio", engine.proprio_dim)
    obs = await _decode(body.obs, "obs", settings, engine.image_size)
    goal = await _decode(body.goal, "goal", settings, engine.image_size)
    decoded_at = time.monotonic()
    deadline = _deadline(received_at, body.deadline_ms)

    def prepare() -> Prepared:
        return Prepared(engine.encode(obs.pixels, proprio), engine.encode(goal.pixels, goal_proprio), None)

    session_id = body.session_id or uuid.uuid4().hex
    session, created = runtime.sessions.get_or_create(session_id)
    try:
        async with session.lock:
            done = await engine.plan_queued(prepare, config, body.seed, deadline)
            z_goal = done.prepared.z_goal
            state = PlanState(MPCSession(goal=z_goal, config=config), config, z_goal)
            state.mpc.record(done.result)
            session.state = state
    except BaseException:
        if created:
            runtime.sessions.discard(session)
        raise
    return _response(engine, session_id, done, obs.warnings + goal.warnings, received_at, decoded_at)


async def replan(
    runtime: Runtime, engine: Engine, body: ReplanRequest, received_at: float
) -> PlanResponse:
    """Plan from a new frame, warm-started from the session's last plan shifted by the steps executed."""
    settings = runtime.settings
    session = runtime.sessions.get(body.session_id)
    proprio = check_proprio(body.proprio, "proprio", engine.proprio_dim)
    obs = await _decode(body.obs, "obs", settings, engine.image_size)
    decoded_at = time.monotonic()
    deadline = _deadline(received_at, body.deadline_ms)

    async with session.lock:
        state = session.state
        assert state is not None  # SessionStore.get returns planned sessions only
        horizon = state.config.horizon
        if body.executed_steps > horizon:
            raise ApiError(
                422,
                "replan.executed_steps_out_of_range",
                f"executed_steps={body.executed_steps} but the session's plan has only "
                f"{horizon} model steps; send 0..{horizon}, or POST /plan to start over.",
                "executed_steps",
            )

        def prepare() -> Prepared:
            init_mean = state.mpc.init_mean(body.executed_steps)
            return Prepared(engine.encode(obs.pixels, proprio), state.goal, init_mean)

        done = await engine.plan_queued(prepare, state.config, body.seed, deadline)
        state.mpc.record(done.result)
    return _response(engine, body.session_id, done, obs.warnings, received_at, decoded_at)


def build_config(
    base: CEMConfig, overrides: PlannerOverrides | None, limits: dict[str, int | float]
) -> CEMConfig:
    """The server's defaults with a request's overrides, within the server's limits."""
    if overrides is None:
        return base
    values: dict[str, Any] = overrides.model_dump(exclude_none=True)
    for name, limit in limits.items():
        if name in values and values[name] > limit:
            raise ApiError(
                422,
                "planner.out_of_bounds",
                f"planner.{name}={values[name]} exceeds this server's limit of {limit}; "
                f"send at most {limit}.",
                f"planner.{name}",
            )
    try:
        return dataclasses.replace(base, **values)
    except ValueError as exc:  # CEMConfig.__post_init__ names the bad value
        raise ApiError(422, "planner.invalid", f"planner: {exc}", "planner") from None


def check_proprio(values: list[float] | None, field: str, dim: int) -> np.ndarray | None:
    """Proprio as float32 (dim,), or None for a model without proprio."""
    if dim == 0:
        if values:
            raise ApiError(
                422, "proprio.wrong_length",
                f"{field} has {len(values)} values but this model takes no proprio; omit it.",
                field,
            )
        return None
    if values is None:
        raise ApiError(
            422, "proprio.missing",
            f"{field} is required: this model takes {dim} proprio values in raw env units.",
            field,
        )
    if len(values) != dim:
        raise ApiError(
            422, "proprio.wrong_length",
            f"{field} has {len(values)} values but this model takes {dim}.",
            field,
        )
    wide = np.asarray(values, dtype=np.float64)
    # Finite in float64 but beyond float32 would become inf on the model.
    bad = [i for i, v in enumerate(wide) if not (np.isfinite(v) and abs(v) <= _FLOAT32_MAX)]
    if bad:
        raise ApiError(
            422, "proprio.non_finite",
            f"{field} has non-finite values (NaN, Inf, or beyond float32) at {bad}; "
            "send finite numbers in raw env units.",
            field,
        )
    arr = wide.astype(np.float32)
    return arr


async def _decode(image: Image, field: str, settings: Settings, image_size: int) -> DecodedImage:
    """Decode and apply the resize policy. Files (a large PNG takes tens of ms) and
    float arrays (converted per pixel) decode off the event loop; a raw uint8 frame
    is a checked view of its bytes (~20 us for 224x224), cheaper than the thread hop."""
    args = (image.format, image.data)
    kwargs = dict(field=field, max_pixels=settings.max_image_pixels, shape=image.shape, dtype=image.dtype,
                  color_order=image.color_order, layout=image.layout)
    if image.format == "raw" and image.dtype == "uint8" and len(image.data) <= _INLINE_RAW_BYTES:
        decoded = decode_image(*args, **kwargs)  # type: ignore[arg-type]
    else:
        decoded = await run_in_threadpool(decode_image, *args, **kwargs)
    notices = check_size(decoded, image_size, settings.resize_policy, field)
    return DecodedImage(decoded.pixels, decoded.warnings + notices)


def _deadline(received_at: float, deadline_ms: float | None) -> float | None:
    return None if deadline_ms is None else received_at + deadline_ms / 1000.0


def _response(
    engine: Engine,
    session_id: str,
    done: Planned,
    warnings: list[Notice],
    received_at: float,
    decoded_at: float,
) -> PlanResponse:
    """Shape the plan for the client: env steps and model steps, in raw units."""
    result, actions = done.result, done.actions
    warm = done.prepared.init_mean is not None
    if not np.isfinite(actions).all():
        raise ApiError(
            500, "plan.non_finite",
            "the planner produced non-finite actions; the model or its statistics are broken",
        )
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
        warm_start=warm,
        timing_ms={
            "decode": round((decoded_at - received_at) * ms, 3),
            "encode": round(done.encode_s * ms, 3),
            "plan": round(done.plan_s * ms, 3),
            "total": round((time.monotonic() - received_at) * ms, 3),
        },
        warnings=[{"code": n.code, "message": n.message, "field": n.field} for n in warnings],
    )
