"""Request and response bodies: what the server accepts and returns.

These models are the wire contract and the source of ``/openapi.json``.
Every model forbids unknown fields, so a misspelt option is a 422, never
silently ignored. Bodies arrive as JSON or msgpack; the same models validate
both (image bytes are base64 text in JSON and raw bytes in msgpack).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema
from pydantic_core import PydanticCustomError

from server.images import SUPPORTED_DTYPES

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
StopReason = Literal["converged", "max_iterations", "deadline", "cancelled"]


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


class PlannerOverrides(_Strict):
    """Planner settings for one plan; unset fields keep the server's defaults.

    Only the types are checked here; the planner's config checks the values
    (e.g. topk <= num_samples) and the server's limits bound every numeric
    field and the plan's cost (see /stats ``limits``). docs/planning.md
    describes each solver and its settings.
    """

    method: Literal["cem", "icem", "mppi", "gradient", "cem_gradient", "icem_gradient"] | None = Field(
        default=None, description="the solver (default: the server's, usually the model's recommendation)")
    horizon: Int | None = Field(default=None, description="model steps planned (>= 1)")
    num_samples: Int | None = Field(default=None, description="samples per iteration (>= 1)")
    topk: Int | None = Field(default=None, description="elites refitting the Gaussian (1..num_samples)")
    opt_steps: Int | None = Field(default=None, description="maximum iterations (>= 1)")
    var_scale: Number | None = Field(default=None, description="initial sigma (> 0)")
    objective: Literal["last", "all"] | None = Field(
        default=None, description="compare the goal with the last predicted step, or all"
    )
    alpha: Number | None = Field(default=None, description="weight of the proprio loss (>= 0)")
    min_iterations: Int | None = Field(default=None, description="iterations before early stopping (>= 0)")
    patience: Int | None = Field(default=None, description="window of the early-stop rule (>= 1)")
    min_improvement: Number | None = Field(
        default=None, description="relative loss improvement that counts as progress (>= 0)"
    )
    elite_std: Literal["biased", "unbiased"] | None = Field(default=None, description="CEM/iCEM sigma refit")
    icem_beta: Number | None = Field(default=None, description="iCEM colored-noise exponent (>= 0)")
    icem_keep_elites: Number | None = Field(default=None, description="iCEM fraction of elites kept (0..1)")
    icem_decay: Number | None = Field(default=None, description="iCEM population decay per iteration (>= 1)")
    mppi_temperature: Number | None = Field(default=None, description="MPPI temperature (> 0)")
    grad_lr: Number | None = Field(default=None, description="gradient solvers' Adam step size (> 0)")
    grad_starts: Int | None = Field(default=None, description="sequences refined in parallel by gradient (>= 1)")
    grad_iterations: Int | None = Field(
        default=None, description="composite methods: last iterations spent on gradient steps (< opt_steps)")
    subgoals: Bool | None = Field(
        default=None, description="plan towards a subgoal on the shortest path through the server's latent "
        "subgoal graph while the goal is far (needs a graph: /health model.subgoals; docs/planning.md)")
    subgoal_hops: Int | None = Field(
        default=None, description="model steps along the graph's path to the subgoal (>= 1)")


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


class PlanRequest(_Strict):
    """Plan from a frame towards a goal frame; starts (or restarts) a session cold."""

    obs: Image
    goal: Image
    proprio: Proprio | None = None
    goal_proprio: Proprio | None = None
    session_id: SessionId | None = Field(
        default=None, description="reuse an id to restart that session; omitted: a new id"
    )
    seed: Seed | None = None
    deadline_ms: DeadlineMs | None = None
    planner: PlannerOverrides | None = None


class ReplanRequest(_Strict):
    """Plan again from a new frame, warm-started from the last plan: the session's
    (``session_id``) or the one in a token (``mpc_state``, stateless: any replica)."""

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
    warm_start: bool = Field(description="whether CEM started from the session's last plan")
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
