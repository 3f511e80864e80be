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
``wm_client`` (clients/python); the episode loop is the shared one
(``envs.episodes`` over ``wm_client.ControlLoop``, with its handling of
every server error code), as in ``client_examples.closed_loop``. This script
only talks HTTP (no torch). Prints one line per episode and a final JSON
line with ``success_rate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from envs.episodes import EpisodeResult, pusht_episodes, pusht_line, pusht_summary
from envs.pusht import DEFAULT_MAX_STEP
from wm_client import ControlLoopError, PlanningClient


def evaluate(client: PlanningClient, episodes: int, seed: int, budget: int = 10, execute: int = 1,
             dataset: str | None = None, planner: Mapping[str, Any] | None = None,
             max_step: float = DEFAULT_MAX_STEP, out: TextIO | None = sys.stdout) -> dict[str, Any]:
    """Run ``episodes`` tasks; return the summary printed as the final JSON line."""
    model = client.wait_ready(timeout=120)["model"]
    results: list[EpisodeResult] = []
    for i, r in enumerate(pusht_episodes(client, episodes, seed, budget, execute, dataset, planner, max_step)):
        results.append(r)
        if out is not None:
            print(pusht_line(i, r), file=out, flush=True)
    return pusht_summary(results, model.get("name"), seed, budget)


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
    ap.add_argument("--planner", type=json.loads, help='planner settings as JSON, e.g. \'{"method": "icem", "icem": {"samples": 200}}\'')
    ap.add_argument("--max-step", type=float, default=DEFAULT_MAX_STEP, help="the data's action bound (table px)")
    ap.add_argument("--json", action="store_true", help="send JSON bodies instead of msgpack")
    args = ap.parse_args(argv)
    with PlanningClient(args.url, api_key=args.api_key, use_msgpack=not args.json) as client:
        try:
            summary = evaluate(client, args.episodes, args.seed, args.budget, args.execute, args.dataset,
                               args.planner, args.max_step, out=sys.stdout)
        except (ControlLoopError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
