"""The wall closed-loop evaluation in-process: `client_examples.closed_loop` without a server.

    python -m benchmarks.closed_loop [--model models/default/wall.pt] [--episodes 10] [--seed 3] [--goals near]
        [--execute 1] [--planner '{"cem": {"samples": 200}}'] [--threads 1] [--out FILE]

The same tasks, seeds, episode loop (``envs.episodes`` over
``wm_client.ControlLoop``) and episode lines (on stderr) as the example
client, with ``server.local.LocalClient`` planning in this process instead
of a server (the server's default planner for the model, with --planner
overrides on top). Its plan latency is the in-process request, without
decoding, HTTP or queueing. One row per episode; the summary is the
client's.
"""

from __future__ import annotations

import json
import sys

from benchmarks import harness
from envs.episodes import wall_episodes, wall_line, wall_summary
from envs.tasks import WALL_BUDGETS
from models import load_model
from server.local import LocalClient


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("closed_loop", __doc__, quick=False)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--goals", choices=sorted(WALL_BUDGETS), default="near")
    ap.add_argument("--execute", type=int, default=1, help="model steps executed between replans")
    ap.add_argument("--planner", type=json.loads, help='planner overrides as JSON, e.g. \'{"method": "icem", "icem": {"samples": 200}}\'')
    args = ap.parse_args(argv)
    path = harness.wall_model(args.model)
    result = harness.Result("closed_loop", args)
    model = load_model(path, device="cpu")
    client = LocalClient(model, harness.planner(model, "cpu"))
    episodes = []
    for i, r in enumerate(wall_episodes(client, args.episodes, args.seed, args.goals, args.execute, args.planner)):
        print(wall_line(i, r), file=sys.stderr, flush=True)
        episodes.append(r)
        result.add({"episode": i, "success": r.success, "steps": r.steps, "requests": r.requests})
    return result.finish({**wall_summary(episodes, args.goals, args.seed),
                          "planner": client.config.to_dict() | (args.planner or {})})


if __name__ == "__main__":
    sys.exit(main())
