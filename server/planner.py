"""The one path from a request's planner overrides to the config it plans with.

    server default (device preset + model recommendation + operator settings)
      -> PlannerConfig.updated(overrides)            the planner's own checks
      -> PlannerLimits.check(config)                 this server's bounds
      -> cost (GFLOPs) against the per-request limit

The wire schema (``server.schemas.PlannerOverrides``) only types the fields;
what a value may be is each setting's declaration (``planning.settings``),
and how much a request may ask of this server is the limits' (derived from
the same declarations and the operator's settings). The previous release's
flat names are mapped, and each use is reported back as a notice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planning import PlannerConfig
from planning.config import legacy_used, paths_of
from server.errors import ApiError
from server.images import Notice


@dataclass(frozen=True)
class PlannerLimits:
    """Upper bounds (inclusive) on planner settings, and on a plan's cost.

    maxima: setting path ("horizon", "icem.samples") -> largest accepted value.
    Every numeric setting a client may set has one (the declarations are
    tested for it), so no override can make a loss overflow (e.g. alpha=1e300).
    max_plan_gflop: the most one plan may cost, in analytic GFLOPs.
    """

    maxima: Mapping[str, float]
    max_plan_gflop: float = math.inf

    def check(self, config: PlannerConfig, sent: Mapping[str, str] | None = None) -> None:
        """Raise planner.out_of_bounds for the first setting over its maximum. sent: the paths the
        request set, each with the name it used (a deprecated flat name, or the path itself)."""
        sent = sent or {}
        for path, limit in self.maxima.items():
            value = config.get(path)
            if value is not None and value > limit:
                name = sent.get(path, path)
                origin = "" if path in sent else " (the server's default)"
                raise ApiError(
                    422, "planner.out_of_bounds",
                    f"planner.{name}={value}{origin} exceeds this server's limit of {limit:g}; "
                    f"send at most {limit:g}.", f"planner.{name}")


def resolve(base: PlannerConfig, overrides: Mapping[str, Any] | None,
            limits: PlannerLimits) -> tuple[PlannerConfig, list[Notice]]:
    """The server's defaults with a request's overrides, within its limits; and a notice for each
    deprecated name the request used."""
    sent = dict(overrides or {})
    names = _names_sent(sent)
    try:
        config = base.updated(sent) if sent else base
    except (ValueError, TypeError) as exc:  # the config's own check names the bad setting first
        name = re.match(r"\s*([\w.]+)", str(exc))
        field = f"planner.{names[name.group(1)]}" if name and name.group(1) in names else "planner"
        raise ApiError(422, "planner.invalid", f"planner: {exc}", field) from None
    limits.check(config, names)
    notices = [Notice("planner.deprecated", f"planner.{old} is deprecated and will be removed in the next release; "
                      f"it set {', '.join('planner.' + p for p in paths)}: send those instead", f"planner.{old}")
               for old, paths in legacy_used(sent).items()]
    return config, notices


def _names_sent(overrides: Mapping[str, Any]) -> dict[str, str]:
    """Each setting path a request sets -> the name it used (errors name what the client sent)."""
    names = {path: path for path in paths_of(overrides)}
    for old, paths in legacy_used(overrides).items():
        names |= {path: old for path in paths if path not in paths_of({k: v for k, v in overrides.items() if k != old})}
    return names


def check_cost(config: PlannerConfig, gflop: float, base: PlannerConfig, base_gflop: float,
               limits: PlannerLimits, sent: Mapping[str, Any] | None = None) -> None:
    """422 planner.too_expensive naming the setting to lower (as the request `sent` named it), when a
    plan costs too much."""
    if gflop <= limits.max_plan_gflop:
        return
    factor = gflop / limits.max_plan_gflop
    # The knob furthest above the server's default is the one to lower first.
    paths = config.cost_paths()
    name = max(paths, key=lambda p: config.get(p) / max(1, base.get(p)))
    suggested = max(1, int(config.get(name) / factor))
    name = _names_sent(sent or {}).get(name, name)
    raise ApiError(
        422, "planner.too_expensive",
        f"this plan would cost {gflop:.4g} GFLOP ({gflop / base_gflop:.1f}x the server's default plan: the "
        f"rollouts its {config.method} solver scores x a rollout of horizon steps), over this server's per-request "
        f"limit of {limits.max_plan_gflop:.4g} GFLOP; lower planner.{name} (e.g. to {suggested}) or the other "
        f"cost settings ({', '.join(paths)}).", f"planner.{name}")
