"""Closed-loop evaluation on the built-in wall environment, through the planning server.

    python -m client_examples.closed_loop --url http://127.0.0.1:8000 --episodes 20 --seed 0 --goals near

Each episode: render the goal state, `plan` from the start frame, execute
`--execute` model steps (each = frameskip env steps), `replan` from the new
frame with the executed count (the server warm-starts), until the agent is
within the success tolerance of the goal (checked after every model step) or
the budget of model steps is spent.

Goal sets (envs/tasks.py):
  near  DINO-WM style: the goal is where 5 model steps of random actions (one
        uniform action per model step, held for frameskip env steps) take the
        agent from the start; budget 10 model steps.
  far   start and goal drawn uniformly over the free space of the whole room,
        so about half the episodes must cross the wall through the door;
        budget 40 model steps.

The episode loop is the shared one (``envs.episodes`` over
``wm_client.ControlLoop``, with its policy for every server error code);
this script only talks HTTP (numpy, wm_client and envs; no torch). The same
evaluation without a server: ``python -m benchmarks.closed_loop --model PATH``.

Prints one line per episode and a final JSON line with success_rate, mean
steps and plan latency.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from envs.episodes import EpisodeResult, wall_episodes, wall_line, wall_summary
from envs.tasks import WALL_BUDGETS as BUDGETS
from wm_client import ControlLoopError, PlanningClient


def evaluate(client: PlanningClient, episodes: int, seed: int, goals: str, execute: int = 1,
             out: TextIO | None = sys.stdout, planner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``episodes`` tasks through ``client``; print a line per episode to ``out``; return the summary."""
    results: list[EpisodeResult] = []
    for i, r in enumerate(wall_episodes(client, episodes, seed, goals, execute, planner)):
        results.append(r)
        if out is not None:
            print(wall_line(i, r), file=out, flush=True)
    return wall_summary(results, goals, seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m client_examples.closed_loop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="a running server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--api-key")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--goals", choices=sorted(BUDGETS), default="near")
    ap.add_argument("--execute", type=int, default=1, help="model steps executed between replans")
    args = ap.parse_args(argv)
    with PlanningClient(args.url, api_key=args.api_key) as client:
        try:
            summary = evaluate(client, args.episodes, args.seed, args.goals, args.execute, out=sys.stdout)
        except ControlLoopError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
