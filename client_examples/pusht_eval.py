"""Closed-loop PushT evaluation through the planning server, with DINO-WM's protocol.

    python -m client_examples.pusht_eval --url http://127.0.0.1:8000 --episodes 50 --seed 0

Needs the optional extra (``pip install -e .[pusht]``). Each task, as in
DINO-WM's PushT evaluation: a start state, and as goal the state reached
after 5 model steps (5 x frameskip env steps) of the *data's* actions from
it. With ``--dataset`` the start states and actions come from that dataset's
episodes (its ``states.npy``); without, from the collector's behaviour
policy (``envs/collect_pusht.py``) with ``--seed``. Tasks already solved at
the start are redrawn (they measure nothing). Success: agent + block
position error < 20 px and block angle error < pi / 9, checked after every
executed model step, within ``--budget`` model steps.

Frames travel raw uint8 over msgpack through the client package
``wm_client`` (clients/python); the MPC loop and its handling of every server
error code are ``wm_client.control_loop``'s. Prints one line per episode and a
final JSON line with ``success_rate``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass

import numpy as np

from envs.pusht import DEFAULT_MAX_STEP, PushTEnv, is_success, state_errors
from envs.tasks import Task
from envs.tasks import pusht_tasks as make_tasks
from wm_client import ControlLoop, ControlLoopError, LoopConfig, PlanningClient

@dataclass
class EpisodeResult:
    success: bool
    steps: int
    position_error: float
    angle_error: float
    plan_ms: list[float]
    errors: dict[str, int]


class _EnvRobot:
    """The loop's robot: proprio = agent position; an action steps the env (frameskip times per model step)."""

    def __init__(self, env: PushTEnv) -> None:
        self.env = env

    def proprio(self) -> np.ndarray:
        return self.env.proprio()

    def apply(self, action: np.ndarray) -> None:
        self.env.step(action)


class _EnvCamera:
    def __init__(self, env: PushTEnv) -> None:
        self.env = env

    def read(self) -> np.ndarray:
        return self.env.render()


def run_episode(client: PlanningClient, env: PushTEnv, task: Task, config: LoopConfig) -> EpisodeResult:
    env.reset(task.goal)
    goal_frame, goal_proprio = env.render(), env.proprio()
    env.reset(task.start)
    loop = ControlLoop(client, _EnvCamera(env), _EnvRobot(env), step=lambda: None, goal_frame=goal_frame,
                       goal_proprio=goal_proprio, config=config,
                       until=lambda: is_success(env.get_state(), task.goal))
    try:
        report = loop.run()
    finally:
        loop.close()
    pos, ang = state_errors(env.get_state(), task.goal)
    return EpisodeResult(report.done, report.model_steps, pos, ang, report.plan_ms, dict(report.errors))


def evaluate(client: PlanningClient, episodes: int, seed: int, budget: int = 10, execute: int = 1,
             dataset: str | None = None, planner: dict | None = None, max_step: float = DEFAULT_MAX_STEP,
             out=sys.stdout) -> dict:  # noqa: ANN001 - a text stream
    """Run ``episodes`` tasks; return the summary printed as the final JSON line."""
    model = client.wait_ready(timeout=120)["model"]
    frameskip, image_size = int(model["frameskip"]), int(model["image_size"])
    env = PushTEnv(image_size=image_size, max_step=max_step)
    results = []
    for i, task in enumerate(make_tasks(env, episodes, seed, frameskip, dataset)):
        config = LoopConfig(model_steps=budget, execute=execute, seed=seed * 100_000 + i * 1000, planner=planner)
        r = run_episode(client, env, task, config)
        results.append(r)
        if out is not None:
            print(f"episode {i:3d}: {'success' if r.success else 'failure'} steps={r.steps:2d} "
                  f"pos_err={r.position_error:6.1f} angle_err={r.angle_error:4.2f} "
                  f"plan_ms_p50={statistics.median(r.plan_ms):.0f}" + (f" errors={r.errors}" if r.errors else ""),
                  file=out)
    lat = [ms for r in results for ms in r.plan_ms]
    return {"env": "pusht", "model": model.get("name"), "episodes": len(results), "seed": seed, "budget": budget,
            "success_rate": sum(r.success for r in results) / len(results),
            "mean_position_error": statistics.fmean(r.position_error for r in results),
            "mean_angle_error": statistics.fmean(r.angle_error for r in results),
            "mean_steps": statistics.fmean(r.steps for r in results),
            "plan_ms_p50": statistics.median(lat), "plan_ms_p95": float(np.percentile(lat, 95)), "plans": len(lat)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m client_examples.pusht_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="a server running a PushT model")
    ap.add_argument("--api-key")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=10, help="model steps per episode")
    ap.add_argument("--execute", type=int, default=1, help="model steps executed between replans")
    ap.add_argument("--dataset", help="draw starts and actions from this dataset (needs states.npy)")
    ap.add_argument("--planner", type=json.loads, help='CEM overrides as JSON, e.g. \'{"num_samples": 200}\'')
    ap.add_argument("--max-step", type=float, default=DEFAULT_MAX_STEP, help="the data's action bound (table px)")
    ap.add_argument("--json", action="store_true", help="send JSON bodies instead of msgpack")
    args = ap.parse_args(argv)
    with PlanningClient(args.url, api_key=args.api_key, use_msgpack=not args.json) as client:
        try:
            summary = evaluate(client, args.episodes, args.seed, args.budget, args.execute, args.dataset,
                               args.planner, args.max_step)
        except (ControlLoopError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
