"""The wall closed-loop evaluation in-process: `client_examples.closed_loop` without a server.

    python -m benchmarks.closed_loop --model models/default/wall.pt --episodes 10 --seed 3 --goals near
        [--execute 1] [--planner '{"num_samples": 200}'] [--threads 1]

The same tasks, seeds, episode loop (``envs.episodes`` over
``wm_client.ControlLoop``) and output as the example client, with
``planning.local.LocalClient`` planning in this process instead of a server
(the server's default planner for the model: ``CEMConfig.for_model``). Its
plan latency is the in-process request, without decoding, HTTP or queueing.
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks.common import machine, set_threads, wall_model_or_say_why
from envs.episodes import wall_episodes, wall_line, wall_summary
from envs.tasks import WALL_BUDGETS
from models import load_model
from planning.local import LocalClient


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.closed_loop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="artifact (default: the shipped wall model)")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--goals", choices=sorted(WALL_BUDGETS), default="near")
    ap.add_argument("--execute", type=int, default=1, help="model steps executed between replans")
    ap.add_argument("--planner", type=json.loads, help='CEM overrides as JSON, e.g. \'{"num_samples": 200}\'')
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    path = wall_model_or_say_why(args.model)
    if path is None:
        return 1
    client = LocalClient(load_model(path, device="cpu"))
    results = []
    for i, r in enumerate(wall_episodes(client, args.episodes, args.seed, args.goals, args.execute, args.planner)):
        results.append(r)
        print(wall_line(i, r), flush=True)
    print(json.dumps({**wall_summary(results, args.goals, args.seed), "load_average_1m": machine()["load_average_1m"],
                      "planner": client.config.to_dict() | (args.planner or {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
