"""The server's intra-op thread count under a competing CPU load.

    python -m benchmarks.studies.threads [--model PATH] [--settings default,1,2] [--load 2] [--rounds 5]
                                         [--concurrent 100] [--out FILE] [--quick]

A study: its finding (one thread per two usable cores; docs/benchmarks.md,
"Threads") is the server's default now (`server/settings.py`); run it to
check the rule on another machine.

Starts one real server per setting (`benchmarks.harness.Server`: `python -m
server --device cpu` on 127.0.0.1, a free port; `default` passes no `--torch-threads`, i.e. torch's
default of one thread per core) and `--load` busy processes of its own, each
a single-threaded numpy matmul loop, for the whole run: the situation of a
shared small box, where the model's OpenMP threads wait for each other at
every barrier while another process holds a core. Then, for every setting:

1. single: one plan request at a time (the server's default planner for the
   model, the same body and seed for every server), `--rounds` rounds, the
   servers' order rotated each round so that a change of the load hits all
   of them alike; median round trip and the server's `timing_ms.plan`.
2. concurrent: `--concurrent` plan requests sent at once (one connection
   each, asyncio + httpx); wall time from the first send to the last answer,
   p50/p95 round trip, errors. One setting after the other; each server is
   stopped after its burst, since a server keeps planning the requests of
   clients that timed out, which would load the next setting's burst.

Every request has a client timeout (`--request-timeout`); a request that
exceeds it is counted as an error, so a collapsing setting bounds the run
instead of stalling it. The busy processes and the servers are stopped by
their own pids at the end. Localhost only.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np

from benchmarks import harness
from benchmarks.harness import Server
from benchmarks.problems import smooth_frames
from wm_client import MSGPACK, PlanningClient, PlanningError

# One core's worth of work per process: BLAS pinned to one thread, so each
# burner is exactly one runnable thread competing with the server.
_BURN = "import numpy as np\na = np.random.rand(384, 384)\nwhile True:\n    a = (a @ a) / 384.0\n"
# --quick: a plan of a few ms, so that even a collapsing thread setting answers in seconds.
QUICK_PLANNER = harness.budget(8, 2, elites=2, min_iterations=1)
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class Burners:
    """`n` busy single-threaded processes (the competing load), stopped by their pids."""

    def __init__(self, n: int) -> None:
        env = {**os.environ, **_ONE_THREAD}
        self.procs = [subprocess.Popen([sys.executable, "-c", _BURN], env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) for _ in range(n)]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def _label(threads: int | None) -> str:
    return "default" if threads is None else str(threads)


def _parse_threads(text: str) -> list[int | None]:
    out: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "default":
            out.append(None)
        elif item.isdigit() and int(item) >= 1:
            out.append(int(item))
        else:
            raise SystemExit(f"--settings item {item!r}: expected 'default' or an integer >= 1")
    return out


def plan_body(image_size: int, proprio_dim: int, seed: int, planner: dict[str, Any] | None = None) -> bytes:
    """One msgpack /plan body, as PlanningClient sends it: raw uint8 frames of image-like
    smooth noise at the model's size, random proprio, a fixed seed (the same plan on every server)."""
    rng = np.random.default_rng(seed)
    obs, goal = smooth_frames(2, image_size, seed)
    proprio = rng.uniform(-1, 1, proprio_dim) if proprio_dim else None
    goal_proprio = rng.uniform(-1, 1, proprio_dim) if proprio_dim else None
    client = PlanningClient("http://127.0.0.1")  # only its wire encoding; no request is sent
    try:
        body: dict[str, Any] = {"obs": client.encode_image(obs), "goal": client.encode_image(goal), "seed": seed}
    finally:
        client.close()
    if proprio is not None:
        body.update(proprio=proprio.tolist(), goal_proprio=goal_proprio.tolist())
    if planner is not None:
        body["planner"] = planner
    return msgpack.packb(body, use_bin_type=True)


def _post(http: httpx.Client, body: bytes) -> tuple[float, dict[str, Any] | None, str | None]:
    t0 = time.perf_counter()
    try:
        r = http.post("/plan", content=body, headers={"Content-Type": MSGPACK, "Accept": MSGPACK})
    except httpx.TimeoutException:
        return time.perf_counter() - t0, None, "client_timeout"
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        return dt, None, f"http_{r.status_code}"
    return dt, msgpack.unpackb(r.content, raw=False), None


def single(servers: list[Server], body: bytes, rounds: int, timeout: float) -> dict[str, dict[str, Any]]:
    """Sequential plans, the servers' order rotated every round."""
    rows: dict[str, dict[str, list]] = {_label(s.threads): {"rt": [], "plan": [], "it": [], "err": []} for s in servers}
    clients = {_label(s.threads): httpx.Client(base_url=s.url, timeout=timeout) for s in servers}
    try:
        for r in range(rounds):
            for s in servers[r % len(servers):] + servers[:r % len(servers)]:
                row = rows[_label(s.threads)]
                dt, reply, err = _post(clients[_label(s.threads)], body)
                row["rt"].append(dt)
                if err:
                    row["err"].append(err)
                else:
                    row["plan"].append(reply["timing_ms"]["plan"] / 1000)
                    row["it"].append(reply["iterations"])
    finally:
        for c in clients.values():
            c.close()
    return {k: {"round_trip_p50_ms": _ms(statistics.median(v["rt"])), "round_trip_ms": [_ms(x) for x in v["rt"]],
                "server_plan_p50_ms": _ms(statistics.median(v["plan"])) if v["plan"] else None,
                "iterations": v["it"], "errors": v["err"]} for k, v in rows.items()}


async def _burst(url: str, body: bytes, n: int, timeout: float) -> tuple[float, list[float], list[str]]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        async def one() -> tuple[float, str | None]:
            t0 = time.perf_counter()
            try:
                r = await http.post("/plan", content=body, headers={"Content-Type": MSGPACK, "Accept": MSGPACK})
            except httpx.TimeoutException:
                return time.perf_counter() - t0, "client_timeout"
            except httpx.TransportError as exc:
                return time.perf_counter() - t0, type(exc).__name__
            return time.perf_counter() - t0, None if r.status_code == 200 else f"http_{r.status_code}"

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    return wall, [dt for dt, err in results if err is None], [err for _, err in results if err]


def concurrent(server: Server, body: bytes, n: int, timeout: float) -> dict[str, Any]:
    wall, ok, errors = asyncio.run(_burst(server.url, body, n, timeout))
    return {"requests": n, "wall_s": round(wall, 3), "ok": len(ok), "errors": errors,
            "p50_ms": _ms(float(np.percentile(ok, 50))) if ok else None,
            "p95_ms": _ms(float(np.percentile(ok, 95))) if ok else None}


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


def run(args: Any, result: harness.Result) -> None:
    settings = _parse_threads(args.settings)
    n_load, rounds, n_conc = (1, 2, 4) if args.quick else (args.load, args.rounds, args.concurrent)
    summary: dict[str, Any] = {"threads": [_label(t) for t in settings], "load_processes": n_load, "rounds": rounds,
                               "concurrent_requests": n_conc,
                               "planner": "the server's default for the model" if not args.quick else QUICK_PLANNER}
    with tempfile.TemporaryDirectory() as tmp:
        model, summary["model"] = harness.server_model(args.model, args.quick, Path(tmp))
        servers: list[Server] = []
        burners = None
        try:
            for t in settings:
                servers.append(Server(model, threads=t, options=["--max-sessions", str(max(256, 4 * n_conc))],
                                      ready_timeout=180.0))
            health = servers[0].get("/health")["model"]
            body = plan_body(int(health["image_size"]), int(health["proprio_dim"]), seed=0,
                             planner=QUICK_PLANNER if args.quick else None)
            for s in servers:  # one untimed plan each, before the load starts: first-call costs
                with httpx.Client(base_url=s.url, timeout=args.request_timeout) as http:
                    _post(http, body)
            burners = Burners(n_load)
            summary["load_pids"] = burners.pids
            time.sleep(1.0)  # let the burners reach steady state
            summary["load_average_with_burners"] = harness.load_average()
            single_rows = single(servers, body, rounds, args.request_timeout)
            for s in servers:
                label = _label(s.threads)
                with PlanningClient(s.url) as c:
                    threads = _server_threads(c)
                conc = concurrent(s, body, n_conc, args.request_timeout)
                # A server whose clients timed out keeps planning their requests (issue 11, item 3):
                # stop it now, so that its leftover work does not load the next setting's phase.
                s.stop()
                result.add({"threads": label, "server_torch_threads": threads, **single_rows[label],
                            "concurrent": conc})
        finally:
            if burners is not None:
                burners.stop()
            for s in servers:
                s.stop()
    result.data["summary"] = summary


def _server_threads(client: PlanningClient) -> int | None:
    """The intra-op thread count the server reports in /stats (what `default` resolved to)."""
    try:
        value = (client.stats().get("device") or {}).get("torch_threads")
    except PlanningError:
        return None
    return None if value is None else int(value)


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("studies.threads", __doc__)
    ap.add_argument("--settings", default="default,1,2", help="comma-separated server thread counts; "
                    "'default' = --torch-threads not passed")
    ap.add_argument("--load", type=int, default=2, help="busy single-threaded processes competing for the cores")
    ap.add_argument("--rounds", type=int, default=5, help="sequential plans per setting")
    ap.add_argument("--concurrent", type=int, default=100, help="plans sent at once per setting")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="client timeout per request, seconds")
    args = ap.parse_args(argv)
    _parse_threads(args.settings)  # refuse a bad setting before starting anything
    result = harness.Result("threads", args)
    run(args, result)
    return result.finish(result.data["summary"])


if __name__ == "__main__":
    sys.exit(main())
