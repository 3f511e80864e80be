"""Did a change slow the request path? This checkout's server beside another checkout's, same requests, interleaved.

    git worktree add /tmp/before <commit-before-the-change>
    python -m benchmarks.studies.ab_servers --other /tmp/before [--episodes 8] [--replans 10] [--out FILE]

Both servers (`benchmarks.harness.Server`, 1 torch thread, the same model) get the same sequence of
requests: per episode a plan, then `--replans` replans with fresh frames, each sent to one server and
then the other (the order alternating), so that whatever else the machine does falls on both alike.
Same seeds and inputs give the same plans, so the iteration counts must agree (checked: `same_plans`);
the figures are the client's round trip and the server's own planning time per iteration, medians, and
their ratios (this checkout over the other). Measured for issue 22 (docs/benchmarks.md, section 9).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.problems import smooth_frames
from wm_client import PlanningClient


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("studies.ab_servers", __doc__)
    ap.add_argument("--other", type=Path, required=True, help="the other checkout (a git worktree)")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--replans", type=int, default=10)
    args = ap.parse_args(argv)
    episodes, replans = (1, 2) if args.quick else (args.episodes, args.replans)
    result = harness.Result("ab_servers", args)
    with tempfile.TemporaryDirectory() as tmp:
        model, label = harness.server_model(args.model, args.quick, Path(tmp))
        with harness.Server(model) as this, harness.Server(model, checkout=args.other) as other:
            servers = {"this": PlanningClient(this.url, timeout=300), "other": PlanningClient(other.url, timeout=300)}
            size = int(this.get("/health")["model"]["image_size"])
            proprio = [10.0, 20.0] if this.get("/health")["model"].get("proprio_dim") else None
            seen = {k: {"round_trip_ms": [], "plan_ms_per_iteration": [], "iterations": []} for k in servers}
            for ep in range(episodes):
                frames = smooth_frames(2 + replans, size, seed=ep)
                order = ["this", "other"] if ep % 2 == 0 else ["other", "this"]
                sessions = {}
                for step in range(1 + replans):
                    for k in order if step % 2 == 0 else order[::-1]:
                        t0 = time.perf_counter()
                        if step == 0:
                            reply = servers[k].plan(frames[0], frames[1], proprio, proprio, seed=ep)
                            sessions[k] = reply["session_id"]
                        else:
                            reply = servers[k].replan(sessions[k], frames[1 + step], proprio, executed_steps=1,
                                                      seed=1000 * ep + step)
                        seen[k]["round_trip_ms"].append(1000 * (time.perf_counter() - t0))
                        seen[k]["plan_ms_per_iteration"].append(reply["timing_ms"]["plan"] / reply["iterations"])
                        seen[k]["iterations"].append(reply["iterations"])
            for c in servers.values():
                c.close()
    for k, d in seen.items():
        result.add({"server": k, "requests": len(d["round_trip_ms"]), "iterations": sum(d["iterations"]),
                    **{f"{m}_p50": round(statistics.median(v), 3) for m, v in d.items() if m != "iterations"}})
    this_row, other_row = result.rows
    ratios = {m: round(this_row[m] / other_row[m], 3) for m in ("round_trip_ms_p50", "plan_ms_per_iteration_p50")}
    return result.finish({"model": label, "other": str(args.other), "this_over_other": ratios,
                          "same_plans": seen["this"]["iterations"] == seen["other"]["iterations"]})


if __name__ == "__main__":
    raise SystemExit(main())
