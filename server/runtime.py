"""What one server process holds: settings, the engine, its scheduler and the
planning service once loaded, sessions, metrics, and the decode budget.

The model loads in the background after the server starts listening, so
``/health`` answers 503 ``loading`` meanwhile (an orchestrator can tell
"starting" from "dead"). A model that fails to load is fatal: the status
turns ``failed`` and ``on_fatal`` asks the process to stop, rather than serve
something other than the requested model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Literal

from server.decoding import DecodeBudget, Decoder
from server.engine import Engine, resolve_device
from server.errors import ApiError
from server.metrics import Metrics
from server.planner import PlannerLimits
from server.scheduler import Scheduler
from server.service import PlanningService
from server.sessions import SessionStore
from server.settings import Settings
from server.tokens import GoalCache, TokenCodec

log = logging.getLogger(__name__)
Status = Literal["loading", "ok", "failed"]


class Runtime:
    """Shared by every request; lives on ``app.state.runtime``."""

    def __init__(self, settings: Settings, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.sessions = SessionStore(settings.max_sessions, settings.session_ttl_s)
        self.decode_budget = DecodeBudget(int(settings.max_decode_mb * 2**20))
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None
        self.service: PlanningService | None = None
        self.goals = GoalCache(settings.goal_cache_size)
        self.replica = settings.replica_name or f"{socket.gethostname()}:{os.getpid()}"
        self.limits = PlannerLimits(settings.limits())
        self.base_gflop = 0.0
        self.status: Status = "loading"
        self.error: str | None = None
        self._on_fatal = on_fatal

    def ready_service(self) -> PlanningService:
        """The planning service, or 503 while the model loads (or after it failed to)."""
        if self.service is None:
            if self.status == "failed":
                raise ApiError(503, "server.failed", f"the model failed to load: {self.error}")
            raise ApiError(503, "server.loading", "the model is still loading; retry when GET /health answers 200",
                           headers={"Retry-After": "1"})
        return self.service

    async def load(self) -> None:
        """Load (and warm up) the engine off the event loop; fatal on failure."""
        s = self.settings
        try:
            device = resolve_device(s.device)
            engine = await asyncio.to_thread(
                Engine.load, s.model, str(device), s.resolved_threads(device.type),
                s.planner.model_dump(exclude_none=True), s.dtype, s.compile, s.subgoals)
            self.base_gflop = engine.plan_gflop(engine.base_config)
            self.limits = PlannerLimits(s.limits(), max_plan_gflop=s.max_plan_cost * self.base_gflop)
            self.limits.check(engine.base_config, {})
            if s.warmup:
                await asyncio.to_thread(engine.warm_up)
        except Exception as exc:  # any failure to load is fatal, reported once here
            self.status = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.error)
            if self._on_fatal is not None:
                self._on_fatal(exc)
            return
        secret = s.token_secret.get_secret_value() if s.token_secret is not None else None
        tokens = TokenCodec(engine.model_id, secret, s.max_mpc_state_bytes, s.mpc_state_ttl_s,
                            engine.base_config, self.limits)
        self.scheduler = Scheduler(
            engine, max_batch=s.micro_batch_max if s.micro_batch else 1, batch_wait_s=s.micro_batch_wait_ms / 1000,
            max_queued_gflop=s.max_queued_cost * self.base_gflop, max_running=s.max_running_batches,
            starvation_s=s.starvation_s)
        info = engine.info
        decoder = Decoder(self.decode_budget, info.image_size, s.max_image_pixels, s.resize_policy)
        self.service = PlanningService(self.scheduler, info, engine.base_config, self.limits, self.base_gflop,
                                       self.sessions, tokens, self.goals, decoder, self.replica)
        self.engine = engine
        self.status = "ok"
        log.info("ready: a default plan is %.4g GFLOP; per-request limit %.4g GFLOP, queue budget %.4g GFLOP",
                 self.base_gflop, self.limits.max_plan_gflop, s.max_queued_cost * self.base_gflop)

    async def sweep_sessions(self) -> None:
        """Expire idle sessions in the background, so their latents are freed without traffic."""
        interval = min(30.0, max(0.05, self.settings.session_ttl_s / 4))
        while True:
            await asyncio.sleep(interval)
            expired = self.sessions.sweep()
            if expired:
                log.info("expired %d idle sessions", expired)

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
