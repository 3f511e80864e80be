"""Closed-loop MPC on the wall environment through the planning server.

    python -m server --model path/to/wall.pt &
    python -m client_examples.wall_mpc --url http://127.0.0.1:8000 --steps 30

Each control step sends the current frame and proprio, executes the first
``--execute`` model steps of the plan (``frameskip`` env actions each) and
replans warm-started from the rest. Prints one JSON line per step and a
summary; exits 0 whether or not the goal was reached (a random model will not
reach it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from client_examples.client import PlanningClient
from envs import WallEnv, is_success


def run(
    client: PlanningClient, steps: int, execute: int, seed: int, planner: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One episode: returns the summary (distances, success, mean server plan time)."""
    env = WallEnv(seed=seed)
    rng = np.random.default_rng(seed)
    goal_state = env.sample_free_state(rng)
    goal_frame = env.render(goal_state)
    obs = env.reset(seed=seed)
    reply = client.plan(obs["visual"], goal_frame, obs["proprio"], goal_state.astype(np.float32),
                        seed=seed, planner=planner)
    session, plan_ms = reply["session_id"], [reply["timing_ms"]["total"]]
    for step in range(steps):
        fs = reply["frameskip"]
        for action in reply["actions"][: execute * fs]:
            obs, _ = env.step(np.asarray(action))
        distance = float(np.linalg.norm(env.get_state() - goal_state))
        print(json.dumps({"step": step, "distance": round(distance, 3),
                          "stop_reason": reply["stop_reason"], "loss": round(reply["loss"], 5)}))
        if is_success(env.get_state(), goal_state):
            break
        reply = client.replan(session, obs["visual"], obs["proprio"], executed_steps=execute, seed=step)
        plan_ms.append(reply["timing_ms"]["total"])
    client.delete_session(session)
    final = float(np.linalg.norm(env.get_state() - goal_state))
    return {"success": bool(is_success(env.get_state(), goal_state)), "final_distance": round(final, 3),
            "plans": len(plan_ms), "mean_server_ms": round(float(np.mean(plan_ms)), 1)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--steps", type=int, default=30, help="replans at most")
    ap.add_argument("--execute", type=int, default=1, help="model steps executed per plan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="JSON + PNG bodies instead of msgpack")
    args = ap.parse_args(argv)
    with PlanningClient(args.url, api_key=args.api_key, use_msgpack=not args.json) as client:
        client.wait_ready(timeout=120)
        summary = run(client, args.steps, args.execute, args.seed)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
