"""The server's one settings class: command-line flags over ``WM_*`` env vars.

``python -m server --help`` lists every field as a flag (``--max-sessions``);
each also reads from the environment (``WM_MAX_SESSIONS``). Flags win over
environment variables, which win over the defaults below. Nested planner
defaults take JSON or dotted flags: ``WM_PLANNER='{"icem": {"samples": 100}}'`` or
``--planner.icem.samples 100``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict, SettingsError

from planning import PlannerConfig
from planning.config import paths_of
from server.schemas import PlannerOverrides

# Pillow warns above ~89.5M pixels and refuses twice that; the server's own
# limit must sit below Pillow's so that the server's error is the one seen.
_PIL_DEFAULT_MAX_PIXELS = 89_478_485


class Settings(BaseSettings):
    """Everything an operator can set. Invariants are checked here, at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="WM_",
        extra="forbid",
        cli_prog_name="python -m server",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    model: Path | None = Field(
        default=None,
        description="model artifact; unset: the project's shipped default model",
    )
    subgoals: str = Field(
        default="auto",
        description="latent subgoal graph for far goals (docs/planning.md): 'auto' loads <model>.subgoals.pt "
        "beside the model when it exists, 'off' none, else this file; requests use it with planner.subgoals=true "
        "(--planner.subgoals true makes that the default)")
    host: str = Field(
        default="127.0.0.1",
        description="bind address; localhost unless deliberately exposed (0.0.0.0 in Docker)",
    )
    port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port")
    device: str = Field(default="auto", description="auto (cuda if available), cpu, cuda, cuda:N")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="precision the encoder and predictor compute in (autocast; weights and outputs stay fp32); "
        "bf16/fp16 only where the device computes them (docs/gpu.md): refused at start-up otherwise")
    compile: bool = Field(
        default=False,
        description="torch.compile the rollout at load (minutes on a CPU; falls back to eager with a warning)")
    api_key: SecretStr | None = Field(
        default=None,
        description="when set, every endpoint but /health needs 'Authorization: Bearer KEY'; "
        "prefer WM_API_KEY to the flag, which shows up in `ps`",
    )
    max_body_bytes: int = Field(
        default=16 * 2**20, ge=1024, description="larger request bodies get 413 unread"
    )
    max_image_pixels: int = Field(
        default=4096 * 4096,
        ge=1,
        le=_PIL_DEFAULT_MAX_PIXELS,
        description="frames over H*W pixels are refused before decompression",
    )
    resize_policy: Literal["resize", "reject"] = Field(
        default="resize",
        description="frames of another size: resize with the model's transform, or refuse",
    )
    max_sessions: int = Field(default=256, ge=1, description="past it the LRU session is evicted")
    session_ttl_s: float = Field(default=600.0, gt=0, description="idle sessions expire after it")
    planner: PlannerOverrides = Field(
        default_factory=PlannerOverrides,
        description="default planner settings over the planner's preset (paper defaults on GPU, the CPU preset "
        "on CPU) and the model's recommendation; the same fields as a request's planner",
    )
    max_horizon: int = Field(default=32, ge=1, description="bound on planner.horizon")
    max_num_samples: int = Field(
        default=4096, ge=1, description="bound on every solver's samples (and elites, gradient starts)")
    max_opt_steps: int = Field(
        default=100, ge=1, description="bound on planner.max_iterations (and min_iterations, patience, "
        "gradient_iterations)")
    max_var_scale: float = Field(default=10.0, gt=0, description="bound on every solver's sigma (and min_sigma)")
    max_alpha: float = Field(default=1e4, gt=0, description="bound on planner.alpha")
    max_plan_cost: float = Field(
        default=60.0, gt=0,
        description="most a single plan may cost, in multiples of the server's default plan (analytic "
        "GFLOPs: samples x iterations x rollout); dearer requests get 422 planner.too_expensive. 60 x the CPU "
        "preset (CEM 64 x 10) admits the paper settings (14x) and plans up to ~38,000 sample rollouts")
    max_queued_cost: float = Field(
        default=200.0, gt=0,
        description="work queued or running beyond this many default plans is refused with 503 "
        "server.overloaded and Retry-After, instead of waiting minutes")
    max_running_batches: int = Field(
        default=4, ge=1,
        description="batches planned at once, interleaved iteration by iteration (least work left first)")
    starvation_s: float = Field(
        default=2.0, gt=0, description="a running batch waits at most this long for its next iteration")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="intra-op CPU threads for the model; unset: one per two cores on CPU (spinning "
        "threads stall each other on a shared box; see docs/benchmarks.md), torch's default on GPU",
    )
    micro_batch: bool = Field(
        default=True,
        description="plan concurrent requests with equal planner settings together, in one "
        "batched CEM call (each gets the plan it would get alone)",
    )
    micro_batch_max: int = Field(
        default=16, ge=1, description="most requests in one micro-batch"
    )
    micro_batch_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="an idle model thread waits this long for more requests before planning a "
        "new arrival, so that sessions returning together are batched together",
    )
    max_decode_mb: float = Field(
        default=256.0, gt=0,
        description="decoded frame bytes in flight across requests; more waits for its turn")
    max_connections: int = Field(
        default=512, ge=1, description="concurrent connections and requests; more get 503 at once")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a connection must send its request headers within this time")
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="a request must send its whole body within this time (408)")
    keep_alive_s: float = Field(default=5.0, gt=0, description="idle keep-alive connections close after it")
    shutdown_grace_s: float = Field(
        default=10.0, ge=0,
        description="on SIGTERM, in-flight plans get this long to finish before they are cancelled")
    token_secret: SecretStr | None = Field(
        default=None,
        description="key for the mpc_state tokens' signatures (the same on every replica); unset, tokens are "
        "bound to the model and checked for corruption, but anyone with the model file could forge one")
    max_mpc_state_bytes: int = Field(default=65536, ge=256, description="longest mpc_state token accepted")
    mpc_state_ttl_s: float = Field(
        default=86400.0, ge=0, description="mpc_state tokens older than this are refused (0: never expire)")
    goal_cache_size: int = Field(
        default=1024, ge=1, description="goal latents kept per process for stateless replans (LRU)")
    replica_name: str | None = Field(
        default=None, description="names this process in every response's served_by; unset: host:pid")
    warmup: bool = Field(
        default=True, description="run one short plan after loading, before reporting ready"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Settings:
        try:
            config = PlannerConfig().updated(self.planner.model_dump(exclude_none=True))
        except ValueError as exc:
            raise ValueError(f"planner.{exc}") from None
        sent = paths_of(self.planner.model_dump(exclude_none=True))
        for path, f in PlannerConfig.declared():
            limit, value = f.metadata["limit"], config.get(path)
            bound = getattr(self, limit) if isinstance(limit, str) else limit
            if path in sent and limit is not None and value is not None and value > bound:
                name = limit if isinstance(limit, str) else "this server's limit"
                raise ValueError(f"planner.{path}={value} exceeds {name}={bound:g}; raise the limit or lower the "
                                 "default")
        return self

    def limits(self) -> dict[str, int | float]:
        """Upper bounds on planner overrides, by setting path ("horizon", "icem.samples"), derived from each
        setting's declared `limit`: the name of one of the max_* settings above, or a number."""
        out: dict[str, int | float] = {}
        for path, f in PlannerConfig.declared():
            limit = f.metadata["limit"]
            if limit is not None:
                out[path] = getattr(self, limit) if isinstance(limit, str) else limit
        return out

    def resolved_threads(self, device_type: str) -> int | None:
        """torch intra-op threads: the setting, else one per two usable cores on CPU (measured: on 2 shared
        cores, torch's default of 2 made a plan 11-15x slower than 1 thread; docs/benchmarks.md), else
        torch's default on GPU."""
        if self.torch_threads is not None:
            return self.torch_threads
        if device_type != "cpu":
            return None
        return max(1, usable_cores() // 2)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, lowered to a cgroup v2 CPU quota (a container's
    --cpus) when one is set. torch's own default reads neither."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


S = TypeVar("S", bound=Settings)


def from_cli(cls: type[S], argv: Sequence[str] | None) -> S | None:
    """Parse flags over WM_* variables and configure logging; None (after logging why) when invalid."""
    try:
        settings = CliApp.run(cls, cli_args=list(sys.argv[1:] if argv is None else argv))
    except (ValidationError, SettingsError) as exc:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("server").error("invalid settings: %s", exc)
        return None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings

