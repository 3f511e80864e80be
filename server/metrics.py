"""What the server has done: ``/stats`` for people, ``/metrics`` for Prometheus.

Prometheus metrics go through ``prometheus_client`` (one registry per app,
so several servers in one process never share counters): counters are
counters, the plan latency is a histogram, and values that live elsewhere
(sessions, the scheduler's queue, device memory) are read at scrape time by a
collector. Label values come from fixed sets only (HTTP methods, route
templates, status codes, the server's own error codes and stop reasons), so
no client can create series: an unknown method is "other", an unmatched path
is "unmatched".

``/stats`` reads the same events from small windows kept here (percentiles
of recent plans), recorded from the event loop thread only.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

# Seconds; spans a tiny CPU model (~10 ms) to a DINO-WM-size GPU plan (~seconds).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_WINDOW = 2048


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else "other"


class Metrics:
    """Counters since start-up; ``prometheus()`` renders them with the scrape-time ``extra`` collector."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=True)
        self._responses = PromCounter("wm_requests", "responses by method, route and status",
                                      ["method", "path", "status"], registry=self.registry)
        self._errors = PromCounter("wm_errors", "error responses by route and error code",
                                   ["path", "code"], registry=self.registry)
        self._plans = PromCounter("wm_plans", "plans by solver and stop reason", ["method", "stop_reason"],
                                  registry=self.registry)
        self._iterations = PromCounter("wm_plan_iterations", "planner iterations run", registry=self.registry)
        self._latency = Histogram("wm_plan_latency_seconds", "server time of successful plans", ["path"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        # For /stats.
        self.requests: Counter[str] = Counter()
        self.errors: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.plan_latency_ms: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=_WINDOW))
        self.plan_count: Counter[str] = Counter()
        self.stop_reasons: Counter[str] = Counter()
        self.iterations_total = 0
        self.method_plans: Counter[str] = Counter()
        self.method_iterations: Counter[str] = Counter()
        self.subgoal_plans: Counter[str] = Counter()  # "used" / "goal": what plans with subgoals on aimed at

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    # -- recording (event loop) ------------------------------------------------

    def record_response(self, method: str, path: str, status: int) -> None:
        self.requests[f"{method} {path}"] += 1
        self._responses.labels(method_label(method), path, str(status)).inc()

    def record_error(self, method: str, path: str, code: str) -> None:
        self.errors[f"{method} {path}"][code] += 1
        self._errors.labels(path, code).inc()

    def record_plan(self, method: str, path: str, total_ms: float, iterations: int, stop_reason: str,
                    solver: str = "cem", subgoal_used: bool | None = None) -> None:
        endpoint = f"{method} {path}"
        if subgoal_used is not None:
            self.subgoal_plans["used" if subgoal_used else "goal"] += 1
        self.method_plans[solver] += 1
        self.method_iterations[solver] += iterations
        self.plan_latency_ms[endpoint].append(total_ms)
        self.plan_count[endpoint] += 1
        self.stop_reasons[stop_reason] += 1
        self.iterations_total += iterations
        self._plans.labels(solver, stop_reason).inc()
        self._iterations.inc(iterations)
        self._latency.labels(path).observe(total_ms / 1000.0)

    # -- /stats ---------------------------------------------------------------

    def errors_by_code(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for codes in self.errors.values():
            total.update(codes)
        return dict(sorted(total.items()))

    def latency_summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for endpoint, window in sorted(self.plan_latency_ms.items()):
            values = np.fromiter(window, dtype=np.float64)
            p50, p95, p99 = ((round(float(v), 3) for v in np.percentile(values, [50, 95, 99]))
                             if values.size else (None, None, None))
            out[endpoint] = {"count": self.plan_count[endpoint], "p50": p50, "p95": p95, "p99": p99}
        return out

    def planner_summary(self) -> dict[str, Any]:
        plans = sum(self.stop_reasons.values())
        early = self.stop_reasons.get("converged", 0)
        return {
            "plans": plans,
            "mean_iterations": round(self.iterations_total / plans, 3) if plans else None,
            "early_stop_rate": round(early / plans, 4) if plans else None,
            "stop_reasons": dict(sorted(self.stop_reasons.items())),
            "by_method": {m: {"plans": n, "mean_iterations": round(self.method_iterations[m] / n, 3)}
                          for m, n in sorted(self.method_plans.items())},
            "subgoals": {"plans": sum(self.subgoal_plans.values()), "aimed_at_subgoal": self.subgoal_plans["used"]},
        }

    # -- /metrics -------------------------------------------------------------

    def prometheus(self) -> bytes:
        """Prometheus text exposition of every registered metric and collector."""
        return generate_latest(self.registry)


class ScrapeCollector(Collector):
    """Values read when Prometheus scrapes: ``read()`` returns the metric families."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return list(self._read())

    def describe(self) -> Iterable[Metric]:
        return []


def gauge(name: str, help_text: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def counter(name: str, help_text: str, values: dict[str, float], label: str) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def info(name: str, help_text: str, values: dict[str, str]) -> InfoMetricFamily:
    family = InfoMetricFamily(name, help_text)
    family.add_metric([], values)
    return family
