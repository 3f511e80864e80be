"""Light clients beside heavy and departing ones; memory after a burst of huge frames.

    python -m benchmarks.fairness [--model PATH] [--light 8] [--duration 30] [--out FILE] [--quick]

Starts the real server (`benchmarks.harness.Server`: `python -m server`,
127.0.0.1, a free port, CPU, its default settings but --threads torch threads) on the shipped default model and runs,
bounded in time and requests, on localhost only:

1. alone: 8 light closed-loop clients (plan, then replans with
   executed_steps=1, the server's default planner, frames of the wall task's
   size) for --duration seconds;
2. contended: the same 8 light clients, plus one heavy client looping plans
   just under the per-request cost limit (24 default plans: 5x the samples,
   4.8x the iterations) and one client that sends the same heavy plan and hangs up
   after 0.3 s, every time (its plan must stop, not run on);
3. burst: 16 concurrent plans whose frames are 4096x4096 PNGs (inside the
   pixel limit); the server's RSS before, at its peak and 2 s after.

Reports the light clients' round-trip p50/p99 in both phases and their ratio
(target: contended p99 within 2x of alone), the queue wait and drops the
server saw, 503 counts, and the RSS figures. Rows: "alone", "contended", "burst".
"""

from __future__ import annotations

import io
import statistics
import sys
import threading
import time
from typing import Any

import httpx
import numpy as np
from PIL import Image

from benchmarks import harness
from benchmarks.problems import smooth_frames
from wm_client import PlanningClient, PlanningError

# 24x the CPU preset's cost (5x the samples, 4.8x the iterations), under the default per-request limit of 25.
HEAVY = harness.budget(500, 72, elites=50, min_iterations=72)
BURST = (16, 4096)  # concurrent plans, side of their PNG frames


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None}
    arr = np.asarray(values) * 1000
    return {"n": len(values), "p50": round(float(np.percentile(arr, 50)), 1),
            "p99": round(float(np.percentile(arr, 99)), 1)}


class Clients:
    """Client threads that stop by themselves at a deadline or a request count."""

    def __init__(self, url: str, duration: float, max_requests: int) -> None:
        self.url, self.until, self.left = url, time.monotonic() + duration, max_requests
        self.lock = threading.Lock()
        self.light: list[float] = []
        self.heavy: list[float] = []
        self.errors: dict[str, int] = {}
        self.threads: list[threading.Thread] = []

    def _take(self) -> bool:
        with self.lock:
            if time.monotonic() >= self.until or self.left <= 0:
                return False
            self.left -= 1
            return True

    def _error(self, code: str) -> None:
        with self.lock:
            self.errors[code] = self.errors.get(code, 0) + 1

    def start(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=max(5.0, self.until - time.monotonic() + 120))

    def light_loop(self, k: int, frames: np.ndarray, proprio: list[float]) -> None:
        with PlanningClient(self.url, timeout=120) as c:
            reply = None
            i = 0
            while self._take():
                obs, goal = frames[(k + i) % len(frames)], frames[(k + 7) % len(frames)]
                started = time.perf_counter()
                try:
                    if reply is None or i % 10 == 0:  # a new episode every 10 steps
                        reply = c.plan(obs, goal, proprio, proprio, seed=k * 1000 + i)
                    else:
                        reply = c.replan(reply["session_id"], obs, proprio, executed_steps=1, seed=i)
                    with self.lock:
                        self.light.append(time.perf_counter() - started)
                except PlanningError as exc:
                    self._error(exc.code)
                    reply = None
                i += 1

    def heavy_loop(self, frames: np.ndarray, proprio: list[float], hang_up_s: float | None) -> None:
        with PlanningClient(self.url, timeout=hang_up_s or 300) as c:
            i = 0
            while self._take():
                started = time.perf_counter()
                try:
                    c.plan(frames[i % len(frames)], frames[(i + 3) % len(frames)], proprio, proprio, seed=i,
                           planner=HEAVY)
                    with self.lock:
                        self.heavy.append(time.perf_counter() - started)
                except PlanningError as exc:
                    self._error(exc.code)
                except httpx.TimeoutException:
                    self._error("client_hung_up" if hang_up_s else "timeout")
                i += 1


def phase(url: str, light: int, duration: float, max_requests: int, frames: np.ndarray, proprio: list[float],
          contended: bool) -> dict[str, Any]:
    with PlanningClient(url) as c:
        before = c.stats()
    clients = Clients(url, duration, max_requests)
    for k in range(light):
        clients.start(clients.light_loop, k, frames, proprio)
    if contended:
        clients.start(clients.heavy_loop, frames, proprio, None)
        clients.start(clients.heavy_loop, frames, proprio, 0.3)
    clients.join()
    with PlanningClient(url) as c:
        after = c.stats()
    queue = after["queue"]
    dropped = {k: v - before["queue"]["dropped"].get(k, 0) for k, v in queue["dropped"].items()}
    return {"light": _percentiles(clients.light), "heavy": _percentiles(clients.heavy),
            "errors": clients.errors, "server_queue_wait_ms": queue["queue_wait_ms"],
            "server_dropped": dropped,
            "server_cancelled_running": queue["cancelled_running"] - before["queue"]["cancelled_running"],
            "server_overloaded": queue["overloaded"] - before["queue"]["overloaded"],
            "throughput_rps": round(len(clients.light) / duration, 2)}


def huge_png(size: int) -> bytes:
    """A size x size PNG of smooth content: small on the wire, large once decoded."""
    small = smooth_frames(1, 64, seed=5)[0]
    img = Image.fromarray(small).resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def burst(server: harness.Server, n: int, size: int, proprio: list[float]) -> dict[str, Any]:
    """n concurrent plans with size x size PNG frames; the server's RSS around it."""
    png = huge_png(size)
    image = {"format": "png", "data": png}
    time.sleep(1.0)
    before = server.rss()
    peak = [before or 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.rss() or 0)
            time.sleep(0.02)

    def one(i: int, out: list) -> None:
        with PlanningClient(server.url, timeout=300) as c:
            try:
                out.append(c.plan(image, image, proprio, proprio, seed=i)["timing_ms"]["decode"])
            except PlanningError as exc:
                out.append(exc.code)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: list[Any] = []
    workers = [threading.Thread(target=one, args=(i, results)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    time.sleep(2.0)
    after = server.rss()
    done.set()
    sampler.join()
    mb = lambda b: None if b is None else round(b / 2**20, 1)  # noqa: E731
    decode = [r for r in results if isinstance(r, float)]
    return {"requests": n, "frame": f"{size}x{size} PNG", "png_bytes": len(png),
            "errors": [r for r in results if isinstance(r, str)],
            "decode_ms_p50": round(statistics.median(decode), 1) if decode else None,
            "rss_before_mb": mb(before), "rss_peak_mb": mb(peak[0]), "rss_after_mb": mb(after)}


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("fairness", __doc__)
    ap.add_argument("--light", type=int, default=8, help="light closed-loop clients")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    ap.add_argument("--max-requests", type=int, default=2000, help="bound per phase")
    args = ap.parse_args(argv)
    if args.quick:
        args.light, args.duration, args.max_requests = 2, 3.0, 60
    burst_requests, burst_side = (2, 1024) if args.quick else BURST
    model = harness.wall_model(args.model)
    result = harness.Result("fairness", args)
    with harness.Server(model, threads=args.threads, options=["--max-sessions", str(max(256, 4 * args.light))]) as server:
        health = server.get("/health")["model"]
        size, pdim = int(health["image_size"]), int(health["proprio_dim"])
        frames = smooth_frames(16, size, seed=1)
        proprio = [float(size) / 2] * pdim
        alone = result.add({"phase": "alone", **phase(server.url, args.light, args.duration, args.max_requests,
                                                      frames, proprio, contended=False)})
        contended = result.add({"phase": "contended", **phase(server.url, args.light, args.duration,
                                                              args.max_requests, frames, proprio, contended=True)})
        memory = result.add({"phase": "burst", **burst(server, burst_requests, burst_side, proprio)})
    ratio = None
    if alone["light"]["p99"] and contended["light"]["p99"]:
        ratio = round(contended["light"]["p99"] / alone["light"]["p99"], 2)
    return result.finish({"model": str(model), "heavy_planner": HEAVY, "light_p99_ratio": ratio, "target_ratio": 2.0,
                          "rss_before_mb": memory["rss_before_mb"], "rss_peak_mb": memory["rss_peak_mb"],
                          "rss_after_mb": memory["rss_after_mb"]})


if __name__ == "__main__":
    sys.exit(main())
