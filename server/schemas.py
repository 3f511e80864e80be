"""Request and response bodies: what the server accepts and returns.

These models are the wire contract and the source of ``/openapi.json``.
Every model forbids unknown fields, so a misspelt option is a 422, never
silently ignored. Bodies arrive as JSON or msgpack; the same models validate
both (image bytes are base64 text in JSON and raw bytes in msgpack).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

from planning import PlannerConfig, StopReason
from planning.config import legacy_names
from planning.settings import choices_of
from server.images import SUPPORTED_DTYPES

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _bytes_or_base64(value: Any) -> Any:
    """msgpack carries bytes as they are; JSON carries them as base64 text."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PydanticCustomError(
                "bad_base64", "data is not valid base64 ({reason})", {"reason": str(exc)}
            ) from None
    return value


ImageBytes = Annotated[
    bytes,
    BeforeValidator(_bytes_or_base64),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "description": "base64 text in JSON bodies; a bin value in msgpack bodies",
        }
    ),
]


class Image(_Strict):
    """One camera frame: an encoded PNG/JPEG file or a raw array."""

    format: Literal["png", "jpeg", "raw"] = Field(
        description="png and jpeg are files; raw is an array described by shape and dtype"
    )
    data: ImageBytes
    shape: list[int] | None = Field(
        default=None,
        max_length=8,
        description="raw only: (H, W, C) or (C, H, W) with C in {3, 4}",
        examples=[[64, 64, 3]],
    )
    dtype: str | None = Field(
        default=None,
        description="raw only, little-endian: uint8 in [0, 255] or float in [0, 1]",
        json_schema_extra={"enum": list(SUPPORTED_DTYPES)},
    )
    color_order: Literal["rgb", "bgr"] = Field(
        default="rgb", description="channel order of the pixels as sent (OpenCV gives bgr)"
    )
    layout: Literal["hwc", "chw"] | None = Field(
        default=None,
        description="raw only: declare when the shape reads both ways, e.g. (3, 4, 3)",
    )


Int = Annotated[int, Strict()]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # ints accepted; bools, strings, NaN, Inf not
Bool = Annotated[bool, Strict()]  # true/false only, not 0/1 or "yes"


def _wire_type(f: dataclasses.Field) -> Any:
    m = f.metadata
    return {"int": Int, "float": Number, "bool": Bool}.get(m["kind"]) or Literal[choices_of(f)]  # type: ignore[index]


def _wire_bounds(f: dataclasses.Field) -> dict[str, Any]:
    """What a value may be, for the schema only: the planner's own checks and the server's limits
    enforce it (with their error codes); the operator's limits are filled in by the app."""
    m, out = f.metadata, {}
    if m["ge"] is not None:
        out["minimum"] = m["ge"]
    if m["gt"] is not None:
        out["exclusiveMinimum"] = m["gt"]
    maxima = [v for v in (m["le"], m["limit"]) if isinstance(v, (int, float))]
    if maxima:
        out["maximum"] = min(maxima)
    return out


def _wire_field(f: dataclasses.Field, description: str, **extra: Any) -> tuple[Any, Any]:
    return (_wire_type(f) | None, Field(default=None, description=description,
                                        json_schema_extra={**_wire_bounds(f), **extra} or None))


def section_schema_name(section: str) -> str:
    """The schema name of a solver's settings mapping: "icem_gradient" -> "IcemGradientSettings"."""
    return f"{section.title().replace('_', '')}Settings"


def _planner_overrides() -> type[BaseModel]:
    """The wire form of `planning.PlannerConfig`, derived from its declarations: the driver's
    settings, one optional mapping per solver, and the previous release's flat names (deprecated)."""
    sections: dict[str, dict[str, Any]] = {}
    driver: dict[str, Any] = {}
    declared = dict(PlannerConfig.declared())
    for path, f in declared.items():
        if not f.metadata["wire"]:
            continue
        section, _, name = path.rpartition(".")
        (sections.setdefault(section, {}) if section else driver)[name] = _wire_field(f, f.metadata["doc"])
    for section, fields in sections.items():
        model = create_model(section_schema_name(section), __base__=_Strict,
                             __doc__=f"Settings of the {section} solver; unset fields keep the server's defaults.",
                             **fields)
        driver[section] = (model | None, Field(default=None, description=f"settings of the {section} solver"))
    for old, paths in legacy_names().items():
        driver[old] = _wire_field(declared[paths[0]], f"deprecated: sets {', '.join(paths)}", deprecated=True)
    return create_model("PlannerOverrides", __base__=_Strict, __doc__=_PLANNER_DOC, **driver)


_PLANNER_DOC = """Planner settings for one plan; unset fields keep the server's defaults.

The driver's settings at the top level, each solver's in its own mapping
(``{"method": "icem", "icem": {"samples": 150}}``). Only the types are checked
here; the planner's config checks the values (e.g. elites <= samples) and the
server's limits bound every numeric field and the plan's cost (see /stats
``limits``). docs/planning.md describes each solver and its settings.
"""

PlannerOverrides = _planner_overrides()


Proprio = Annotated[
    list[Number],
    Field(max_length=4096, description="proprioception in raw env units, length proprio_dim"),
]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**63 - 1, description="same seed + inputs -> same plan")]
DeadlineMs = Annotated[
    float,
    Strict(),
    Field(gt=0, le=3_600_000, allow_inf_nan=False, description="time budget from arrival; CEM stops early to meet it"),
]
SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]
PendingActions = Annotated[
    list[Annotated[list[Number], Field(max_length=64)]],
    Field(max_length=4096, description=(
        "latency compensation: the env actions the robot will execute after this frame and before the "
        "plan takes effect, one row of raw_action_dim values per env step, in raw env units; a whole "
        "number of model steps (a multiple of frameskip), at most horizon * frameskip rows. The server "
        "rolls the model through them and plans from the predicted state: the reply's actions start "
        "where these end")),
]


class PlanRequest(_Strict):
    """Plan from a frame towards a goal frame; starts (or restarts) a session cold."""

    obs: Image
    goal: Image
    proprio: Proprio | None = None
    goal_proprio: Proprio | None = None
    session_id: SessionId | None = Field(
        default=None, description="reuse an id to restart that session; omitted: a new id"
    )
    pending_actions: PendingActions | None = None
    seed: Seed | None = None
    deadline_ms: DeadlineMs | None = None
    planner: PlannerOverrides | None = None


class ReplanRequest(_Strict):
    """Plan again from a new frame, warm-started from the last plan: the session's
    (``session_id``) or the one in a token (``mpc_state``, stateless: any replica).
    Exactly one of the two."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["session_id"], "properties": {"session_id": {"type": "string"}, "mpc_state": {"type": "null"}}},
        {"required": ["mpc_state"], "properties": {"mpc_state": {"type": "string"}, "session_id": {"type": "null"}}},
    ]})

    session_id: SessionId | None = Field(default=None, description="the session to replan; or send mpc_state")
    mpc_state: str | None = Field(
        default=None, max_length=1 << 20,
        description="the token from the last response, instead of session_id: any replica can serve it")
    goal: Image | None = Field(
        default=None, description="with mpc_state only: the episode's goal frame, for a replica that does not "
        "hold its latent (409 mpc_state.goal_unknown); must be the goal the token was made for")
    goal_proprio: Proprio | None = None
    obs: Image
    proprio: Proprio | None = None
    executed_steps: Int = Field(
        default=1, ge=0, description="model steps of the last plan executed since it came"
    )
    pending_actions: PendingActions | None = None
    seed: Seed | None = None
    deadline_ms: DeadlineMs | None = None


class PlanWarning(_Strict):
    """A change the server made to the input, e.g. a resize."""

    code: str
    message: str
    field: str | None = None


class Timing(_Strict):
    """Server-side milliseconds: decode (body and images), encode, plan, total."""

    decode: float
    encode: float
    plan: float
    total: float


class SubgoalInfo(_Strict):
    """What a plan with ``planner.subgoals`` aimed at."""

    used: bool = Field(description="true: planned towards a graph node on the way; false: the goal itself "
                       "(it is within planner.subgoal_hops along the graph, or the graph has no path)")
    path_steps: float | None = Field(description="model steps from the current frame to the goal along the graph "
                              "(transitions count 1, merges of near-identical states less); null: the graph has no path")


class PlanResponse(_Strict):
    """A plan in raw env units, with how it was found."""

    session_id: str | None = Field(description="the session, or null for a stateless replan")
    mpc_state: str = Field(description="token for the next replan (instead of session_id, on any replica)")
    served_by: str = Field(description="the replica (process) that made this plan")
    actions: list[list[float]] = Field(
        description="(horizon * frameskip, raw_action_dim): one row per env step"
    )
    model_actions: list[list[float]] = Field(
        description="(horizon, frameskip * raw_action_dim): the same actions, one row per "
        "model step (frameskip env actions concatenated)"
    )
    loss: float
    loss_trace: list[float] = Field(description="best elite loss after each iteration")
    iterations: int
    stop_reason: StopReason
    method: str = Field(description="the solver that made the plan")
    horizon: int
    frameskip: int
    seed: int = Field(description="the seed used (drawn at random when none was sent)")
    warm_start: bool = Field(description="whether the solver started from the episode's last plan")
    pending_steps: int = Field(default=0, description="model steps of pending_actions the model was rolled "
                               "through before planning (0: planned from the frame itself)")
    rollouts: int = Field(description="action sequences scored by a forward rollout (the plan's cost)")
    grad_rollouts: int = Field(description="action sequences scored with a backward pass (gradient solvers)")
    subgoal: SubgoalInfo | None = Field(default=None, description="null unless planner.subgoals was on")
    timing_ms: Timing
    warnings: list[PlanWarning]


class ErrorDetail(_Strict):
    code: str = Field(examples=["image.float_out_of_range"])
    message: str
    field: str | None = None


class ErrorBody(_Strict):
    """Every error response has this body."""

    error: ErrorDetail


class HealthResponse(_Strict):
    status: Literal["ok", "loading", "failed"]
    replica: str | None = Field(default=None, description="this process (the served_by of its plans)")
    pid: int | None = Field(default=None, description="this process's id on its host")
    model: dict[str, Any] | None = None
    device: str | None = None
    eval_mode: bool | None = None
    error: str | None = None


class LatencySummary(_Strict):
    count: int
    p50: float | None
    p95: float | None
    p99: float | None


class PlannerStats(_Strict):
    plans: int
    mean_iterations: float | None
    by_method: dict[str, dict[str, float | int | None]] = Field(
        default_factory=dict, description="plans and mean iterations per solver")
    early_stop_rate: float | None = Field(
        description="fraction of plans stopped early by the loss criterion (converged)"
    )
    stop_reasons: dict[str, int]
    batches: int = Field(description="planner calls (micro-batches) made")
    mean_batch_requests: float | None = Field(
        description="requests planned together per call, on average (1 without micro-batching)"
    )
    subgoals: dict[str, int] = Field(
        default_factory=dict, description="plans with planner.subgoals on, and how many of them aimed at a "
        "graph node rather than the goal itself")


class SessionStats(_Strict):
    active: int
    max: int
    ttl_s: float
    created: int
    evicted: int
    expired: int
    deleted: int


class StatsResponse(_Strict):
    uptime_s: float
    status: Literal["ok", "loading", "failed"]
    requests: dict[str, int] = Field(description="by endpoint, e.g. 'POST /plan'")
    errors: dict[str, dict[str, int]] = Field(description="by endpoint, then by error code")
    errors_by_code: dict[str, int]
    latency_ms: dict[str, LatencySummary] = Field(
        description="total server time of successful plans, by endpoint"
    )
    planner: PlannerStats
    queue: dict[str, Any] = Field(
        description="the scheduler: jobs pending and running, outstanding GFLOPs against the budget, "
        "queue wait, jobs dropped (client left, deadline, shutdown), requests refused as overloaded")
    decode: dict[str, Any] = Field(description="decoded frame bytes in flight, their peak and budget")
    goal_cache: dict[str, int] = Field(description="goal latents held for stateless replans: size, capacity, hits, "
                                       "misses (a miss asks the client for the goal)")
    sessions: SessionStats
    device: dict[str, Any]
    model: dict[str, Any] | None
    planner_defaults: dict[str, Any] | None
    limits: dict[str, Any]
