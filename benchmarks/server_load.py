"""Load on the planning server: concurrent MPC sessions, latency, overhead, memory.

    python -m benchmarks.server_load [--url URL | --model PATH] [--sessions 16] [--duration 60] [--format raw|png]
                                     [--max-requests N] [--threads 1] [--no-compare] [--out FILE] [--quick]

Without --url it starts the server itself (`python -m server`, 127.0.0.1 on
a free port, CPU; `benchmarks.harness.Server`) with the given model; without
--model, the shipped default, else runs/wall/model.pt, else the default
architecture with random weights (written to a temporary file, and said so).
--url must point at localhost.

1. Overhead: one session, requests one after the other, 224x224 uint8 frames
   as raw msgpack arrays and as PNG, with a one-iteration planner so that the
   plan is small next to what is measured. Per request: the server's
   `timing_ms` (decode = body + validation + image decode + resize; encode =
   the model's image encoder; plan; total) and the client's round trip.
   "Overhead" is round trip - plan - encode: HTTP, (de)serialisation,
   decoding and validation, i.e. everything but model work.
2. Load: N sessions, each its own client and connection, loop plan -> 4
   replans (executed_steps=1) towards a fixed goal, with the server's
   default planner, for --duration seconds or --max-requests requests.
   Reports throughput, p50/p95/p99 round trip, errors by code, the server's
   micro-batch sizes, and the server process's RSS (sampled every second;
   growth = end vs. after the first 10% of the run).
3. Unless --no-compare (or --url), the load phase runs twice, with the
   server's micro-batching on and off.

Rows: one per overhead format (`phase: "overhead"`) and per load phase
(`phase: "load"`); the summary holds the micro-batching throughput gain.
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks import harness
from benchmarks.problems import smooth_frames
from wm_client import PlanningClient, PlanningError

FRAME = 224
CHEAP_PLANNER = harness.budget(8, 1, elites=2, min_iterations=1)
OVERHEAD_REQUESTS = 40  # sequential requests per frame format in the overhead phase


@dataclass
class Sample:
    endpoint: str
    done_at: float  # seconds since the phase started
    round_trip_s: float
    timing: dict[str, float] | None  # the server's timing_ms; None on error
    error: str | None = None


def _stats_rss(url: str) -> int | None:
    """The server's own RSS report (CPU servers), for --url."""
    with PlanningClient(url) as c:
        return c.stats().get("device", {}).get("rss_bytes")


# Frames -------------------------------------------------------------------------
def frames(n: int, fmt: str, seed: int) -> list[dict[str, Any]]:
    """n wire-ready 224x224 RGB frames: raw uint8 arrays or PNG bytes (encoded here, once)."""
    out = []
    for img in smooth_frames(n, FRAME, seed):
        if fmt == "raw":
            out.append({"format": "raw", "data": img.tobytes(), "shape": list(img.shape), "dtype": "uint8"})
        else:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            out.append({"format": "png", "data": buf.getvalue()})
    return out


def _call(fn: Any, endpoint: str, t0: float, *args: Any, **kw: Any) -> tuple[Sample, dict | None]:
    start = time.perf_counter()
    try:
        reply = fn(*args, **kw)
        end = time.perf_counter()
        return Sample(endpoint, end - t0, end - start, reply["timing_ms"]), reply
    except PlanningError as exc:
        end = time.perf_counter()
        return Sample(endpoint, end - t0, end - start, None, exc.code), None
    except Exception as exc:  # noqa: BLE001 - a transport failure is a result to report, not a crash
        end = time.perf_counter()
        return Sample(endpoint, end - t0, end - start, None, type(exc).__name__), None


# Phases -------------------------------------------------------------------------
def overhead(url: str, fmt: str, requests: int, proprio_dim: int) -> dict[str, Any]:
    """One session, sequential replans with a one-iteration planner."""
    pool = frames(8, fmt, seed=1)
    prop = [0.0] * proprio_dim or None
    samples = []
    with PlanningClient(url) as c:
        t0 = time.perf_counter()
        _, reply = _call(c.plan, "plan", t0, pool[0], pool[1], prop, prop, seed=0, planner=CHEAP_PLANNER)
        if reply is None:
            raise RuntimeError("the first plan of the overhead phase failed")
        for i in range(requests):
            s, _ = _call(c.replan, "replan", t0, reply["session_id"], pool[i % len(pool)], prop,
                         executed_steps=1, seed=i)
            samples.append(s)
        health = []
        for _ in range(requests):
            start = time.perf_counter()
            c.health()
            health.append(time.perf_counter() - start)
    ok = [s for s in samples if s.timing is not None]

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    return {
        "format": fmt, "requests": len(samples), "errors": len(samples) - len(ok),
        "frame_bytes": len(pool[0]["data"]),
        "round_trip_ms": med([1000 * s.round_trip_s for s in ok]),
        "server_decode_ms": med([s.timing["decode"] for s in ok]),
        "server_encode_ms": med([s.timing["encode"] for s in ok]),
        "server_plan_ms": med([s.timing["plan"] for s in ok]),
        "round_trip_minus_plan_ms": med([1000 * s.round_trip_s - s.timing["plan"] for s in ok]),
        "overhead_ms": med([1000 * s.round_trip_s - s.timing["plan"] - s.timing["encode"] for s in ok]),
        "server_non_model_ms": med([s.timing["total"] - s.timing["plan"] - s.timing["encode"] for s in ok]),
        "outside_server_ms": med([1000 * s.round_trip_s - s.timing["total"] for s in ok]),
        "health_round_trip_ms": med([1000 * t for t in health]),
    }


def load(url: str, sessions: int, duration: float, max_requests: int, fmt: str, proprio_dim: int,
         rss: Any, replans: int = 4) -> dict[str, Any]:
    """N sessions in plan -> replan loops; bounded by time and by request count."""
    goal_pool, obs_pool = frames(4, fmt, seed=2), frames(16, fmt, seed=3)
    prop = [0.0] * proprio_dim or None
    samples: list[Sample] = []
    lock = threading.Lock()
    stop = threading.Event()
    count = [0]
    t0 = time.perf_counter()

    def take() -> bool:
        with lock:
            if stop.is_set() or count[0] >= max_requests or time.perf_counter() - t0 >= duration:
                return False
            count[0] += 1
            return True

    def session(k: int) -> None:
        with PlanningClient(url, timeout=120) as c:
            seed = 1000 * k
            while take():
                s, reply = _call(c.plan, "plan", t0, obs_pool[k % 16], goal_pool[k % 4], prop, prop, seed=seed)
                with lock:
                    samples.append(s)
                for _ in range(replans):
                    if reply is None or not take():
                        break
                    seed += 1
                    s, reply = _call(c.replan, "replan", t0, reply["session_id"], obs_pool[(k + seed) % 16],
                                     prop, executed_steps=1, seed=seed)
                    with lock:
                        samples.append(s)

    rss_trace: list[tuple[float, int]] = []

    def monitor() -> None:
        while not stop.wait(1.0):
            value = rss()
            if value is not None:
                rss_trace.append((time.perf_counter() - t0, value))

    rss_before = rss()
    threads = [threading.Thread(target=session, args=(k,), name=f"session-{k}") for k in range(sessions)]
    watcher = threading.Thread(target=monitor, name="rss-monitor")
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    stop.set()
    watcher.join()
    rss_after = rss()
    ok = [s for s in samples if s.error is None]
    errors: dict[str, int] = {}
    for s in samples:
        if s.error is not None:
            errors[s.error] = errors.get(s.error, 0) + 1
    ms = np.asarray([1000 * s.round_trip_s for s in ok]) if ok else np.zeros(1)
    settled = [v for t, v in rss_trace if t >= 0.1 * elapsed] or [v for _, v in rss_trace] or [rss_before or 0]
    base = settled[0]
    end = rss_after if rss_after is not None else settled[-1]
    return {
        "format": fmt, "sessions": sessions, "duration_s": round(elapsed, 2), "requests": len(samples),
        "errors": sum(errors.values()), "errors_by_code": errors,
        "throughput_rps": round(len(ok) / elapsed, 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "p99_over_p50": round(float(np.percentile(ms, 99) / np.percentile(ms, 50)), 2),
        "server_plan_p50_ms": round(statistics.median(s.timing["plan"] for s in ok), 1) if ok else None,
        "rss_mb": {"before": _mb(rss_before), "after_warmup": _mb(base), "peak": _mb(max(settled)),
                   "end": _mb(end)},
        "rss_growth": round((end - base) / base, 4) if base else None,
    }


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


# Main ---------------------------------------------------------------------------
def _batching(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Batches, requests per batch and mean iterations between two /stats planner sections."""
    batches = after["batches"] - before["batches"]
    plans = after["plans"] - before["plans"]
    iterations = (after["mean_iterations"] or 0) * after["plans"] - (before["mean_iterations"] or 0) * before["plans"]
    return {"batches": batches, "mean_batch_requests": round(plans / batches, 2) if batches else None,
            "mean_iterations": round(iterations / plans, 2) if plans else None}


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("server_load", __doc__)
    ap.add_argument("--url", help="a running server on localhost (not started or stopped here; instead of --model)")
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load per phase")
    ap.add_argument("--max-requests", type=int, default=20_000, help="bound on requests per load phase")
    ap.add_argument("--format", choices=("raw", "png"), default="raw", help="frame format of the load phase")
    ap.add_argument("--no-compare", action="store_true", help="load with micro-batching on only")
    args = ap.parse_args(argv)
    if args.url and args.model:
        ap.error("--url and --model exclude each other")
    duration, sessions = (1.0, 2) if args.quick else (args.duration, args.sessions)
    n_overhead = 3 if args.quick else OVERHEAD_REQUESTS
    result = harness.Result("server_load", args)
    if args.url:
        url = harness.require_local(args.url)
        with PlanningClient(url) as c:
            health = c.wait_ready(timeout=60)
        pd = int(health["model"]["proprio_dim"])
        for f in ("raw", "png"):
            result.add({"phase": "overhead", **overhead(url, f, n_overhead, pd)})
        result.add({"phase": "load", "micro_batch": "as configured",
                    **load(url, sessions, duration, args.max_requests, args.format, pd, lambda: _stats_rss(url))})
        return result.finish({"model": health["model"]["name"]})
    with tempfile.TemporaryDirectory() as tmp:
        model, label = harness.server_model(args.model, args.quick, Path(tmp))
        for micro in [True] if (args.no_compare or args.quick) else [True, False]:
            options = ["--max-sessions", str(max(256, 4 * sessions)), "--micro-batch" if micro else "--no-micro-batch"]
            with harness.Server(model, threads=args.threads, options=options) as server:
                pd = int(server.get("/health")["model"]["proprio_dim"])
                if not any(r["phase"] == "overhead" for r in result.rows):
                    for f in ("raw", "png"):
                        result.add({"phase": "overhead", **overhead(server.url, f, n_overhead, pd)})
                before = server.get("/stats")["planner"]
                phase = load(server.url, sessions, duration, args.max_requests, args.format, pd, server.rss)
                result.add({"phase": "load", "micro_batch": micro, **phase,
                            **_batching(before, server.get("/stats")["planner"])})
    loads = [r for r in result.rows if r["phase"] == "load"]
    gain = round(loads[0]["throughput_rps"] / loads[1]["throughput_rps"], 2) if len(loads) == 2 else None
    return result.finish({"model": label, "server_torch_threads": args.threads, "micro_batch_throughput_gain": gain,
                          "throughput_rps": loads[0]["throughput_rps"], "p50_ms": loads[0]["p50_ms"],
                          "p99_ms": loads[0]["p99_ms"]})


if __name__ == "__main__":
    sys.exit(main())
