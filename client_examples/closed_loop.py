"""Closed-loop evaluation on the built-in wall environment.

    python -m client_examples.closed_loop --url http://127.0.0.1:8000 --episodes 20 --seed 0 --goals near
    python -m client_examples.closed_loop --model runs/wall/model.pt ...   # in-process, no server

Each episode: render the goal state, `plan` from the start frame, execute
`--execute` model steps (each = frameskip env steps), `replan` from the new
frame with the executed count (the server warm-starts), until the agent is
within the success tolerance of the goal (checked after every model step) or
the budget of model steps is spent.

Goal sets:
  near  DINO-WM style: the goal is where 5 model steps of random actions (one
        uniform action per model step, held for frameskip env steps) take the
        agent from the start; budget 10 model steps.
  far   start and goal drawn uniformly over the free space of the whole room,
        so about half the episodes must cross the wall through the door;
        budget 40 model steps.

Prints one line per episode and a final JSON line with success_rate, mean
steps and plan latency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from envs import WallEnv, is_success

BUDGETS = {"near": 10, "far": 40}


class Planner(Protocol):
    """What the loop needs: a cold plan towards a goal, then warm replans.
    Both return env actions (env steps, raw_action_dim) in env units."""

    frameskip: int

    def plan(self, obs: np.ndarray, proprio: np.ndarray, goal: np.ndarray, goal_proprio: np.ndarray) -> np.ndarray: ...

    def replan(self, obs: np.ndarray, proprio: np.ndarray, executed_steps: int) -> np.ndarray: ...


class InProcessPlanner:
    """Plans with models/ and planning/ directly (tests, and runs without a server)."""

    def __init__(self, model, config=None, seed: int = 0) -> None:  # noqa: ANN001 - WorldModel, CEMConfig
        import torch

        from planning import CEMConfig

        self._torch = torch
        self.model = model
        self.config = config or CEMConfig.for_model(model, model.device.type)
        self.frameskip = model.config.frameskip
        self.seed = seed
        self.session = None

    def _encode(self, frame: np.ndarray, proprio: np.ndarray):  # noqa: ANN202
        t = self._torch
        return self.model.encode_observation(t.from_numpy(frame[None]), t.from_numpy(proprio[None].astype(np.float32)))

    def _plan(self, z, init) -> np.ndarray:  # noqa: ANN001
        from planning import plan

        self.seed += 1
        (res,) = plan(self.model, z, self.session.goal, self.config, init_mean=init, seeds=[self.seed])
        self.session.record(res)
        return self.model.codec.to_env(res.actions).cpu().numpy()

    def plan(self, obs: np.ndarray, proprio: np.ndarray, goal: np.ndarray, goal_proprio: np.ndarray) -> np.ndarray:
        from planning import MPCSession

        with self._torch.inference_mode():
            self.session = MPCSession(goal=self._encode(goal, goal_proprio), config=self.config)
            return self._plan(self._encode(obs, proprio), None)

    def replan(self, obs: np.ndarray, proprio: np.ndarray, executed_steps: int) -> np.ndarray:
        with self._torch.inference_mode():
            return self._plan(self._encode(obs, proprio), self.session.init_mean(executed_steps))


class HttpPlanner:
    """Plans through a running server with the shared client (raw uint8 frames over msgpack)."""

    def __init__(self, url: str, api_key: str | None = None, seed: int = 0, planner: dict | None = None) -> None:
        from wm_client import PlanningClient

        self.client = PlanningClient(url, api_key=api_key)
        self.client.wait_ready(timeout=120)
        self.frameskip = int(self.client.health()["model"]["frameskip"])
        self.seed, self.planner, self.session_id = seed, planner, None

    def plan(self, obs: np.ndarray, proprio: np.ndarray, goal: np.ndarray, goal_proprio: np.ndarray) -> np.ndarray:
        if self.session_id is not None:
            self.client.delete_session(self.session_id)
        self.seed += 1
        reply = self.client.plan(obs, goal, proprio, goal_proprio, seed=self.seed, planner=self.planner)
        self.session_id = reply["session_id"]
        return np.asarray(reply["actions"], dtype=np.float32)

    def replan(self, obs: np.ndarray, proprio: np.ndarray, executed_steps: int) -> np.ndarray:
        self.seed += 1
        reply = self.client.replan(self.session_id, obs, proprio, executed_steps, seed=self.seed)
        return np.asarray(reply["actions"], dtype=np.float32)

    def close(self) -> None:
        """End the last session on the server and the HTTP connection."""
        if self.session_id is not None:
            self.client.delete_session(self.session_id)
            self.session_id = None
        self.client.close()


@dataclass
class EpisodeResult:
    success: bool
    steps: int  # model steps executed
    final_distance: float
    plan_ms: list[float]


def make_tasks(kind: str, n: int, seed: int, env: WallEnv, frameskip: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(start, goal) state pairs, deterministic for a seed."""
    if kind not in BUDGETS:
        raise ValueError(f"goals={kind!r}: expected one of {sorted(BUDGETS)}")
    rng = np.random.default_rng(seed)
    tasks = []
    while len(tasks) < n:
        start = env.sample_free_state(rng)
        if kind == "far":
            goal = env.sample_free_state(rng)
        else:
            env.reset(state=start)
            for _ in range(5):
                a = rng.uniform(-env.layout.max_step, env.layout.max_step, size=2)
                for _ in range(frameskip):
                    env.step(a)
            goal = env.get_state()
        if not is_success(start, goal):  # a task already solved at the start measures nothing
            tasks.append((start, goal))
    return tasks


def run_episode(env: WallEnv, planner: Planner, start: np.ndarray, goal: np.ndarray, budget: int,
                execute: int = 1) -> EpisodeResult:
    goal_obs = env.reset(state=goal)
    obs = env.reset(state=start)
    latencies: list[float] = []
    steps = 0
    t0 = time.perf_counter()
    actions = planner.plan(obs["visual"], obs["proprio"], goal_obs["visual"], goal_obs["proprio"])
    latencies.append(1000 * (time.perf_counter() - t0))
    fs = planner.frameskip
    while True:
        done_now = 0
        for k in range(min(execute, budget - steps, len(actions) // fs)):
            for a in actions[k * fs:(k + 1) * fs]:
                obs, _ = env.step(a)
            steps += 1
            done_now += 1
            if is_success(env.get_state(), goal):
                return EpisodeResult(True, steps, float(np.linalg.norm(env.get_state() - goal)), latencies)
        if steps >= budget:
            break
        t0 = time.perf_counter()
        actions = planner.replan(obs["visual"], obs["proprio"], done_now)
        latencies.append(1000 * (time.perf_counter() - t0))
    dist = float(np.linalg.norm(env.get_state() - goal))
    return EpisodeResult(False, steps, dist, latencies)


def evaluate(planner: Planner, episodes: int, seed: int, goals: str, execute: int = 1,
             out=sys.stdout, first: int = 0) -> dict:  # noqa: ANN001 - a text stream
    """Run tasks first..episodes-1 of the seed's task list (first > 0: one shard of a split run)."""
    env = WallEnv()
    results = []
    for i, (start, goal) in enumerate(make_tasks(goals, episodes, seed, env, planner.frameskip)[first:], first):
        r = run_episode(env, planner, start, goal, BUDGETS[goals], execute)
        results.append(r)
        if out is not None:
            print(f"episode {i:3d}: {'success' if r.success else 'failure'} steps={r.steps:2d} "
                  f"final_dist={r.final_distance:5.1f}px start={np.round(start, 1).tolist()} "
                  f"goal={np.round(goal, 1).tolist()} plan_ms_p50={statistics.median(r.plan_ms):.0f}", file=out)
    lat = [ms for r in results for ms in r.plan_ms]
    return {"goals": goals, "episodes": len(results), "seed": seed,
            "success_rate": sum(r.success for r in results) / len(results),
            "mean_steps": statistics.fmean(r.steps for r in results),
            "mean_final_distance": statistics.fmean(r.final_distance for r in results),
            "plan_ms_p50": statistics.median(lat), "plan_ms_p95": float(np.percentile(lat, 95)), "plans": len(lat)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m client_examples.closed_loop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    where.add_argument("--model", help="plan in-process with this artifact instead of a server")
    ap.add_argument("--api-key")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--goals", choices=sorted(BUDGETS), default="near")
    ap.add_argument("--execute", type=int, default=1, help="model steps executed between replans")
    ap.add_argument("--first", type=int, default=0,
                    help="skip the seed's first tasks: run tasks FIRST..EPISODES-1 (shards of one evaluation)")
    args = ap.parse_args(argv)
    if args.model:
        from models import load_model

        planner: Planner = InProcessPlanner(load_model(args.model), seed=args.seed)
    else:
        planner = HttpPlanner(args.url, api_key=args.api_key, seed=args.seed)
    try:
        summary = evaluate(planner, args.episodes, args.seed, args.goals, args.execute, first=args.first)
    finally:
        if isinstance(planner, HttpPlanner):
            planner.close()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
