"""The one path from a request's planner overrides to the config it plans with.

    server default (device preset + model recommendation + operator settings)
      -> dataclasses.replace(default, **overrides)   the planner's own checks
      -> PlannerLimits.check(config)                 this server's bounds
      -> cost (GFLOPs) against the per-request limit

The wire schema (``server.schemas.PlannerOverrides``) only types the fields
(integers are integers, floats are finite numbers); what a value may be is
the planner config's business (``CEMConfig.__post_init__``), and how much a
request may ask of this server is the limits' (data, from settings).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planning import CEMConfig
from server.errors import ApiError

def _cost_fields(config: CEMConfig) -> tuple[str, ...]:
    """The settings that make this solver's plan more expensive."""
    if config.method == "gradient":
        return ("grad_starts", "opt_steps", "horizon")
    if config.method.endswith("_gradient"):
        return ("num_samples", "opt_steps", "grad_starts", "horizon")
    return ("num_samples", "opt_steps", "horizon")


@dataclass(frozen=True)
class PlannerLimits:
    """Upper bounds (inclusive) on planner fields, and on a plan's cost.

    maxima: field -> largest accepted value. Every numeric field a client may
    set has one, so no override can make a loss overflow (e.g. alpha=1e300).
    max_plan_gflop: the most one plan may cost, in analytic GFLOPs.
    """

    maxima: Mapping[str, float]
    max_plan_gflop: float = math.inf

    def check(self, config: CEMConfig, sent: Mapping[str, Any]) -> None:
        """Raise planner.out_of_bounds for the first field over its maximum."""
        for name, limit in self.maxima.items():
            value = getattr(config, name, None)
            if value is not None and value > limit:
                origin = "" if name in sent else " (the server's default)"
                raise ApiError(
                    422, "planner.out_of_bounds",
                    f"planner.{name}={value}{origin} exceeds this server's limit of {limit:g}; "
                    f"send at most {limit:g}.", f"planner.{name}")


def resolve(base: CEMConfig, overrides: Mapping[str, Any] | None, limits: PlannerLimits) -> CEMConfig:
    """The server's defaults with a request's overrides, within its limits."""
    sent = dict(overrides or {})
    try:
        config = dataclasses.replace(base, **sent) if sent else base
    except (ValueError, TypeError) as exc:  # the config's own check names the bad value first
        name = re.match(r"\s*(\w+)", str(exc))
        field = f"planner.{name.group(1)}" if name and name.group(1) in sent else "planner"
        raise ApiError(422, "planner.invalid", f"planner: {exc}", field) from None
    limits.check(config, sent)
    return config


def check_cost(config: CEMConfig, gflop: float, base: CEMConfig, base_gflop: float,
               limits: PlannerLimits) -> None:
    """422 planner.too_expensive naming the setting to lower, when a plan costs too much."""
    if gflop <= limits.max_plan_gflop:
        return
    factor = gflop / limits.max_plan_gflop
    # The knob furthest above the server's default is the one to lower first.
    fields = _cost_fields(config)
    name = max(fields, key=lambda f: getattr(config, f) / max(1, getattr(base, f)))
    value = getattr(config, name)
    suggested = max(1, int(value / factor))
    raise ApiError(
        422, "planner.too_expensive",
        f"this plan would cost {gflop:.4g} GFLOP ({gflop / base_gflop:.1f}x the server's default plan: the "
        f"rollouts its {config.method} solver scores x a rollout of horizon steps), over this server's per-request "
        f"limit of {limits.max_plan_gflop:.4g} GFLOP; lower planner.{name} (e.g. to {suggested}) or the other "
        f"cost settings ({', '.join(fields)}).", f"planner.{name}")
