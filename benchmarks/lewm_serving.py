"""What a client of the real server sees with a LeWorldModel of the published size, on a CPU.

    python -m benchmarks.lewm_serving [--budgets cem:48x4 cem:32x4 ...] [--max-sessions 4]
        [--replans 4] [--server-threads 1] [--default-replans 2] [--out FILE.json] [--quick]

The artifact: LeWM at the published size (ViT-tiny/14 at 224 px, 6-layer
predictor, 16 heads of 64, MLP 2048, 192-d, 18M parameters) with seeded random
weights (`models.lewm.testing.randomize`) and the metadata an import records
(`models.lewm.importer.PAPER_PLANNER`: LeWM's paper CEM as the recommendation),
served by `python -m server` on 127.0.0.1 (`harness.Server`, CPU, --threads
torch threads). Latency does not depend on the weights' values.

1. `default`: one session, a plan then --default-replans replans
   (executed_steps=1) with the server's own planner, which for this artifact
   on a CPU is `PlannerConfig.for_model`: the CPU preset with the artifact's
   recommendation on top (CEM 300 samples, 30 elites, up to 30 iterations,
   early stop after 4). Client round trip and the server's timing_ms.
2. `budget`: for each --budgets entry (method:SAMPLESxITERATIONS, all
   iterations run: min_iterations = iterations), one session, a plan then
   --replans replans with that request planner.
3. `sessions`: for each budget whose replans all stayed under 1 s alone
   (largest samples x iterations first), N = 2, 3, ... --max-sessions
   concurrent sessions (threads, one client each), each a plan then --replans
   replans, all started together; stops at the first N whose slowest replan
   passes 1 s. The result: per budget, the largest N whose every replan took
   under 1 s (`largest_sessions_under_1s`: at the largest fitting budget).

Frames are 224 x 224 RGB (`benchmarks.problems.smooth_frames`), raw msgpack.
--quick: the tiny LeWM, small budgets, up to 2 sessions.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.problems import smooth_frames
from models.artifact import save_model
from models.lewm.config import LeWMConfig
from models.lewm.importer import PAPER_PLANNER
from models.lewm.model import LeWM
from models.lewm.testing import TINY_LEWM, randomize, tiny_lewm_stats
from wm_client import PlanningClient, PlanningError

LIMIT_S = 1.0
BUDGETS = ("cem:100x4", "cem:48x4", "cem:32x4", "cem:24x3", "cem:16x3")
QUICK_BUDGETS = ("cem:16x3", "cem:8x2")


def save_artifact(folder: Path, quick: bool, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """The published-size LeWM (or the tiny one), random weights, with an import's planner metadata."""
    cfg = TINY_LEWM if quick else LeWMConfig(name="lewm-published-size-random", raw_action_dim=2, frameskip=5)
    model = LeWM(cfg, tiny_lewm_stats(cfg))
    randomize(model, seed)
    model = model.eval().requires_grad_(False)
    path = save_model(model, folder / "lewm.pt", metadata={
        "kind": "benchmark stand-in: LeWM published size, seeded random weights", "planner": PAPER_PLANNER})
    return path, {"name": cfg.name, "parameters": model.num_parameters(), "image_size": cfg.image_size,
                  "embed_dim": cfg.embed_dim, "depth": cfg.depth, "heads": cfg.heads, "mlp_dim": cfg.mlp_dim}


def parse_budget(text: str) -> dict[str, Any]:
    """"cem:48x4" -> request planner overrides: 48 samples, 4 iterations, all of them run."""
    method, _, size = text.partition(":")
    samples, iterations = (int(v) for v in size.split("x"))
    return {"method": method, **harness.budget(samples, iterations, min_iterations=iterations)}


def _frames(n: int, seed: int) -> list[np.ndarray]:
    return list(smooth_frames(n, 224, seed))


def episode(url: str, k: int, replans: int, planner: dict[str, Any] | None, start: threading.Barrier | None,
            out: list[dict[str, Any]], lock: threading.Lock) -> None:
    """One session: a plan then `replans` replans; appends one record per request."""
    obs, goal = _frames(replans + 1, 100 + k), _frames(1, 200 + k)[0]
    with PlanningClient(url, timeout=600) as c:
        if start is not None:
            start.wait()
        session = None
        for i in range(replans + 1):
            t0 = time.perf_counter()
            try:
                if session is None:
                    reply = c.plan(obs[i], goal, seed=1000 * k, planner=planner)
                else:
                    reply = c.replan(session, obs[i], executed_steps=1, seed=1000 * k + i)
            except PlanningError as exc:
                with lock:
                    out.append({"session": k, "endpoint": "plan" if session is None else "replan",
                                "error": exc.code, "round_trip_ms": 1000 * (time.perf_counter() - t0)})
                return
            record = {"session": k, "endpoint": "plan" if session is None else "replan",
                      "round_trip_ms": round(1000 * (time.perf_counter() - t0), 1),
                      "server_ms": {key: round(v, 1) for key, v in reply["timing_ms"].items()},
                      "iterations": reply["iterations"], "rollouts": reply["rollouts"], "stop": reply["stop_reason"]}
            session = reply["session_id"]
            with lock:
                out.append(record)


def run_sessions(url: str, sessions: int, replans: int, planner: dict[str, Any] | None) -> dict[str, Any]:
    """`sessions` concurrent episodes; replan round-trip statistics."""
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(sessions)
    threads = [threading.Thread(target=episode, args=(url, k, replans, planner, start, records, lock))
               for k in range(sessions)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replan = [r["round_trip_ms"] for r in records if r["endpoint"] == "replan" and "error" not in r]
    first = [r["round_trip_ms"] for r in records if r["endpoint"] == "plan" and "error" not in r]
    ok = [r for r in records if "error" not in r]
    return {"sessions": sessions, "requests": len(records), "errors": sum("error" in r for r in records),
            "wall_s": round(time.perf_counter() - t0, 1),
            "plan_round_trip_ms": round(statistics.median(first), 1) if first else None,
            "replan_round_trip_ms": harness.percentiles_ms([x / 1000 for x in replan]),
            "replan_max_ms": round(max(replan), 1) if replan else None,
            "server_plan_ms_p50": round(statistics.median(r["server_ms"]["plan"] for r in ok), 1) if ok else None,
            "server_encode_ms_p50": round(statistics.median(r["server_ms"]["encode"] for r in ok), 1) if ok else None,
            "iterations_mean": round(statistics.fmean(r["iterations"] for r in ok), 2) if ok else None,
            "all_replans_under_1s": bool(replan) and max(replan) < 1000 * LIMIT_S and not any(
                "error" in r for r in records),
            "records": records}


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("lewm_serving", __doc__, model=False)
    ap.add_argument("--budgets", nargs="+", help=f"method:SAMPLESxITERATIONS (default {' '.join(BUDGETS)})")
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--replans", type=int, default=4, help="replans per session in the budget and session phases")
    ap.add_argument("--default-replans", type=int, default=2, help="replans with the server's own planner")
    ap.add_argument("--server-threads", type=int, default=1, help="the server's --torch-threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    budgets = args.budgets or (QUICK_BUDGETS if args.quick else BUDGETS)
    max_sessions = min(args.max_sessions, 2) if args.quick else args.max_sessions
    result = harness.Result("lewm_serving", args)
    with tempfile.TemporaryDirectory(prefix="lewm_serving_") as tmp:
        path, described = save_artifact(Path(tmp), args.quick, args.seed)
        with harness.Server(path, threads=args.server_threads) as server:
            server_planner = server.get("/stats")["planner_defaults"]  # what a request without `planner` gets
            default = run_sessions(server.url, 1, args.default_replans, None)
            result.add({"phase": "default", "planner": "server default (CPU preset + artifact recommendation)",
                        **default})
            fitting: list[tuple[int, str]] = []
            for text in budgets:
                row = result.add({"phase": "budget", "budget": text,
                                  **run_sessions(server.url, 1, args.replans, parse_budget(text))})
                if row["all_replans_under_1s"]:
                    samples, iterations = (int(v) for v in text.partition(":")[2].split("x"))
                    fitting.append((samples * iterations, text))
            largest: dict[str, int] = {}
            for _, text in sorted(fitting, reverse=True):  # the largest budget first
                largest[text] = 1
                for n in range(2, max_sessions + 1):
                    row = result.add({"phase": "sessions", "budget": text,
                                      **run_sessions(server.url, n, args.replans, parse_budget(text))})
                    if not row["all_replans_under_1s"]:
                        break
                    largest[text] = n
            best = max(fitting)[1] if fitting else None
    return result.finish({"model": described, "server_threads": args.server_threads, "server_planner": server_planner,
                          "default_replan_ms": default["replan_round_trip_ms"], "default_under_1s":
                          default["all_replans_under_1s"], "budget_under_1s": best,
                          "largest_sessions_under_1s": largest.get(best, 0) if best else 0,
                          "sessions_under_1s_by_budget": largest, "limit_s": LIMIT_S})


if __name__ == "__main__":
    sys.exit(main())
