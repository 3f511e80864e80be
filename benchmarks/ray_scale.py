"""Throughput and latency of the same closed-loop load on one process and on Ray Serve replicas.

    python -m benchmarks.ray_scale [--model PATH] [--clients 8] [--duration 30] [--replicas 1 2] [--out FILE] [--quick]

For each configuration (`python -m server`, then `python -m server.ray
--replicas N` for each N), started on 127.0.0.1 by `benchmarks.harness.Server` with one torch thread per
replica (--threads), K clients run stateless MPC loops (plan, then replans that carry the
`mpc_state` token, resending the goal when a replica asks for it) for
--duration seconds or --max-requests requests, whichever comes first.
Reports requests/s, round-trip p50/p99, the replicas that served and the
409 `mpc_state.goal_unknown` count. On a 2-core machine two CPU replicas
share two cores: the figure says what Ray costs and what it cannot add here,
not what it adds on a GPU per replica. One row per deployment.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.problems import smooth_frames
from wm_client import PlanningClient, PlanningError


def load(url: str, clients: int, duration: float, max_requests: int, size: int, proprio_dim: int
         ) -> dict[str, Any]:
    frames = smooth_frames(16, size, seed=1)
    proprio = [float(size) / 2] * proprio_dim
    lock = threading.Lock()
    latencies: list[float] = []
    served: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    left = [max_requests]
    until = time.monotonic() + duration

    def take() -> bool:
        with lock:
            if time.monotonic() >= until or left[0] <= 0:
                return False
            left[0] -= 1
            return True

    def client(k: int) -> None:
        with PlanningClient(url, timeout=120) as c:
            token, i = None, 0
            goal = frames[(k + 7) % 16]
            while take():
                obs = frames[(k + i) % 16]
                started = time.perf_counter()
                try:
                    if token is None or i % 10 == 0:
                        reply = c.plan(obs, goal, proprio, proprio, seed=k * 1000 + i)
                    else:
                        reply = c.replan(None, obs, proprio, executed_steps=1, seed=i, mpc_state=token,
                                         goal=goal, goal_proprio=proprio)
                    token = reply["mpc_state"]
                    with lock:
                        latencies.append(time.perf_counter() - started)
                        served[reply["served_by"]] += 1
                except PlanningError as exc:
                    with lock:
                        errors[exc.code] += 1
                    token = None
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 300)
    wall = time.monotonic() - t0
    ms = np.asarray(latencies) * 1000
    with PlanningClient(url) as c:
        goal_unknown = c.stats()["errors_by_code"].get("mpc_state.goal_unknown", 0)
    return {"requests": len(latencies), "throughput_rps": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if ms.size else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if ms.size else None,
            "served_by": dict(served), "errors": dict(errors), "goal_unknown_seen_by_one_replica": goal_unknown}


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("ray_scale", __doc__)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--max-requests", type=int, default=3000)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="Ray replica counts (0: one process)")
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.max_requests, args.replicas = 2, 4.0, 40, [1]
    model = harness.wall_model(args.model)
    result = harness.Result("ray_scale", args)
    for replicas in [0, *args.replicas]:
        name = "process" if replicas == 0 else f"ray_{replicas}_replicas"
        with harness.Server(model, threads=args.threads, replicas=replicas, ready_timeout=300) as server:
            info = server.get("/health")["model"]
            result.add({"deployment": name, "replicas": replicas, **load(
                server.url, args.clients, args.duration, args.max_requests, int(info["image_size"]),
                int(info["proprio_dim"]))})
    return result.finish({"model": str(model), **{r["deployment"]: r["throughput_rps"] for r in result.rows}})


if __name__ == "__main__":
    sys.exit(main())
