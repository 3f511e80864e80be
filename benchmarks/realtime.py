"""Closed-loop control in real time: holding still while planning vs planning while moving.

    python -m benchmarks.realtime [--env wall|pusht] [--episodes 8] [--seed 0] [--goals near] [--control-hz 10]
        [--delays 0,1.0] [--modes hold,async_raw,async] [--threads 1] [--out FILE] [--quick]

The wall task's episodes (``envs.episodes.wall_episodes``, the same tasks for
every mode) against a ``python -m server`` of the default model on this
machine (``harness.Server``), with the environment advancing at a fixed
wall-clock rate, ``--control-hz`` env actions per second, whether or not a
plan has arrived (``wm_client.ControlLoop`` in its real-time modes):

* ``hold``: the synchronous loop in real time: the robot holds still while
  each plan is computed, then executes ``--execute`` model steps of it;
* ``async_raw``: planning while moving, without compensation: each reply
  is executed from its first step on arrival, although it was planned for
  the frame taken before the robot moved on;
* ``async``: planning while moving with compensation: the request carries
  the actions the robot executes meanwhile (``pending_actions``) and the
  reply takes over at the step it was planned for.

Each mode runs at every ``--delays`` value: extra seconds added to every
reply at the client, standing in for a slower planner (a DINO-WM-size
model on a GPU takes seconds per plan). Reported per episode: success,
wall-clock seconds to the goal, model steps, late plans, holds; summarised
per (delay, mode): success rate, mean time to goal over the episodes every
mode of that delay solved, and its speed-up over ``hold``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from envs.episodes import EpisodeResult, pusht_episodes, wall_episodes
from envs.tasks import PUSHT_BUDGET, WALL_BUDGETS
from wm_client import PlanningClient

MODES = {"hold": {"mode": "hold"}, "async_raw": {"mode": "async", "compensate": False},
         "async": {"mode": "async", "compensate": True}}


class DelayedClient(PlanningClient):
    """Every plan and replan answered ``delay`` seconds later than the server answers it."""

    def __init__(self, url: str, delay: float) -> None:
        super().__init__(url, timeout=120)
        self.delay = delay

    def plan(self, *args: Any, **kw: Any) -> dict[str, Any]:
        reply = super().plan(*args, **kw)
        time.sleep(self.delay)
        return reply

    def replan(self, *args: Any, **kw: Any) -> dict[str, Any]:
        reply = super().replan(*args, **kw)
        time.sleep(self.delay)
        return reply


def row(delay: float, mode: str, i: int, seed: int, loop_seed: int, r: EpisodeResult) -> dict[str, Any]:
    """One episode; loop_seed: its LoopConfig seed (its requests use the next integers)."""
    rep = r.report
    assert rep is not None
    return {"delay_s": delay, "mode": mode, "episode": i, "task_seed": seed, "loop_seed": loop_seed,
            "success": r.success, "wall_s": round(rep.wall_s, 3),
            "time_to_goal_s": round(rep.wall_s, 3) if r.success else None, "model_steps": r.steps,
            "requests": r.requests, "plan_ms_p50": round(statistics.median(r.plan_ms), 1) if r.plan_ms else None,
            "pending_steps_mean": round(statistics.fmean(rep.pending_steps), 2) if rep.pending_steps else 0,
            "late_plans": rep.late_plans, "late_steps": rep.late_steps, "hold_ticks": rep.hold_ticks,
            "overruns": rep.overruns, "errors": r.errors}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per delay and mode: success rate; time to goal over the episodes every mode solved (paired)."""
    out: dict[str, Any] = {}
    for delay in sorted({r["delay_s"] for r in rows}):
        at = [r for r in rows if r["delay_s"] == delay]
        modes = sorted({r["mode"] for r in at}, key=list(MODES).index)
        episodes = sorted({r["episode"] for r in at})
        solved_by_all = [e for e in episodes
                         if all(any(r["episode"] == e and r["mode"] == m and r["success"] for r in at) for m in modes)]
        per: dict[str, Any] = {}
        for m in modes:
            mine = [r for r in at if r["mode"] == m]
            paired = [r["time_to_goal_s"] for r in mine if r["episode"] in solved_by_all]
            solved = [r["time_to_goal_s"] for r in mine if r["success"]]
            per[m] = {"episodes": len(mine), "success_rate": round(sum(r["success"] for r in mine) / len(mine), 3),
                      "time_to_goal_s_mean_paired": round(statistics.fmean(paired), 2) if paired else None,
                      "time_to_goal_s_mean_solved": round(statistics.fmean(solved), 2) if solved else None,
                      "late_plans": sum(r["late_plans"] for r in mine),
                      "plan_ms_p50": statistics.median([r["plan_ms_p50"] for r in mine if r["plan_ms_p50"]])}
        base = per.get("hold", {}).get("time_to_goal_s_mean_paired")
        for m, v in per.items():
            t = v["time_to_goal_s_mean_paired"]
            v["speedup_vs_hold_paired"] = round(base / t, 2) if base and t else None
        out[f"delay_{delay:g}s"] = {"paired_episodes": solved_by_all, "modes": per}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("realtime", __doc__)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="task seed (envs.tasks.wall_tasks); requests chain from it")
    ap.add_argument("--env", choices=["wall", "pusht"], default="wall",
                    help="pusht: models/default/pusht.pt (or --model), DINO-WM's task protocol, budget "
                    f"{PUSHT_BUDGET} model steps; request seeds seed * 100000 + episode * 1000")
    ap.add_argument("--goals", choices=sorted(WALL_BUDGETS), default="near", help="wall tasks")
    ap.add_argument("--control-hz", type=float, default=10.0, help="env actions per second")
    ap.add_argument("--execute", type=int, default=1, help="hold mode: model steps executed per plan")
    ap.add_argument("--delays", default="0,1.0", help="extra seconds per reply, comma separated")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma separated, of {list(MODES)}")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="wall-clock cap per episode")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; choose from {list(MODES)}")
    delays = [float(d) for d in args.delays.split(",")]
    if args.quick:
        args.episodes, delays = 2, delays[:1]
    result = harness.Result("realtime", args)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or (str(harness.ROOT / "models" / "default" / "pusht.pt") if args.env == "pusht" else None)
        path, label = harness.server_model(model, args.quick, Path(tmp))
        result.data["settings"]["model_used"] = label
        with harness.Server(path, threads=args.threads) as server:
            for delay in delays:
                for mode in modes:
                    loop = {**MODES[mode], "control_hz": args.control_hz, "max_seconds": args.max_seconds}
                    loop_seed = args.seed  # wall_episodes chains the request seeds from the task seed
                    with DelayedClient(server.url, delay) as client:
                        episodes = (wall_episodes(client, args.episodes, args.seed, args.goals, args.execute,
                                                  loop=loop) if args.env == "wall" else
                                    pusht_episodes(client, args.episodes, args.seed, execute=args.execute, loop=loop))
                        for i, r in enumerate(episodes):
                            if args.env == "pusht":
                                loop_seed = args.seed * 100_000 + i * 1000  # envs.episodes.PUSHT_SEED_STRIDE
                            result.add(row(delay, mode, i, args.seed, loop_seed, r))
                            loop_seed += r.requests
            result.data["server"] = {"planner_defaults": server.get("/stats").get("planner_defaults")}
    return result.finish(summarise(result.rows))


if __name__ == "__main__":
    sys.exit(main())
