"""What one server process holds: settings, the engine once loaded, sessions, metrics.

The model loads in the background after the server starts listening, so
``/health`` answers 503 ``loading`` meanwhile (an orchestrator can tell
"starting" from "dead"). A model that fails to load is fatal: the status
turns ``failed`` and ``on_fatal`` asks the process to stop, rather than serve
something other than the requested model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from planning import CEMConfig, MPCSession
from server.engine import Engine
from server.metrics import Metrics
from server.sessions import SessionStore
from server.settings import Settings

log = logging.getLogger(__name__)
Status = Literal["loading", "ok", "failed"]


@dataclass
class PlanState:
    """A session's planning state: its goal, its CEM config and its last plan."""

    mpc: MPCSession
    config: CEMConfig
    goal: object  # the goal Latent on the model's device


class Runtime:
    """Shared by every request; lives on ``app.state.runtime``."""

    def __init__(
        self,
        settings: Settings,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.sessions: SessionStore[PlanState] = SessionStore(
            settings.max_sessions, settings.session_ttl_s
        )
        self.engine: Engine | None = None
        self.status: Status = "loading"
        self.error: str | None = None
        self._on_fatal = on_fatal

    async def load(self) -> None:
        """Load (and warm up) the engine off the event loop; fatal on failure."""
        try:
            engine = await asyncio.to_thread(Engine.load, self.settings)
            if self.settings.warmup:
                await engine.run(engine.warm_up)
        except Exception as exc:  # any failure to load is fatal, reported once here
            self.status = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.error)
            if self._on_fatal is not None:
                self._on_fatal(exc)
            return
        loop = asyncio.get_running_loop()
        metrics = self.metrics
        # Batches are planned on the worker thread; metrics live on the event loop.
        engine.batcher.on_batch = lambda size: loop.call_soon_threadsafe(metrics.record_batch, size)
        self.engine = engine
        self.status = "ok"
        log.info("ready")

    async def sweep_sessions(self) -> None:
        """Expire idle sessions in the background, so their latents are freed without traffic."""
        interval = min(30.0, max(0.05, self.settings.session_ttl_s / 4))
        while True:
            await asyncio.sleep(interval)
            expired = self.sessions.sweep()
            if expired:
                log.info("expired %d idle sessions", expired)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
