"""Throughput and latency of the same closed-loop load on one process and on Ray Serve replicas.

    python -m benchmarks.ray_scale [--model PATH] [--clients 8] [--duration 30] [--replicas 1 2] [--json] [--quick]

For each configuration (`python -m server`, then `python -m server.ray
--replicas N` for each N), started on 127.0.0.1 with one torch thread per
replica, K clients run stateless MPC loops (plan, then replans that carry the
`mpc_state` token, resending the goal when a replica asks for it) for
--duration seconds or --max-requests requests, whichever comes first.
Reports requests/s, round-trip p50/p99, the replicas that served and the
409 `mpc_state.goal_unknown` count. On a 2-core machine two CPU replicas
share two cores: the figure says what Ray costs and what it cannot add here,
not what it adds on a GPU per replica.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, find_default_model, smooth_frames
from wm_client import PlanningClient, PlanningError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """`python -m server` (replicas=0) or `python -m server.ray --replicas N` on 127.0.0.1."""

    def __init__(self, model: Path, replicas: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        common = ["--model", str(model), "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
                  "--torch-threads", "1", "--log-level", "warning"]
        if replicas == 0:
            cmd = [sys.executable, "-m", "server", *common]
        else:
            cmd = [sys.executable, "-m", "server.ray", *common, "--replicas", str(replicas),
                   "--num-cpus", str(round(1.0 / replicas, 2))]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        ready: set[str] = set()
        deadline = time.monotonic() + 300
        with PlanningClient(self.url, timeout=10) as c:
            while len(ready) < max(1, replicas):  # every replica has loaded its model (Ray: 404 until deployed)
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the server did not get {max(1, replicas)} replicas ready (ready: {ready})")
                try:
                    health = c.health()
                    if health["status"] == "ok":
                        ready.add(health["replica"])
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                time.sleep(0.2)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--max-requests", type=int, default=3000)
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="Ray replica counts (0: one process)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="2 clients, 4 s, 1 replica (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.max_requests, args.replicas = 2, 4.0, 40, [1]
    model = find_default_model(args.model)
    if model is None:
        p.error("no model: pass --model")
    results: dict[str, Any] = {}
    for replicas in [0, *args.replicas]:
        name = "process" if replicas == 0 else f"ray_{replicas}_replicas"
        deployment = Deployment(model, replicas)
        try:
            with PlanningClient(deployment.url) as c:
                info = c.health()["model"]
            results[name] = load(deployment.url, args.clients, args.duration, args.max_requests,
                                 int(info["image_size"]), int(info["proprio_dim"]))
        finally:
            deployment.stop()
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "load": [round(x, 2) for x in os.getloadavg()]},
           "model": str(model), "clients": args.clients, "duration_s": args.duration, "results": results}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, r in results.items():
            print(f"{name:>20}: {r['throughput_rps']} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"replicas {len(r['served_by'])}, errors {r['errors']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
