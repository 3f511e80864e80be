"""The server's one settings class: command-line flags over ``WM_*`` env vars.

``python -m server --help`` lists every field as a flag (``--max-sessions``);
each also reads from the environment (``WM_MAX_SESSIONS``). Flags win over
environment variables, which win over the defaults below. Nested planner
defaults take JSON or dotted flags: ``WM_PLANNER='{"num_samples": 100}'`` or
``--planner.num-samples 100``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    host: str = Field(
        default="127.0.0.1",
        description="bind address; localhost unless deliberately exposed (0.0.0.0 in Docker)",
    )
    port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port")
    device: str = Field(default="auto", description="auto (cuda if available), cpu, cuda, cuda:N")
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
        description="default CEM settings over the planner's preset (paper defaults on "
        "GPU, the CPU preset on CPU)",
    )
    max_horizon: int = Field(default=32, ge=1, description="bound on planner.horizon")
    max_num_samples: int = Field(default=4096, ge=1, description="bound on planner.num_samples")
    max_opt_steps: int = Field(default=100, ge=1, description="bound on planner.opt_steps")
    max_var_scale: float = Field(default=10.0, gt=0, description="bound on planner.var_scale")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="intra-op CPU threads for the model; unset: torch's default (one per "
        "core). Lower it when the cores are shared: spinning threads stall each other",
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
    warmup: bool = Field(
        default=True, description="run one short plan after loading, before reporting ready"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Settings:
        for name, limit in self.limits().items():
            value = getattr(self.planner, name)
            if value is not None and value > limit:
                raise ValueError(
                    f"planner.{name}={value} exceeds max_{name}={limit}; raise the limit "
                    "or lower the default"
                )
        return self

    def limits(self) -> dict[str, int | float]:
        """Upper bounds on planner overrides, by planner field name."""
        return {
            "horizon": self.max_horizon,
            "num_samples": self.max_num_samples,
            "opt_steps": self.max_opt_steps,
            "var_scale": self.max_var_scale,
        }
