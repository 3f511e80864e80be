"""Where a replan's time goes at the client, through the real server, for planner defaults side by side.

    python -m benchmarks.replan [--goals near far] [--episodes 20] [--seed 1] [--configs default previous]
                                [--subgoals auto] [--profile] [--out FILE.json] [--quick]
    python -m benchmarks.replan --table FILE.json

For each named planner config (`CONFIGS`: "default" is what `python -m server`
plans with for the model; the others are server flags over it) one real
server (`python -m server`, 1 torch thread, 127.0.0.1) serves the shipped wall
model. The wall episodes of `client_examples.closed_loop` (`envs.episodes`,
the HTTP client `wm_client.PlanningClient`, msgpack frames) run on every
config, **interleaved**: episode i on each server in a rotating order, one
request at a time, so the machine's load falls on every config alike. Far
goals plan with the shipped subgoal graph when `--subgoals` is given
(`planner.subgoals: true`, the setting the far-goal figures are quoted with).

Per request it records what the client saw (round trip) and what the server
says it spent (`timing_ms`: decode, encode, plan, total), so `round trip -
total` is HTTP, (de)serialisation and queueing; iterations; whether it was a
warm-started replan. Per config: success, mean model steps, and medians and
p95s over all requests, first plans and replans apart.

--profile adds, in this process, one plan of each config profiled with
`torch.profiler` (1 thread): the share of each kind of op (attention, linear
layers, GELU, layer norm, copies and views, the rest), op calls per iteration,
and the time inside ops against the plan's wall time (the rest is Python and
dispatch between ops). --quick: 1 episode, near goals, for the test.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from envs import WallEnv
from envs.episodes import run_episode
from envs.tasks import WALL_BUDGETS, wall_tasks
from envs.wall import is_success
from wm_client import LoopConfig, PlanningClient

# name -> planner settings the server starts with, over its defaults for the model (`--planner.PATH VALUE`)
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    # the CPU preset before issue 24: CEM, 100 samples, top 10, up to 15 iterations for every plan
    "previous": {"method": "cem", "max_iterations": 15, "warm_max_iterations": 15, "cem.samples": 100,
                 "cem.elites": 10},
    "cem_64x10_w4": {"method": "cem", "max_iterations": 10, "warm_max_iterations": 4, "cem.samples": 64,
                     "cem.elites": 6},
    "icem_50x10_w5": {"method": "icem", "max_iterations": 10, "warm_max_iterations": 5, "icem.samples": 50,
                      "icem.elites": 5},
    "icem_50x10_w3": {"method": "icem", "max_iterations": 10, "warm_max_iterations": 3, "icem.samples": 50,
                      "icem.elites": 5},
}
QUICK = {"max_iterations": 2, "cem.samples": 8, "cem.elites": 2, "icem.samples": 8, "icem.elites": 2}


def server_flags(settings: Mapping[str, Any]) -> list[str]:
    return [arg for path, value in settings.items() for arg in (f"--planner.{path.replace('_', '-')}", str(value))]


class Recorder:
    """A `PlanningClient` that keeps, per reply, the client's round trip and the server's account of it."""

    def __init__(self, client: PlanningClient) -> None:
        self.client, self.rows = client, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def _timed(self, call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        reply = call(*args, **kwargs)
        ms = 1000 * (time.perf_counter() - t0)
        self.rows.append({"round_trip_ms": ms, **{f"{k}_ms": v for k, v in reply["timing_ms"].items()},
                          "iterations": reply["iterations"], "warm_start": reply["warm_start"],
                          "stop_reason": reply["stop_reason"]})
        return reply

    def plan(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._timed(self.client.plan, *args, **kwargs)

    def replan(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._timed(self.client.replan, *args, **kwargs)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": statistics.median(values), "p95": float(np.percentile(values, 95)), "n": len(values)}


def summarize(requests: list[dict[str, Any]], episodes: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"episodes": len(episodes), "successes": sum(e["success"] for e in episodes),
                           "mean_steps": statistics.fmean(e["steps"] for e in episodes) if episodes else None}
    for part, rows in (("all", requests), ("first", [r for r in requests if not r["warm_start"]]),
                       ("replans", [r for r in requests if r["warm_start"]])):
        out[part] = {key: _stats([r[key] for r in rows]) for key in
                     ("round_trip_ms", "decode_ms", "encode_ms", "plan_ms", "total_ms", "iterations")}
        out[part]["outside_server_ms"] = _stats([r["round_trip_ms"] - r["total_ms"] for r in rows])
    return out


@dataclass
class Profile:
    ops: dict[str, float]  # kind -> share of the time inside ops
    calls_per_iteration: float
    inside_ops_share: float  # time inside ops / the plan's wall time (the rest: Python and dispatch)
    ms_per_iteration: float


_KINDS = {"attention": ("attention", "bmm", "softmax"), "linear": ("addmm", "aten::mm", "linear", "matmul"),
          "gelu": ("gelu",), "layer_norm": ("layer_norm",),
          "copies_views": ("copy_", "as_strided", "view", "transpose", "slice", "select", "expand", "empty",
                           "unsqueeze", "aten::t", "reshape", "clone", "cat", "stack")}


def profile_plan(model: Any, settings: Mapping[str, Any], repeats: int = 5) -> Profile:
    """One plan of a near wall task with `settings`, profiled (ops' self time by kind), 1 thread."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.problems import wall_problem
    from planning import PlannerConfig, plan

    cfg = PlannerConfig.for_model(model, "cpu").updated(_nested(settings))
    prob = wall_problem(model, 1, 0)
    with torch.inference_mode():
        for _ in range(2):
            plan(model, prob.z_obs, prob.z_goal, cfg, seeds=[0])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            iterations = sum(plan(model, prob.z_obs, prob.z_goal, cfg, seeds=[0])[0].iterations for _ in range(repeats))
            wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    shares = {kind: 0.0 for kind in (*_KINDS, "other")}
    for e in events:
        kind = next((k for k, keys in _KINDS.items() if any(key in e.key for key in keys)), "other")
        shares[kind] += e.self_cpu_time_total / total
    # ops called from Python (not those an op calls inside itself): what the interpreter dispatches
    calls = sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None)
    return Profile(shares, calls / iterations, total / 1e6 / wall, 1000 * wall / iterations)


def _nested(settings: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in settings.items():
        section, _, name = path.rpartition(".")
        (out.setdefault(section, {}) if section else out)[name] = value
    return out


def episodes_interleaved(clients: dict[str, Recorder], goals: str, episodes: int, seed: int,
                         subgoals: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    env = WallEnv()
    frameskip = int(next(iter(clients.values())).health()["model"]["frameskip"])
    names = list(clients)
    for i, task in enumerate(wall_tasks(goals, episodes, seed, env, frameskip)):
        for name in names[i % len(names):] + names[:i % len(names)]:
            planner = {"subgoals": True} if subgoals and goals == "far" else None
            config = LoopConfig(model_steps=WALL_BUDGETS[goals], execute=1, seed=seed * 100_000 + i * 100,
                                planner=planner)
            r = run_episode(clients[name], env, task, config, is_success)
            yield name, {"episode": i, "goals": goals, "success": r.success, "steps": r.steps}


def table(result: dict[str, Any]) -> str:
    lines = ["| goals | config | success | mean steps | requests | round trip p50 / p95 | first plans p50 | replans p50 "
             "| server decode / encode / plan p50 | outside the server p50 | iterations first / replans |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for goals, by_config in result["summary"]["by_goals"].items():
        for name, s in by_config.items():
            a, f, r = s["all"], s["first"], s["replans"]
            med = lambda part, key: f"{part[key]['p50']:.0f}" if part[key] else "-"  # noqa: E731
            lines.append(
                f"| {goals} | `{name}` | {s['successes']}/{s['episodes']} | {s['mean_steps']:.2f} | {a['round_trip_ms']['n']} "
                f"| {a['round_trip_ms']['p50']:.0f} / {a['round_trip_ms']['p95']:.0f} ms | {med(f, 'round_trip_ms')} ms "
                f"| {med(r, 'round_trip_ms')} ms | {a['decode_ms']['p50']:.1f} / {a['encode_ms']['p50']:.1f} / "
                f"{a['plan_ms']['p50']:.0f} ms | {a['outside_server_ms']['p50']:.1f} ms "
                f"| {f['iterations']['p50'] if f['iterations'] else '-'} / {r['iterations']['p50'] if r['iterations'] else '-'} |")
    prof = result["summary"].get("profile")
    if prof:
        lines += ["", "| config | ms per iteration | op calls per iteration | time inside ops | attention | linear | GELU "
                  "| layer norm | copies, views | other |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, p in prof.items():
            o = p["ops"]
            lines.append(f"| `{name}` | {p['ms_per_iteration']:.1f} | {p['calls_per_iteration']:.0f} "
                         f"| {100 * p['inside_ops_share']:.0f}% | " + " | ".join(
                             f"{100 * o[k]:.0f}%" for k in ("attention", "linear", "gelu", "layer_norm",
                                                            "copies_views", "other")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import json

    ap = harness.parser("replan", __doc__)
    ap.add_argument("--goals", nargs="+", choices=sorted(WALL_BUDGETS), default=["near", "far"])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["default", "previous"])
    ap.add_argument("--subgoals", help="the server's --subgoals (auto: the model's shipped graph); far goals plan "
                    "with it")
    ap.add_argument("--profile", action="store_true", help="also profile one plan of each config in-process")
    ap.add_argument("--table", type=Path, help="print the markdown tables of this result file and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    harness.set_threads(args.threads)
    path = harness.wall_model(args.model)
    result = harness.Result("replan", args)
    goals = ["near"] if args.quick else args.goals
    episodes = 1 if args.quick else args.episodes
    requests: dict[tuple[str, str], list[dict[str, Any]]] = {}
    outcomes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    servers, clients = {}, {}
    try:
        for name in args.configs:
            settings = {**CONFIGS[name], **(QUICK if args.quick else {})}
            options = server_flags(settings) + (["--subgoals", args.subgoals] if args.subgoals else [])
            servers[name] = harness.Server(path, threads=1, options=options)
            clients[name] = Recorder(PlanningClient(servers[name].url))
        for g in goals:
            for name, row in episodes_interleaved(clients, g, episodes, args.seed, bool(args.subgoals)):
                rec = clients[name].rows
                row.update(config=name, requests=list(rec))
                rec.clear()
                requests.setdefault((g, name), []).extend(row["requests"])
                outcomes.setdefault((g, name), []).append(row)
                result.add(row)
    finally:
        for c in clients.values():
            c.client.close()
        for s in servers.values():
            s.stop()
    by_goals: dict[str, dict[str, Any]] = {}
    for (g, name), reqs in requests.items():
        label = g + ("+subgoals" if args.subgoals and g == "far" else "")
        by_goals.setdefault(label, {})[name] = summarize(reqs, outcomes[(g, name)])
    summary: dict[str, Any] = {"by_goals": by_goals, "configs": {n: CONFIGS[n] for n in args.configs}}
    if args.profile:
        from models import load_model

        model = load_model(path, device="cpu")
        summary["profile"] = {n: vars(profile_plan(model, {**CONFIGS[n], **(QUICK if args.quick else {})},
                                                   1 if args.quick else 5)) for n in args.configs}
    code = result.finish(summary)
    print(table({"summary": summary}), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
